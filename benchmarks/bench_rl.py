"""Table II: precision/recall/F1 without and with REINFORCE finetuning, same split and seed.

For each data set and seed: `logllama train` (10% of the normal sequences), `logllama finetune`
(a seeded 10% of the labelled sequences the model did not see), then `logllama eval --compare`
of both models on the same test sequences (train, validation and RL sequences excluded). Writes
benchmarks/out/rl.md with every command run. Skips cleanly when ../shared/data is absent.

    .venv/bin/python benchmarks/bench_rl.py                      # HDFS + BGL, seeds 0 1 2
    .venv/bin/python benchmarks/bench_rl.py --size paper --datasets hdfs --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("LOGLLAMA_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "out"

DATASETS = {
    "hdfs": {"data": ["hdfs/HDFS_dev.log"], "labels": "hdfs/HDFS_dev_anomaly_label.csv", "extra": [],
             "train": [], "epochs": "epochs"},
    "bgl": {"data": ["bgl/BGL_100k_structured.csv"], "labels": None,
            "extra": ["--window", "time", "--window-seconds", "60"],
            # ~15 training windows: batches of 16 gave one optimizer step per epoch (see the
            # detection section of BENCHMARKS.md, where batch 2 took BGL from F1 0.513 to 0.944)
            "train": ["--batch-size", "2"], "epochs": "bgl_epochs"},
}
PAPER = {"hdfs": (0.879, 0.894), "bgl": (0.957, 0.959), "thunderbird": (0.925, 0.974)}
"""The paper's Table II F1: (without RL, with RL)."""
SIZES = {
    "paper": ["--layers", "18", "--heads", "12", "--hidden", "60"],
    "small": ["--layers", "4", "--heads", "4", "--hidden", "32"],
    "tiny": ["--layers", "2", "--heads", "4", "--hidden", "32"],
}


def rel(path: Path) -> str:
    """A path as written in the commands: relative to the repository root when possible."""
    try:
        return os.path.relpath(path, ROOT)
    except ValueError:
        return str(path)


def run(cmd: list[str], log: list[str], env: dict[str, str]) -> str:
    """Run one logllama command from the repository root; record it; return its stdout."""
    shown = "logllama " + " ".join(shlex.quote(c) for c in cmd)
    log.append(shown)
    print(f"$ {shown}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "logllama_tui", *cmd], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    if done.returncode != 0:
        raise SystemExit(f"command failed ({done.returncode}): {shown}\n{done.stderr[-2000:]}")
    return done.stdout


VARIANTS = {
    "paper": "--anomalous-hit-reward 1 --anomalous-focus all --lr 3e-5",
    "signed": "--anomalous-hit-reward -1 --anomalous-focus all --lr 1e-4",
    "focused": "--anomalous-hit-reward -1 --anomalous-focus worst --lr 3e-5",
    # the same with K = 10% of the keys during RL (detection keeps the checkpoint's K): at the
    # detection K every BGL RL position was already a hit, so the reward had nothing to teach
    "focused-k10": "--anomalous-hit-reward -1 --anomalous-focus worst --lr 3e-5 --k 0.1",
}
"""RL settings compared (besides the defaults shared by both): see docs/rl.md."""


def _complete(ckpt: Path) -> bool:
    """True when `ckpt` holds a finished training run (reused by --reuse)."""
    try:
        return bool(json.loads((ckpt / "logllama.json").read_text(encoding="utf-8")).get("complete", True))
    except (OSError, ValueError):
        return False


def one(name: str, seed: int, args: argparse.Namespace, work: Path, env: dict[str, str],
        log: list[str]) -> dict[str, dict[str, float]]:
    """Train once, finetune once per variant, compare each with the base on the same test set."""
    spec = DATASETS[name]
    data = [rel(DATA / d) for d in spec["data"]]
    labels = ["--labels", rel(DATA / spec["labels"])] if spec["labels"] else []
    base = work / f"{name}-s{seed}"
    if not (args.reuse and _complete(base)):
        run(["train", *data, *labels, *spec["extra"], *spec["train"], "--train-fraction", "0.1", "--seed", str(seed),
             "--epochs", str(getattr(args, spec["epochs"])), "--patience", str(args.patience),
             *SIZES[args.size], "--threads", str(args.threads), "--out", rel(base)], log, env)
    result: dict[str, dict[str, float]] = dict(args.done.get(name, {}).get(seed, {}))
    for variant in args.variants:
        if variant in result:
            continue  # measured by an earlier run (--reuse)
        tuned = work / f"{name}-s{seed}-rl-{variant}"
        run(["finetune", *data, *labels, *spec["extra"], "--model", rel(base), "--seed", str(seed),
             "--episodes", str(args.episodes), *shlex.split(VARIANTS[variant]), *args.rl_args,
             "--out", rel(tuned)], log, env)
        out = run(["eval", "--compare", rel(base), rel(tuned), *data, *labels, *spec["extra"],
                   "--json"], log, env)
        rows = json.loads(out.strip().splitlines()[-1])["models"]
        result["base"], result[variant] = rows[0], rows[1]
    return result


def summary(values: list[float]) -> str:
    """mean +- sample std (min-max)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return (f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} "
            f"({min(values):.3f}–{max(values):.3f})")


def markdown(results: dict[str, dict[int, dict]], args: argparse.Namespace, log: list[str],
             seconds: float) -> str:
    """The rl.md section: per-seed rows, mean and spread, the paper's figures, the commands."""
    lines = ["## Table II: with and without REINFORCE finetuning", "",
             f"Model size `{args.size}` ({' '.join(SIZES[args.size])}), {args.epochs} epochs max "
             f"(BGL {args.bgl_epochs}) "
             f"(patience {args.patience}), RL {args.episodes} episodes, variants "
             + "; ".join(f"{v}: `{VARIANTS[v]} {' '.join(args.rl_args)}`" for v in args.variants)
             + f"; seeds {', '.join(map(str, args.seeds))}; "
             f"CPU, {seconds / 60:.0f} min in all. Same test sequences for both models (train, "
             "validation and RL sequences excluded).", ""]
    for name, per_seed in results.items():
        paper = PAPER[name]
        lines += [f"### {name.upper()} (paper F1 {paper[0]:.3f} → {paper[1]:.3f})", "",
                  "| seed | model | P | R | F1 | ΔF1 | TP | FP | FN | test seqs |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for seed, r in per_seed.items():
            for variant, m in r.items():
                label = "no RL" if variant == "base" else f"RL {variant}"
                lines.append(f"| {seed} | {label} | {m['precision']:.3f} | {m['recall']:.3f} | "
                             f"{m['f1']:.3f} | {m['f1'] - r['base']['f1']:+.3f} | {m['tp']} | "
                             f"{m['fp']} | {m['fn']} | {m['sequences']} |")
        lines += ["", "| model | P mean ± std (min–max) | R | F1 | ΔF1 per seed |", "|---|---|---|---|---|"]
        for variant in ["base", *args.variants]:
            rows = [r[variant] for r in per_seed.values() if variant in r]
            if not rows:
                continue
            deltas = ", ".join(f"{r[variant]['f1'] - r['base']['f1']:+.3f}"
                               for r in per_seed.values() if variant in r)
            lines.append(f"| {'no RL' if variant == 'base' else 'RL ' + variant} | "
                         + " | ".join(summary([m[k] for m in rows]) for k in ("precision", "recall", "f1"))
                         + f" | {deltas if variant != 'base' else ''} |")
        lines += [""]
    lines += ["Paper (Table II, F1 without → with RL): HDFS 0.879 → 0.894, BGL 0.957 → 0.959, "
              "Thunderbird 0.925 → 0.974 (no Thunderbird labelled slice here).", "",
              "Commands (from the repository root; `logllama` = `.venv/bin/logllama`):", "", "```"]
    lines += log + ["```", ""]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run every data set and seed, write benchmarks/out/rl.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["hdfs", "bgl"], choices=sorted(DATASETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--size", default="small", choices=sorted(SIZES))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--bgl-epochs", type=int, default=80,
                    help="BGL has ~15 long training windows: one batch per epoch")
    ap.add_argument("--patience", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rl-args", default="", help="extra finetune options, e.g. '--gamma 0'")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--reuse", action="store_true", help="keep base models already trained in --work")
    ap.add_argument("--work", type=Path, default=OUT / "rl_work")
    ap.add_argument("--out", type=Path, default=OUT / "rl.md")
    args = ap.parse_args()
    args.rl_args = shlex.split(args.rl_args)
    missing = [d for n in args.datasets for d in DATASETS[n]["data"] if not (DATA / d).is_file()]
    if missing:
        print(f"skipped: {DATA} lacks {', '.join(missing)} (see ../shared/data/README.md)")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LOGLLAMA_HOME": str(args.work / "home"), "OMP_NUM_THREADS": str(args.threads)}
    log: list[str] = []
    results: dict[str, dict[int, dict]] = {}
    args.done = {}
    saved = args.out.with_suffix(".json")
    if args.reuse and saved.is_file():  # keep what an earlier run measured; run only what is missing
        old = json.loads(saved.read_text(encoding="utf-8"))
        if "results" not in old:  # the first layout: results only, commands in the markdown
            md = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
            old = {"results": old, "commands": [ln for ln in md.splitlines() if ln.startswith("logllama ")]}
        args.done = {n: {int(s): r for s, r in v.items()} for n, v in old["results"].items()}
        log += old.get("commands", [])
        seen = [v for n in args.done.values() for r in n.values() for v in r if v != "base"]
        args.variants = list(dict.fromkeys(old.get("variants", []) + seen + args.variants))
    t0 = time.perf_counter()
    for name in args.datasets:
        results[name] = {}
        for seed in args.seeds:
            results[name][seed] = one(name, seed, args, args.work, env, log)
            r = results[name][seed]
            print(f"{name} seed {seed}: F1 " + ", ".join(f"{v} {m['f1']:.3f}" for v, m in r.items()),
                  file=sys.stderr, flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            full = {**args.done, **{n: {**args.done.get(n, {}), **v} for n, v in results.items()}}
            args.out.write_text(markdown(full, args, log, time.perf_counter() - t0), encoding="utf-8")
            merged = {n: {**args.done.get(n, {}), **v} for n, v in results.items()}
            saved.write_text(json.dumps({"results": merged, "commands": log, "variants": args.variants},
                                        indent=1), encoding="utf-8")
    print(f"wrote {rel(args.out)}")


if __name__ == "__main__":
    main()
