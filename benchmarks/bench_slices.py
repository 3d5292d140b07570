"""What slicing long sequences costs in detection: the shipped rule against the one before it.

A sequence longer than scoring.SCORE_SLICE keys is ranked in slices that repeat the last eighth of
the slice before (be348b4); before, slices were the model's whole context (512) restarting from its
last half. This scores the same test sequences under both rules (training, validation and RL
sequences excluded, as `eval` does) and compares every key past the first slice, and the verdicts.

Run: .venv/bin/python benchmarks/bench_slices.py [--data ../shared/data] [--model DIR]
Without --model it trains the BGL model of the detection benchmark (bench_detect.py's command, seed
0, ~3 min). Prints a markdown section and writes it to benchmarks/out/slices.md; skips cleanly
without the data.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXE = str(Path(sys.executable).with_name("logllama"))


def train_bgl(data: Path, out: Path) -> list[str]:
    """bench_detect.py's BGL llama command (seed 0); returns it."""
    cmd = [EXE, "train", str(data), "--window", "time", "--window-seconds", "60",
           "--train-fraction", "0.1", "--val-fraction", "0.1", "--seed", "0", "--arch", "llama",
           "--epochs", "20", "--batch-size", "2", "--patience", "5", "--device", "cpu",
           "--threads", "1", "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return cmd


def test_sequences(model: Path, data: Path) -> tuple[Any, list[Any]]:
    """(checkpoint, its labelled test sequences of `data`) as `logllama eval` gathers them."""
    from logllama_tui.checkpoint import load_checkpoint
    from logllama_tui.cli.evaluate import used_sids
    from logllama_tui.cli.scan import checkpoint_format, sequences
    from logllama_tui.config import ReaderConfig, WindowConfig, from_dict

    ckpt = load_checkpoint(model, "cpu")
    window = from_dict(WindowConfig, ckpt.meta["window"]) if isinstance(ckpt.meta.get("window"), dict) \
        else WindowConfig()
    used = used_sids(ckpt.meta)[0]
    stats: dict[str, int] = {"lines": 0}
    seqs = [s for s in sequences([str(data)], checkpoint_format(ckpt.meta) or "auto", ReaderConfig(),
                                 ckpt.parser, window, None, stats)
            if s.sid not in used and s.label is not None]
    return ckpt, seqs


def compare(ckpt: Any, seqs: list[Any]) -> list[str]:
    """Markdown rows: keys past the first slice and verdicts, old rule vs shipped rule."""
    import torch

    from logllama_tui.config import UNK
    from logllama_tui.metrics import Confusion
    from logllama_tui.scoring import SCORE_SLICE, Scorer, resolve_k

    torch.set_num_threads(1)
    n_keys = ckpt.parser.vocab.n_keys
    rules = {"before (slices of 512, restart from 256)": {"slice_keys": 512, "overlap": 256},
             f"shipped (slices of {SCORE_SLICE}, restart from {SCORE_SLICE // 8})": {}}
    ranks = {}
    for name, kw in rules.items():
        scorer = Scorer(ckpt.model, n_keys, n_keys + 1, n_candidates=0, **kw)
        ranks[name] = [([v.rank for v in s.verdicts], s.end.rank) for s in scorer.score(seqs)]
    ks = sorted({1, 3, resolve_k("0.1", n_keys), resolve_k("0.5", n_keys)})  # 10%, 50% of keys
    first = SCORE_SLICE  # key j is ranked at input position j: past the first slice from here
    long = [i for i, s in enumerate(seqs) if len(s.keys) > first]
    rows = [f"Test sequences: {len(seqs):,} ({sum(bool(s.label) for s in seqs)} anomalous); longer "
            f"than {first} keys: {len(long)}; longest {max((len(s.keys) for s in seqs), default=0):,} "
            "keys.", "",
            "| keys past the first slice (seen templates) | rule | keys | ranks changed | "
            + " | ".join(f"rank >= {k}" for k in ks) + " |",
            "|---|---|---|---|" + "---|" * len(ks)]
    names = list(rules)
    for label, what in ((False, "in normal sequences"), (True, "in anomalous sequences")):
        cells = {n: [] for n in names}
        for i in long:
            if bool(seqs[i].label) != label:
                continue
            for j in range(first, len(seqs[i].keys)):
                if seqs[i].keys[j] != UNK:
                    for n in names:
                        cells[n].append(ranks[n][i][0][j])
        changed = sum(a != b for a, b in zip(cells[names[0]], cells[names[1]], strict=True))
        for n in names:
            got = cells[n]
            rows.append(f"| {what} | {n} | {len(got):,} | {changed:,} | "
                        + " | ".join(f"{sum(r >= k for r in got):,}" for k in ks) + " |")
    rows += ["", "| verdicts at K | rule | F1 | tp | fp | fn | windows whose verdict changed |",
             "|---|---|---|---|---|---|---|"]
    for k in ks:
        flags = {n: [max(max(r, default=0), end) >= k for r, end in ranks[n]] for n in names}
        changed = sum(a != b for a, b in zip(flags[names[0]], flags[names[1]], strict=True))
        for n in names:
            c = Confusion()
            for flagged, s in zip(flags[n], seqs, strict=True):
                c.add(flagged, bool(s.label))
            d = c.as_dict()
            rows.append(f"| {k} | {n} | {d['f1']:.3f} | {d['tp']} | {d['fp']} | {d['fn']} | {changed} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--model", type=Path, help="a BGL checkpoint (default: train bench_detect's)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/logllama-bench-slices"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "slices.md")
    args = ap.parse_args()
    data = (args.data / "bgl" / "BGL_100k_structured.csv").resolve()
    if not data.is_file():
        print(f"skipped: {data} is absent", file=sys.stderr)
        return
    model, how = args.model, f"`--model {args.model}`"
    if model is None:
        model = args.work / "bgl_llama"
        how = "`" + " ".join(Path(c).name if c == EXE else c for c in train_bgl(data, model)) + "`"
    ckpt, seqs = test_sequences(model, data)
    text = "\n".join([f"Data: `{data.name}` (60 s windows, inline labels); model: {how}.", "",
                      *compare(ckpt, seqs)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
