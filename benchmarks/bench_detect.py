"""Detection benchmark: the paper's protocol (Table I) for LogLLaMA and the DeepLog baseline.

Each model is trained by the real `logllama train ... --train-fraction 0.1 --seed 0` (subprocess);
the figures come from one pass over the data per model through the functions `logllama eval`
runs (logllama_tui.cli.evaluate: gather, pick_k, metrics), so each figure equals what the printed
`logllama eval ... --json` command prints. Both models of a data set are scored on the same test
sequences (the union of their training/validation sessions is excluded, as `eval --compare` does).

Run: .venv/bin/python benchmarks/bench_detect.py [--data ../shared/data] [--only hdfs,bgl,deeplog]
Prints a markdown section and writes it to benchmarks/out/detect.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER = {"hdfs": {"llama": 0.894, "deeplog": 0.828}, "bgl": {"llama": 0.959, "deeplog": 0.870},
         "thunderbird": {"llama": 0.974, "deeplog": 0.898}}
"""F1 in Table I of Yang & Harris, LogLLaMA (arXiv:2503.14849)."""
ARCH_NAME = {"llama": "LogLLaMA (18 layers, 12 heads, hidden 60)", "deeplog": "DeepLog (2x64 LSTM)"}


def datasets(data: Path, work: Path) -> dict[str, dict[str, Any]]:
    """What each data set is trained and evaluated on (paths absolute: DeepLog sids hold them)."""
    hdfs, bgl, dl = data / "hdfs", data / "bgl", data / "deeplog"
    dl_labels = work / "deeplog_labels.csv"
    return {
        "hdfs": {"train": [hdfs / "HDFS_dev.log"], "eval": [hdfs / "HDFS_dev.log"],
                 "labels": hdfs / "HDFS_dev_anomaly_label.csv",
                 "opts": ["--format", "hdfs", "--window", "session", "--session-timeout", "1e9"],
                 "what": "HDFS_dev.log, block sessions (whole: idle timeout 1e9 s), labels per block"},
        "bgl": {"train": [bgl / "BGL_100k_structured.csv"], "eval": [bgl / "BGL_100k_structured.csv"],
                "labels": None, "opts": ["--window", "time", "--window-seconds", "60"],
                "what": "BGL_100k_structured.csv (event ids given), 60 s windows, inline labels"},
        "deeplog": {"train": [dl / "hdfs_train"], "eval": [dl / "hdfs_train", dl / "hdfs_test_abnormal"],
                    "labels": dl_labels, "opts": ["--format", "deeplog"],
                    "what": "DeepLog's sessions: trained on 10% of hdfs_train; tested on the rest of "
                            "hdfs_train (normal) + hdfs_test_abnormal (all anomalous)",
                    "make_labels": [(dl / "hdfs_train", "Normal"), (dl / "hdfs_test_abnormal", "Anomaly")]},
    }


def write_deeplog_labels(spec: dict[str, Any]) -> None:
    """Session labels for the DeepLog files: one session per line, sid '<path>#<line>'."""
    rows = ["SessionId,Label"]
    for path, label in spec["make_labels"]:
        with open(path, encoding="utf-8") as fh:
            rows += [f"{path}#{n},{label}" for n, line in enumerate(fh, 1) if line.strip()]
    Path(spec["labels"]).write_text("\n".join(rows) + "\n")


def shell(cmd: list[str]) -> str:
    """The command as a user types it."""
    return " ".join(["logllama", *cmd[3:]])


def train(name: str, spec: dict[str, Any], arch: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train one model with the real CLI; return its checkpoint path, command and timings."""
    out = work / f"{name}_{arch}"
    epochs = args.epochs_lstm if arch == "deeplog" else args.epochs
    cmd = [sys.executable, "-m", "logllama_tui", "train", *map(str, spec["train"]), *spec["opts"],
           *(["--labels", str(spec["labels"])] if spec["labels"] else []),
           "--train-fraction", "0.1", "--val-fraction", str(args.val_fraction),
           "--seed", str(args.seed), "--arch", arch,
           "--epochs", str(epochs), "--batch-size", str(args.batch_size), "--patience", "5",
           "--device", args.device, "--threads", str(args.threads), "--out", str(out)]
    if args.smoke:
        cmd += ["--layers", "1", "--hidden", "16"] + (["--heads", "2"] if arch == "llama" else [])
    print(f"$ {shell(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "LOGLLAMA_HOME": str(work / "home")})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"training failed ({done.returncode}):\n{done.stderr[-3000:]}")
    meta = json.loads((out / "logllama.json").read_text())
    m = meta.get("metrics", {})
    return {"path": out, "cmd": shell(cmd), "wall": wall, "train_s": m.get("seconds"),
            "keys_per_s": m.get("keys_per_s"), "epochs": m.get("epochs"),
            "best_epoch": m.get("best_epoch"), "params": meta.get("params"), "n_keys": meta["n_keys"],
            "train_seqs": len(meta["split"]["train_sids"]), "val_seqs": len(meta["split"]["val_sids"])}


def evaluate(spec: dict[str, Any], models: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    """One pass per model: figures at K=0.5 and K=auto, with and without the end key."""
    import click
    import torch

    from logllama_tui.checkpoint import load_checkpoint
    from logllama_tui.cli.evaluate import gather, metrics, pick_k, used_sids
    from logllama_tui.cli.scan import checkpoint_format, load_labels
    from logllama_tui.config import ReaderConfig, WindowConfig, from_dict

    torch.set_num_threads(max(1, args.threads))
    ckpts = {arch: load_checkpoint(m["path"], "cpu") for arch, m in models.items()}
    exclude: set[str] = set()
    for c in ckpts.values():
        exclude |= used_sids(c.meta)[0]
    labels = load_labels(str(spec["labels"])) if spec["labels"] else None
    paths = [str(p) for p in spec["eval"]]
    for arch, ckpt in ckpts.items():
        window = from_dict(WindowConfig, ckpt.meta["window"])
        t0 = time.perf_counter()
        data = gather(ckpt, paths, checkpoint_format(ckpt.meta) or "auto", ReaderConfig(), window,
                      labels, exclude, used_sids(ckpt.meta)[1], True, 128, torch.device("cpu"))
        seconds = time.perf_counter() - t0
        m = models[arch]
        m["eval_s"], m["eval_lines"] = seconds, data["lines"]
        m["unlabelled"] = data["unlabelled"]
        m["results"] = {}
        for spec_k in ("0.5", "auto"):
            for ignore_end in (False, True):
                k, how = pick_k(spec_k, ckpt, data["val"], args.target_fpr, ignore_end)
                m["results"][(spec_k, ignore_end)] = {"k": k, "how": how,
                                                      **metrics(data, k, ignore_end)}
        base = ["eval", *paths, "--model", str(m["path"]), *(["--labels", str(spec["labels"])]
                                                             if spec["labels"] else [])]
        m["eval_cmd"] = ("logllama " + " ".join(base) + " --k {0.5|auto} --json [--ignore-end]"
                         f" [--target-fpr {args.target_fpr:g}]")
        click.echo(f"  {arch}: {json.dumps(m['results'][('0.5', False)])} ({seconds:.0f} s)",
                   err=True)


def reuse_speedup(spec: dict[str, Any], model: dict[str, Any], n: int = 1500) -> dict[str, Any]:
    """Scoring keys/s on HDFS sessions with the per-tuple cache and with every sequence run."""
    from logllama_tui.checkpoint import load_checkpoint
    from logllama_tui.config import WindowConfig, from_dict
    from logllama_tui.pipeline import collect_sequences
    from logllama_tui.scoring import Scorer, _Ranked

    ckpt = load_checkpoint(model["path"], "cpu")
    seqs = collect_sequences([str(spec["eval"][0])], "hdfs", ckpt.parser,
                             from_dict(WindowConfig, ckpt.meta["window"]))[:n]
    keys = sum(len(s) + 1 for s in seqs)
    k = ckpt.meta["detect"]["k_resolved"]
    n_keys = ckpt.parser.vocab.n_keys
    Scorer(ckpt.model, n_keys, k).score(seqs[:64])  # warm-up: first calls pay one-off costs
    cached = Scorer(ckpt.model, n_keys, k)
    t0 = time.perf_counter()
    cached._rank([tuple(s.keys) for s in seqs])  # forward + ranks, each distinct tuple once
    t_cached = time.perf_counter() - t0
    plain = Scorer(ckpt.model, n_keys, k)
    owners = [_Ranked([0] * (len(s) + 1), {}) for s in seqs]
    pieces = [p for i, s in enumerate(seqs) for p in plain._pieces(i, tuple(s.keys))]
    t0 = time.perf_counter()
    plain._run(pieces, owners)  # the same batched forward + ranks, every sequence, no reuse
    t_plain = time.perf_counter() - t0
    distinct = len({tuple(s.keys) for s in seqs})
    return {"sequences": len(seqs), "distinct": distinct, "keys": keys,
            "cached_kps": keys / t_cached, "plain_kps": keys / t_plain, "speedup": t_plain / t_cached}


def fmt_row(name: str, arch: str, m: dict[str, Any], key: tuple[str, bool]) -> str:
    r = m["results"][key]
    paper = PAPER.get(name, {}).get(arch)
    return (f"| {name} | {ARCH_NAME[arch]} | {r['k']} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"**{r['f1']:.3f}** | {paper if paper is not None else '-'} | {r['tp']} | {r['fp']} | "
            f"{r['fn']} | {r['tn']} |")


def report(results: dict[str, dict[str, Any]], specs: dict[str, dict[str, Any]],
           speed: dict[str, Any] | None, args: argparse.Namespace) -> str:
    """The markdown section."""
    out = ["## Detection (issue 3): the paper's protocol, LogLLaMA beside DeepLog", "",
           f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs), "
           f"torch CPU, seed {args.seed}. Training: the seeded 10% of the normal sequences "
           f"(`--train-fraction 0.1`; a share {args.val_fraction:g} of that draw is the validation "
           "slice for early stopping and `--k auto`); testing: every other sequence, anomalies included. Both "
           "models of a data set are tested on the same sequences (the union of their "
           "training/validation sessions is excluded). Paper: Table I of Yang & Harris.", ""]
    for name, models in results.items():
        spec = specs[name]
        out += [f"### {name}: {spec['what']}", ""]
        for m in models.values():
            out += [f"- `{m['cmd']}`", ""]
        any_m = next(iter(models.values()))
        out += [f"- figures: `{any_m['eval_cmd']}` (both models: `logllama eval --compare ...`)",
                ""]
        for title, key in (("K = 50% of the keys (the paper's)", ("0.5", False)),
                           (f"K = auto ({args.target_fpr:g} FPR on the validation slice)", ("auto", False))):
            out += [f"{title}:", "",
                    "| data | model | K | precision | recall | F1 | paper F1 | TP | FP | FN | TN |",
                    "|---|---|---|---|---|---|---|---|---|---|---|"]
            out += [fmt_row(name, arch, m, key) for arch, m in models.items()]
            out += [""]
        out += ["What the end key buys (F1 with the EOS position scored / not scored, `--ignore-end`):", "",
                "| model | K=0.5 with end | K=0.5 without | K=auto with end | K=auto without |",
                "|---|---|---|---|---|"]
        for arch, m in models.items():
            r = m["results"]
            out.append(f"| {ARCH_NAME[arch]} | {r[('0.5', False)]['f1']:.3f} | "
                       f"{r[('0.5', True)]['f1']:.3f} | {r[('auto', False)]['f1']:.3f} "
                       f"(K={r[('auto', False)]['k']}) | {r[('auto', True)]['f1']:.3f} "
                       f"(K={r[('auto', True)]['k']}) |")
        out += ["", "| model | params | keys | train seqs (+val) | epochs (best) | train time | "
                "train keys/s | eval pass (lines) | test seqs | excluded |", "|---|---|---|---|---|---|---|---|---|---|"]
        for arch, m in models.items():
            r = m["results"][("0.5", False)]
            out.append(f"| {ARCH_NAME[arch]} | {m['params']:,} | {m['n_keys']} | {m['train_seqs']} "
                       f"(+{m['val_seqs']}) | {m['epochs']} ({m['best_epoch']}) | "
                       f"{m['train_s']:.0f} s ({m['wall']:.0f} s wall) | {m['keys_per_s']:,.0f} | "
                       f"{m['eval_s']:.0f} s ({m['eval_lines']:,}) | {r['sequences']:,} | "
                       f"{r['excluded_training']:,} |")
        out.append("")
    if speed:
        out += ["### Reusing work: identical sequences scored once", "",
                f"First {speed['sequences']:,} HDFS sessions ({speed['distinct']:,} distinct key "
                f"tuples, {speed['keys']:,} scored positions), paper-size LogLLaMA, batched: "
                f"{speed['cached_kps']:,.0f} keys/s with the per-tuple cache vs "
                f"{speed['plain_kps']:,.0f} keys/s running every sequence "
                f"(**{speed['speedup']:.1f}x**).", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--work", type=Path, default=Path("/tmp/logllama-bench-detect"))
    ap.add_argument("--only", default="hdfs,bgl,deeplog")
    ap.add_argument("--archs", default="llama,deeplog")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--epochs-lstm", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="share of the 10%% draw held back for validation and --k auto")
    ap.add_argument("--target-fpr", type=float, default=0.01, help="for --k auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny models: checks the plumbing only")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "detect.md")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent", file=sys.stderr)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    specs = datasets(args.data.resolve(), args.work)
    results: dict[str, dict[str, Any]] = {}
    speed = None
    for name in args.only.split(","):
        spec = specs[name]
        if not all(Path(p).exists() for p in spec["eval"]):
            print(f"skipped {name}: data absent", file=sys.stderr)
            continue
        if "make_labels" in spec:
            write_deeplog_labels(spec)
        models = {arch: train(name, spec, arch, args.work, args) for arch in args.archs.split(",")}
        evaluate(spec, models, args)
        results[name] = models
        if name == "hdfs" and "llama" in models:
            speed = reuse_speedup(spec, models["llama"])
        text = report(results, specs, speed, args)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")  # rewritten after each data set: partial results survive
    print(report(results, specs, speed, args))


if __name__ == "__main__":
    main()
