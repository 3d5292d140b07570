"""Rebuild the shipped default model, models/hdfs, with our own `logllama train`.

It trains on normal HDFS block sessions from ../shared/data/hdfs/HDFS_dev.log that are NOT in
sample_logs/hdfs_sample.log (a seeded 10% of them, the paper's fraction), so that scanning the
sample with the shipped model is an honest, out-of-sample check:

    .venv/bin/python models/build_default.py [--data ../shared/data] [--epochs 30]
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BLOCK = re.compile(rb"blk_-?\d+")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "hdfs")
    args = ap.parse_args()

    log = args.data / "hdfs" / "HDFS_dev.log"
    labels = args.data / "hdfs" / "HDFS_dev_anomaly_label.csv"
    if not log.is_file():
        sys.exit(f"{log} not found: pass --data DIR (the shared data directory)")
    with (REPO / "sample_logs" / "hdfs_sample_labels.csv").open() as f:
        in_sample = {row["BlockId"] for row in csv.DictReader(f)}
    with labels.open() as f:
        normal = sorted(row["BlockId"] for row in csv.DictReader(f)
                        if row["Label"] == "Normal" and row["BlockId"] not in in_sample)
    chosen = set(random.Random(args.seed).sample(normal, round(len(normal) * args.fraction)))
    with tempfile.TemporaryDirectory(prefix="logllama-default-") as tmp:
        train_log = Path(tmp) / "hdfs_train.log"
        kept = 0
        with log.open("rb") as src, train_log.open("wb") as dst:
            for line in src:
                ids = {m.decode() for m in BLOCK.findall(line)}
                if ids and ids <= chosen:
                    dst.write(line)
                    kept += 1
        print(f"training on {len(chosen)} normal blocks ({kept} lines) not in the sample", file=sys.stderr)
        cmd = [str(REPO / ".venv" / "bin" / "logllama"), "train", str(train_log), "--format", "hdfs",
               "--window", "session", "--epochs", str(args.epochs),
               "--seed", str(args.seed), "--device", "cpu", "--out", str(args.out)]
        if args.out.exists():
            shutil.rmtree(args.out)
        print(" ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
