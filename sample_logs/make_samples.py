"""Regenerate sample_logs/ from ../shared/data, deterministically: `python sample_logs/make_samples.py`."""

from __future__ import annotations

import argparse
import csv
import random
import re
import shutil
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data"
BLOCK = re.compile(r"blk_-?\d+")
SEED = 0
HDFS_NORMAL, HDFS_ANOMALOUS = 400, 40
BGL_SLICE = 4000
"""Rows in the BGL structured slice."""


def hdfs(data: Path, out: Path) -> str:
    """Whole block sessions: every line of 400 normal + 40 anomalous blocks, in the original order."""
    with open(data / "hdfs" / "HDFS_dev_anomaly_label.csv", newline="") as f:
        labels = {row["BlockId"]: row["Label"] for row in csv.DictReader(f)}
    rng = random.Random(SEED)
    normal = sorted(b for b, lab in labels.items() if lab == "Normal")
    anomalous = sorted(b for b, lab in labels.items() if lab == "Anomaly")
    chosen = set(rng.sample(normal, HDFS_NORMAL)) | set(rng.sample(anomalous, HDFS_ANOMALOUS))
    seen: list[str] = []
    n = 0
    with open(data / "hdfs" / "HDFS_dev.log", "rb") as src, open(out / "hdfs_sample.log", "wb") as dst:
        for raw in src:
            blocks = BLOCK.findall(raw.decode("utf-8", "replace"))
            if any(b in chosen for b in blocks):
                # HDFS_dev.log has no line naming two blocks, so each chosen session comes whole
                assert all(b in chosen for b in blocks), "a line names a block outside the sample"
                dst.write(raw)
                n += 1
                seen.extend(b for b in blocks if b not in seen)
    with open(out / "hdfs_sample_labels.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["BlockId", "Label"])
        for b in seen:
            w.writerow([b, labels[b]])
    counts = Counter(labels[b] for b in seen)
    return f"hdfs_sample.log: {n} lines, {len(seen)} blocks {dict(counts)}"


def bgl_structured(data: Path, out: Path) -> str:
    """The BGL_SLICE-row window of BGL_100k_structured.csv with the most alert categories (fewest alerts on ties)."""
    with open(data / "bgl" / "BGL_100k_structured.csv", newline="") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    best: tuple[int, int, int] | None = None
    for start in range(0, len(body) - BGL_SLICE + 1, 500):
        window = [r[0] for r in body[start : start + BGL_SLICE] if r[0] != "-"]
        if not window:
            continue
        score = (len(set(window)), -len(window), -start)
        best = score if best is None or score > best else best
    assert best is not None
    start = -best[2]
    part = body[start : start + BGL_SLICE]
    with open(out / "bgl_sample_structured.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(part)
    ids = {r[2] for r in part}
    with open(data / "bgl" / "BGL_templates_for_100k.csv", newline="") as f:
        trows = list(csv.reader(f))
    with open(out / "bgl_sample_templates.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(trows[0])
        w.writerows(r for r in trows[1:] if r[0] in ids)
    alerts = Counter(r[0] for r in part if r[0] != "-")
    return (f"bgl_sample_structured.csv: rows {start + 1}-{start + BGL_SLICE} of BGL_100k_structured.csv, "
            f"{BGL_SLICE} rows, {len(ids)} event ids, alerts {dict(alerts)}")


def head(src: Path, dst: Path, n: int) -> str:
    """The first `n` lines of `src`, byte for byte."""
    with open(src, "rb") as f, open(dst, "wb") as g:
        for i, raw in enumerate(f):
            if i >= n:
                break
            g.write(raw)
    return f"{dst.name}: first {min(n, i + 1)} lines of {src.relative_to(src.parents[1])}"


def main() -> None:
    """Write every sample file into sample_logs/ (or --out)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    data, out = args.data, args.out
    if not (data / "hdfs" / "HDFS_dev.log").is_file():
        raise SystemExit(f"no data at {data}; pass --data PATH_TO/shared/data")
    out.mkdir(parents=True, exist_ok=True)
    print(hdfs(data, out))
    print(bgl_structured(data, out))
    print(head(data / "bgl" / "BGL_first10k.log", out / "bgl_sample.log", 300))
    print(head(data / "thunderbird" / "Thunderbird_2k.log", out / "thunderbird_sample.log", 300))
    print(head(data / "deeplog" / "hdfs_train", out / "deeplog_sample", 300))
    print(head(data / "deeplog" / "hdfs_test_abnormal", out / "deeplog_sample_abnormal", 50))
    shutil.copyfile(data / "loghub" / "Linux" / "Linux_2k.log", out / "linux_sample.log")
    print("linux_sample.log: loghub/Linux/Linux_2k.log, whole")


if __name__ == "__main__":
    main()
