"""follow.py: every line exactly once, in order, across rotation, truncation and late files."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from logllama_tui.config import ReaderConfig, TailConfig
from logllama_tui.follow import Follower, LineSplitter
from logllama_tui.records import Line

FAST = TailConfig(poll_interval=0.02)


class Collector:
    """Thread-safe sink for the follower's callbacks."""

    def __init__(self) -> None:
        self.lines: list[Line] = []
        self.notices: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def on_lines(self, lines: list[Line]) -> None:
        with self.lock:
            self.lines.extend(lines)

    def on_notice(self, level: str, msg: str) -> None:
        with self.lock:
            self.notices.append((level, msg))

    def texts(self) -> list[str]:
        with self.lock:
            return [ln.text for ln in self.lines]

    def wait_for(self, n: int, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.texts()) >= n:
                break
            time.sleep(0.01)
        time.sleep(0.1)  # anything extra (a repeat) would show up now
        return self.texts()


def numbers(n0: int, n1: int) -> list[str]:
    return [f"line {i:05d}" for i in range(n0, n1)]


def start(paths: list[str], col: Collector, config: TailConfig = FAST, **kw: object) -> Follower:
    f = Follower(paths, col.on_lines, config, on_notice=col.on_notice, **kw)  # type: ignore[arg-type]
    f.start()
    return f


def write_lines(fh, n0: int, n1: int, pause: float = 0.0005) -> None:  # noqa: ANN001
    for i in range(n0, n1):
        fh.write(f"line {i:05d}\n")
        fh.flush()
        if pause:
            time.sleep(pause)


def caught_up(col: Collector, n: int) -> None:
    """Wait until the follower has read n lines (copytruncate loses what it has not read)."""
    deadline = time.monotonic() + 5
    while len(col.texts()) < n and time.monotonic() < deadline:
        time.sleep(0.005)


# -- the splitter ---------------------------------------------------------------------------------
def test_splitter_partial_crlf_nul_invalid_and_long_lines() -> None:
    s = LineSplitter("f", ReaderConfig(max_line_bytes=256))
    assert s.feed(b"ab") == []
    out = s.feed(b"c\r\nd\x00e\n\xff\xfeok\n" + b"x" * 300 + b"tail\nnext\n")
    assert [ln.text for ln in out] == ["abc", "de", "\ufffd\ufffdok", "x" * 256, "next"]
    assert [ln.lineno for ln in out] == [1, 2, 3, 4, 5]
    assert out[3].truncated and not out[4].truncated
    assert s.feed(b"half") == [] and [ln.text for ln in s.flush()] == ["half"]


# -- rotation kinds with a writer thread ------------------------------------------------------------
def _rotating_writer(path: Path, kind: str, col: Collector, rounds: int = 3, per: int = 80) -> None:
    fh = open(path, "a")  # noqa: SIM115
    n = 0
    for r in range(rounds):
        write_lines(fh, n, n + per)
        n += per
        if kind == "rename":
            os.rename(path, f"{path}.{r + 1}")
            write_lines(fh, n, n + 5)  # the writer has not reopened yet: lands in the old file
            n += 5
            fh.close()
            fh = open(path, "a")  # noqa: SIM115
        elif kind == "delete":
            os.unlink(path)
            write_lines(fh, n, n + 5)  # still goes to the unlinked file
            n += 5
            fh.close()
            fh = open(path, "a")  # noqa: SIM115
        elif kind == "copytruncate":
            caught_up(col, n)  # logrotate's own race: lines between copy and truncate are lost
            shutil.copyfile(path, f"{path}.{r + 1}")
            os.truncate(path, 0)
        elif kind == "truncate":
            caught_up(col, n)
            os.truncate(path, 0)
    write_lines(fh, n, n + per)
    fh.close()


@pytest.mark.parametrize("kind", ["rename", "delete", "copytruncate", "truncate"])
@pytest.mark.parametrize("watchdog", [True, False])
def test_every_line_once_across_rotation(tmp_path: Path, kind: str, watchdog: bool) -> None:
    path = tmp_path / "app.log"
    path.write_text("old 1\nold 2\n")
    col = Collector()
    f = start([str(path)], col, use_watchdog=watchdog)
    try:
        _rotating_writer(path, kind, col)
        expected = 3 * 80 + 80 + (15 if kind in ("rename", "delete") else 0)
        got = col.wait_for(expected)
    finally:
        f.stop()
    assert got == numbers(0, expected)  # the old content is skipped: we start at the end
    with col.lock:
        linenos = [ln.lineno for ln in col.lines]
    assert linenos == list(range(1, expected + 1))  # counted per path across rotations


def test_truncate_then_rewrite_past_old_position_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("")
    col = Collector()
    f = start([str(path)], col, TailConfig(poll_interval=30), use_watchdog=False)
    try:
        with open(path, "a") as fh:
            write_lines(fh, 0, 10, pause=0)
        f.poll_now()
        assert col.wait_for(10) == numbers(0, 10)
        os.truncate(path, 0)
        with open(path, "a") as fh:  # more bytes than before: size alone cannot tell
            write_lines(fh, 10, 40, pause=0)
        f.poll_now()
        got = col.wait_for(40)
    finally:
        f.stop()
    assert got == numbers(0, 40)
    assert any("truncated" in m for _, m in col.notices)


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "p.log"
    path.write_text("")
    col = Collector()
    f = start([str(path)], col, TailConfig(poll_interval=30), use_watchdog=False)
    try:
        with open(path, "a") as fh:
            fh.write("first\nsec")
        f.poll_now()
        assert col.wait_for(1) == ["first"]
        with open(path, "a") as fh:
            fh.write("ond\n")
        f.poll_now()
        assert col.wait_for(2) == ["first", "second"]
    finally:
        f.stop()


def test_from_start_replays_and_late_file_is_announced(tmp_path: Path) -> None:
    old, late = tmp_path / "old.log", tmp_path / "late.log"
    old.write_text("a\nb\n")
    col = Collector()
    f = start([str(old), str(late)], col, TailConfig(poll_interval=0.02, from_start=True))
    try:
        assert col.wait_for(2) == ["a", "b"]
        late.write_text("c\n")
        assert col.wait_for(3) == ["a", "b", "c"]
    finally:
        f.stop()
    assert any("does not exist yet" in m for _, m in col.notices)
    assert any("following" in m and "late.log" in m for _, m in col.notices)


def test_directory_picks_up_new_files_and_skips_binary(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("before\n")
    col = Collector()
    f = start([str(tmp_path)], col)
    try:
        with open(tmp_path / "a.log", "a") as fh:
            fh.write("after\n")
        assert col.wait_for(1) == ["after"]
        (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02" * 100)
        (tmp_path / "b.log").write_text("new file\n")
        got = col.wait_for(2)
    finally:
        f.stop()
    assert got == ["after", "new file"]
    assert any("binary" in m for _, m in col.notices)


def test_permission_denied_is_a_notice_and_recovers(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    import builtins

    from logllama_tui import follow

    path = tmp_path / "secret.log"
    path.write_text("")
    denied = {"on": True}
    real_open = builtins.open

    def fake_open(p, *a, **kw):  # noqa: ANN001, ANN002, ANN003 - chmod 0 does not stop root
        if denied["on"] and str(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *a, **kw)

    monkeypatch.setattr(follow, "open", fake_open, raising=False)
    col = Collector()
    f = start([str(path)], col)
    try:
        time.sleep(0.1)
        assert any("permission denied" in m for _, m in col.notices)
        with open(path, "a") as fh:
            fh.write("readable now\n")
        denied["on"] = False
        assert col.wait_for(1) == ["readable now"]
    finally:
        f.stop()


def test_stdin_stream_ends_with_eof(tmp_path: Path) -> None:
    r, w = os.pipe()
    col = Collector()
    ended = threading.Event()
    with open(r, "rb", buffering=0) as stream:
        f = start(["-"], col, stdin=stream, on_eof=ended.set)
        os.write(w, b"one\ntwo\nthree-no-newline")
        os.close(w)
        assert ended.wait(5)
        f.stop()
    assert col.texts() == ["one", "two", "three-no-newline"]


def test_symlink_pointed_at_a_new_file_and_a_file_that_vanishes(tmp_path: Path) -> None:
    a, b, link = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "current.log"
    a.write_text("")
    link.symlink_to(a)
    col = Collector()
    f = start([str(link)], col)
    try:
        with open(a, "a") as fh:
            write_lines(fh, 0, 10)
        b.write_text("")
        tmp_link = tmp_path / "tmp.link"
        tmp_link.symlink_to(b)
        with open(a, "a") as fh:
            write_lines(fh, 10, 15)  # still the old target: read before switching
        os.replace(tmp_link, link)
        with open(b, "a") as fh:
            write_lines(fh, 15, 30)
        assert col.wait_for(30) == numbers(0, 30)
        os.unlink(link)  # vanishes: no error, and its return is followed from the start
        time.sleep(0.1)
        link.symlink_to(a)
        with open(a, "a") as fh:
            write_lines(fh, 30, 31)
        got = col.wait_for(31 + 15)
    finally:
        f.stop()
    assert got[:30] == numbers(0, 30)
    assert got[30:] == numbers(0, 15) + numbers(30, 31)  # a.log again, read from its start


def test_glob_with_no_match_yet_waits_and_says_so(tmp_path: Path) -> None:
    col = Collector()
    f = start([str(tmp_path / "*.log")], col)
    try:
        time.sleep(0.1)
        assert any("nothing to follow" in m for _, m in col.notices)
        (tmp_path / "x.log").write_text("first\n")
        assert col.wait_for(1) == ["first"]
    finally:
        f.stop()
