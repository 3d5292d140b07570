"""Loading the model for `tail` and checking the lines fit it (imports torch: off the UI thread)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .config import WindowConfig
from .live import SCORER_CACHE, Engine, LiveScorer, Notice
from .records import Line


@dataclass
class EngineSpec:
    """What `open_engine` needs: the CLI's choices (None / "auto" = the checkpoint's)."""

    model: str | None = None
    fmt: str = "auto"
    device: str = "auto"
    k: str | None = None
    window_overrides: dict[str, Any] = field(default_factory=dict)
    """WindowConfig fields the user set explicitly; the rest come from the checkpoint."""
    paths: list[str] = field(default_factory=list)
    """For finding the shipped model when no --model is given."""
    threads: int = 1
    """torch threads for scoring on CPU: one, the UI and the parser use the other core."""


def open_engine(spec: EngineSpec, notice: Notice) -> Engine:
    """Load the checkpoint and build the live scorer (imports torch: call it off the UI thread)."""
    import dataclasses

    import torch

    from .config import DetectConfig, from_dict
    from .errors import BadInput
    from .formats import get_format
    from .scoring import Scorer, default_model_for, pick_device, resolve_k

    dev = pick_device(spec.device)
    if dev.type == "cpu":
        torch.set_num_threads(max(1, spec.threads))
    model = spec.model
    if model is None:
        guess = spec.fmt if spec.fmt != "auto" else _sniff_first(spec.paths)
        found = default_model_for(guess)
        if found is None:
            raise BadInput(f"no --model given and no shipped model for format {guess}: train one "
                           "with `logllama train FILE... --out NAME` and pass --model NAME")
        model = str(found)
    path, net, parser, meta, lean = _load(model, dev)
    trained = next((meta[k] for k in ("log_format", "format") if isinstance(meta.get(k), str)), None)
    fmt_name = spec.fmt
    if fmt_name == "auto":
        fmt_name = trained or "raw"
    elif trained and fmt_name != trained:
        notice("warning", f"model {path.name} was trained on format {trained}, the lines are "
               f"read as {fmt_name}: expect unseen templates")
    window = WindowConfig()
    if isinstance(meta.get("window"), dict):
        try:
            window = from_dict(WindowConfig, meta["window"])
        except (TypeError, ValueError):
            notice("warning", "the checkpoint's window settings are unreadable: using defaults")
    window = dataclasses.replace(window, **spec.window_overrides)
    n_keys = parser.vocab.n_keys
    det = meta.get("detect") if isinstance(meta.get("detect"), dict) else {}
    resolved = det.get("k_resolved")
    if spec.k is not None and spec.k.strip().lower() != "auto":
        k = resolve_k(spec.k, n_keys)
    elif isinstance(resolved, int) and not isinstance(resolved, bool) and 1 <= resolved <= n_keys + 1:
        k = resolved
    else:
        stored = str(det.get("k", DetectConfig().k))
        k = resolve_k(DetectConfig().k if stored == "auto" else stored, n_keys)
    import inspect

    params = inspect.signature(Scorer).parameters
    cache = {name: value for name, value in (("cache_keys", 50 * SCORER_CACHE),
                                             ("cache_size", SCORER_CACHE)) if name in params}
    scorer = Scorer(net, n_keys, k, dev, DetectConfig().batch_size, DetectConfig().candidates,
                    context=lean.max_positions if lean is not None else None, **cache)
    fmt = get_format(fmt_name)
    live = LiveScorer(parser, scorer, window, fmt.default_window, net=lean)
    info = {"trained_format": trained, "format": fmt_name, "k": k, "n_keys": n_keys,
            "path": str(path), "arch": meta.get("arch", "?")}
    return Engine(fmt, live, path.name, str(dev), info)


def _load(model: str, dev: Any) -> tuple[Any, Any, Any, dict[str, Any], Any]:
    """(path, model for Scorer, parser, meta, LeanLlama or None) of a checkpoint.

    On CPU a llama loads as the lean forward (lean.py) that StreamScorer runs anyway: no
    `import transformers`, seconds sooner to "model ready". Anything else: load_checkpoint.
    """
    from .checkpoint import load_checkpoint, load_parser, read_meta, resolve_model

    if dev.type == "cpu":
        from .lean import LeanLlama, load_lean
        from .prefix import LeanAsHF

        path = resolve_model(model)
        try:
            net, meta = load_lean(path)
        except ValueError:  # a llama the lean forward does not reproduce
            net = None
        if isinstance(net, LeanLlama):
            meta = read_meta(path)
            return path, LeanAsHF(net), load_parser(path, meta), meta, net
    ckpt = load_checkpoint(model, str(dev))
    return ckpt.path, ckpt.model, ckpt.parser, ckpt.meta, None


def _sniff_first(paths: list[str]) -> str:
    """The format of the first existing file's first lines ("raw" when there is none)."""
    import glob
    import os

    from .formats import sniff_format

    for p in paths:
        files = sorted(glob.glob(p)) if any(c in p for c in "*?[") else [p]
        for f in files:
            if os.path.isfile(f):
                try:
                    with open(f, encoding="utf-8", errors="replace") as fh:
                        head = [ln.rstrip("\n") for _, ln in zip(range(20), fh, strict=False)]
                except OSError:
                    continue
                if head:
                    return sniff_format(head, f)
    return "raw"


def check_format(engine: Engine, lines: list[Line], notice: Notice) -> None:
    """Say so when the lines do not look like the format the model was trained on."""
    from .formats import sniff_format

    trained = engine.info.get("trained_format")
    if not trained or trained in ("raw", "structured", "deeplog"):
        return
    head = [ln.text for ln in lines[:20] if ln.text.strip()]
    if not head:
        return
    try:
        seen = sniff_format(head, lines[0].source)
    except Exception:  # noqa: BLE001 - a guess only
        return
    if seen != trained and seen != "raw" and re.sub(r"\W", "", seen) != re.sub(r"\W", "", trained):
        notice("warning", f"{lines[0].source} looks like {seen} but model {engine.model_name} was "
               f"trained on {trained}: expect unseen templates (train on these logs with "
               "`logllama train`)")


__all__ = ["EngineSpec", "check_format", "open_engine"]
