"""`logllama tail --learn`: learn a file and its rotations, then follow it with that model."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from logllama_tui.readers import rotated_siblings


def test_rotated_siblings_oldest_first_and_nothing_else(tmp_path: Path) -> None:
    for name in ["app.log", "app.log.1", "app.log.2.gz", "app.log.10.gz", "app.logx", "other.log.1"]:
        (tmp_path / name).write_text("x\n")
    got = [Path(p).name for p in rotated_siblings(str(tmp_path / "app.log"))]
    assert got == ["app.log.10.gz", "app.log.2.gz", "app.log.1", "app.log"]


def _lines(n: int, start: int = 0) -> list[str]:
    out = []
    for i in range(start, start + n):
        out.append(f"Jun 14 15:16:{i % 60:02d} host sshd[{100 + i}]: Accepted password for user{i % 3} from 10.0.0.{i % 9} port 22")
        out.append(f"Jun 14 15:16:{i % 60:02d} host sshd[{100 + i}]: session opened for user user{i % 3}")
    return out


def test_tail_learn_trains_on_the_file_and_its_rotations_then_follows(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    (tmp_path / "auth.log.1").write_text("\n".join(_lines(40)) + "\n")
    with gzip.open(tmp_path / "auth.log.2.gz", "wt") as fh:
        fh.write("\n".join(_lines(40, 40)) + "\n")
    log.write_text("\n".join(_lines(20, 80)) + "\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "LOGLLAMA_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "logllama_tui", "tail", "--learn", str(log), "--learn-epochs", "1",
         "--window", "count", "--window-size", "10", "--plain", "--json", "--all",
         "--poll-interval", "0.05", "--device", "cpu"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        deadline = time.monotonic() + 240
        probe = _lines(200, 1000)
        while not got:  # the follower starts at the end once the model is trained and loaded
            assert time.monotonic() < deadline and proc.poll() is None, "tail --learn printed nothing"
            with log.open("a") as fh:
                fh.write(probe.pop(0) + "\n")
            time.sleep(0.3)
        new = _lines(5, 500) + ["Jun 14 15:17:00 host kernel: Out of memory: Kill process 4242 (java)"]
        with log.open("a") as fh:
            fh.write("\n".join(new) + "\n")
        while not any(new[-1] in s for s in got):
            assert time.monotonic() < deadline and proc.poll() is None, "the new lines never came"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        err = proc.stderr.read() if proc.stderr is not None else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Learning 3 file(s) into model 'auth'" in err
    meta = json.loads((tmp_path / "home" / "models" / "auth" / "logllama.json").read_text())
    assert len(meta["data_files"]) == 3
    records = [json.loads(s) for s in got if s.strip()]
    assert [r["text"] for r in records][-len(new):] == new
    assert records[-1]["anomaly"] is True and records[-1]["kind"] == "unseen"
