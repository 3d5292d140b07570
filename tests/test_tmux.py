"""Smoke test: the real `logllama tail` in tmux; append lines, read the screen with capture-pane."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tail_model import cached_checkpoint, session

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


SOCKET = f"logllama-test-{uuid.uuid4().hex[:8]}"
"""A private tmux server: other tmux users on this machine are never touched."""


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True,
                          check=False).stdout


def screen_until(name: str, want: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = tmux("capture-pane", "-p", "-t", name)
        if want in text:
            return text
        time.sleep(0.2)
    raise AssertionError(f"{want!r} never appeared on screen:\n{text}")


def test_tail_in_tmux(tmp_path: Path) -> None:
    ckpt = cached_checkpoint()
    log = tmp_path / "live.log"
    log.write_text("")
    name = f"logllama-test-{uuid.uuid4().hex[:8]}"
    exe = Path(sys.executable).with_name("logllama")
    # COLUMNS/LINES (set under pytest) would override the pane's size in Textual: drop them
    cmd = f"env -u COLUMNS -u LINES {exe} tail {log} --model {ckpt} --poll-interval 0.05; sleep 5"
    env_home = f"LOGLLAMA_HOME={tmp_path / 'home'}"
    tmux("new-session", "-d", "-s", name, "-x", "130", "-y", "36", "-e", env_home, cmd)
    try:
        t0 = time.monotonic()
        screen_until(name, "lines 0", 10)  # the first screen, before the model has loaded
        first_screen = time.monotonic() - t0
        screen_until(name, f"{ckpt.name} on cpu", 60)
        with open(log, "a") as fh:
            fh.write("\n".join(session("blk_77", (0, 1, "unseen", 3))) + "\n")
        text = screen_until(name, "lines 4", 15)
        assert "UNSEEN" in text and "Exception in receiveBlock for block blk_77" in text, text
        assert "r3" in text  # the line after the unseen one was a rank miss
        assert "Next" in text and "Quit" in text  # the footer shows the keys
        assert "PacketResponder <NUM> for block <BLK> terminating" in text  # expected instead
        tmux("send-keys", "-t", name, "q")
        deadline = time.monotonic() + 10
        while "lines 4" in tmux("capture-pane", "-p", "-t", name) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "lines 4" not in tmux("capture-pane", "-p", "-t", name)  # q quit the app
        assert first_screen < 10
    finally:
        tmux("kill-server")
