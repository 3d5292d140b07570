"""Out of the box: the shipped model, the sample logs, `scan` with no --model, and `demo`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logllama_tui", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=timeout)


def test_shipped_model_is_small_and_safe() -> None:
    files = {p.name: p.stat().st_size for p in (REPO / "models" / "hdfs").iterdir()}
    assert set(files) == {"config.json", "model.safetensors", "parser.json", "logllama.json"}
    assert sum(files.values()) < 5 * 1024 * 1024


def test_scan_of_the_sample_with_no_model_finds_the_labelled_anomalies() -> None:
    out = run("scan", "sample_logs/hdfs_sample.log", "--labels", "sample_logs/hdfs_sample_labels.csv")
    assert out.returncode == 0, out.stderr
    assert "models/hdfs" in out.stderr  # it says which model it uses
    m = re.search(r"precision ([\d.]+), recall ([\d.]+), F1 ([\d.]+) \(TP (\d+), FP (\d+), FN (\d+), TN (\d+)\)",
                  out.stdout)
    assert m, out.stdout
    precision, recall = float(m[1]), float(m[2])
    tp, fp, fn, tn = (int(m[i]) for i in range(4, 8))
    assert tp + fn == 40 and fp + tn == 400  # the sample's 40 anomalous and 400 normal blocks
    assert recall >= 0.9 and precision >= 0.8, out.stdout


def test_demo_plain_replays_and_flags_real_anomalies() -> None:
    out = run("demo", "--plain", "--limit", "1200", "--rate", "5000", timeout=240)
    assert out.returncode == 0, out.stderr
    assert "Replaying" in out.stderr and "models/hdfs" in out.stderr
    flagged = [line for line in out.stdout.splitlines() if line.startswith("/")]
    assert any("[unseen template]" in line and "writeBlock" in line for line in flagged), out.stdout
    assert not list(Path("/tmp").glob("logllama-demo-*/hdfs_sample.log"))  # cleaned up
