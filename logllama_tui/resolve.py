"""What a command runs with, resolved without torch: the shipped model for a format, K, and where
a scoring slice of a long sequence starts (tail's verdict cache needs it without torch).

Kept apart from scoring.py (which imports torch) so that the parsing process of a two-core `scan`
never loads torch: finding the model and reading K cost milliseconds, importing torch seconds.
"""

from __future__ import annotations

import math
from pathlib import Path

from logllama_tui.errors import BadInput


def resolve_k(spec: str | int | float, n_keys: int) -> int:
    """K as a count of candidates: a count (9) or a fraction (0.5) of the n_keys + 1 candidates."""
    n_cand = n_keys + 1  # real keys + EOS
    value: int | float
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "auto":
            raise BadInput("--k auto needs validation data: use the checkpoint's calibrated K or "
                           "retrain with --k auto")
        try:
            value = float(text) if any(c in text for c in ".e") else int(text)
        except ValueError:
            raise BadInput(f"--k {spec!r} is not a number: give a count such as 9, a fraction "
                           "such as 0.5, or auto") from None
    elif isinstance(spec, bool) or not isinstance(spec, (int, float)):
        raise BadInput(f"--k {spec!r} is not a number: give a count or a fraction")
    else:
        value = spec
    if isinstance(value, float):
        if math.isnan(value) or value <= 0:
            raise BadInput(f"--k {spec} is out of range: use a fraction in (0, 1] or a count "
                           f"from 1 to {n_cand}")
        if value <= 1.0:
            return max(1, min(n_cand, round(value * n_cand)))
        if not value.is_integer():
            raise BadInput(f"--k {spec} is neither a fraction in (0, 1] nor a whole count")
        value = int(value)
    if not 1 <= value <= n_cand:
        raise BadInput(f"--k {spec} is out of range: this model has {n_keys} keys, so use a count "
                       f"from 1 to {n_cand} or a fraction in (0, 1]")
    return int(value)


def slice_start(p: int, span: int | None, keep: int) -> int:
    """Input index where the slice that scores input position p begins (0 within the first):
    slices of `span` inputs, each later one repeating the last `keep` of the one before
    (scoring.slicing picks them)."""
    if span is None or p < span:
        return 0
    return ((p - keep) // (span - keep)) * (span - keep)


def default_model_for(format_name: str, root: Path | None = None) -> Path | None:
    """The shipped checkpoint for a format under <repo>/models, or None when there is none."""
    import json

    base = root if root is not None else Path(__file__).resolve().parent.parent / "models"
    if not base.is_dir():
        return None
    direct = base / format_name
    if direct.is_dir():
        return direct
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        for meta_name in ("meta.json", "logllama.json", "checkpoint.json"):
            meta_path = sub / meta_name
            if not meta_path.is_file():
                continue
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and meta.get("format") == format_name:
                return sub
    return None


__all__ = ["default_model_for", "resolve_k", "slice_start"]
