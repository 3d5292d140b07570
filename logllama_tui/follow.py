"""Follow live files: every line exactly once, across rotation and truncation (no textual here).

One reader thread owns every file handle. It wakes on a watchdog event or every `poll_interval`
(the polling fallback, always on: it is all there is where inotify is unavailable), reads what
each file gained, and hands complete lines to a callback. Per followed path it:

* starts at the end of a file that exists at start-up (`from_start` replays it) and at the start
  of a file that appears later (a late file, a new file in a followed directory or glob);
* on rename + create, delete + recreate or a symlink pointed elsewhere (the path's inode
  changes), reads the old handle to its end first, then switches to the new file at offset 0;
* on truncation (size below our position, or the bytes just before our position changed, as in
  copytruncate with new lines already written) restarts at offset 0;
* buffers a partial last line until its newline arrives (it is flushed as a line when the file
  is rotated away or at stdin's end).

`Line.lineno` is the 1-based count of lines read from that path since following started; it keeps
counting across rotations, so (source, lineno) is unique within one run. With `from_start` and
before any rotation it equals the line number in the file.
"""

from __future__ import annotations

import glob
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from .config import ReaderConfig, TailConfig
from .follow_lines import LineSplitter
from .records import Line

STDIN = "-"
READ_CHUNK = 1 << 20
SIGNATURE = 64
"""Bytes before our position remembered per file to notice a truncate-then-rewrite."""
_TAIL = TailConfig()
_READER = ReaderConfig()
RESCAN_INTERVAL = 1.0
"""Seconds between re-expanding directories and globs (sooner when watchdog reports a change)."""

LinesCallback = Callable[[list[Line]], None]
NoticeCallback = Callable[[str, str], None]
"""(severity "information" | "warning" | "error", message)."""


@dataclass
class _Tail:
    """One followed path: its open handle, identity and position."""

    path: str
    splitter: LineSplitter
    fh: IO[bytes] | None = None
    ident: tuple[int, int] | None = None
    pos: int = 0
    sig: bytes = b""
    waiting_said: bool = False
    error_said: str = ""
    extra: dict[str, object] = field(default_factory=dict)


class Follower:
    """Follows paths (files, directories, globs, "-") and calls `on_lines` with each new batch."""

    def __init__(self, paths: Sequence[str], on_lines: LinesCallback,
                 config: TailConfig = _TAIL, reader: ReaderConfig = _READER,
                 on_notice: NoticeCallback | None = None, on_eof: Callable[[], None] | None = None,
                 use_watchdog: bool = True, stdin: IO[bytes] | None = None) -> None:
        self.specs = list(paths)
        self.on_lines = on_lines
        self.config = config
        self.reader = reader
        self.on_notice = on_notice or (lambda level, msg: None)
        self.on_eof = on_eof
        self.use_watchdog = use_watchdog
        self.stdin = stdin
        self.tails: dict[str, _Tail] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._observer: object | None = None
        self._watched: set[tuple[str, str]] = set()
        self._binary_skipped: set[str] = set()
        self._empty_said: set[str] = set()
        self._last_scan = 0.0
        self._stdin_open = False
        self._stopped = False
        self.only_stdin = bool(self.specs) and all(p == STDIN for p in self.specs)
        self.eof = threading.Event()
        """Set when stdin (the only input) has ended."""

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Open what exists (at its end unless from_start) and start the reader thread(s)."""
        if STDIN in self.specs:
            self._stdin_open = True
            t = threading.Thread(target=self._read_stdin, name="follow-stdin", daemon=True)
            self._threads.append(t)
        self._scan(initial=True)
        if self.use_watchdog:
            self._start_observer()
        t = threading.Thread(target=self._run, name="follow", daemon=True)
        self._threads.append(t)
        for t in self._threads:
            t.start()

    def stop(self, final_pass: bool = False) -> None:
        """Stop following; with `final_pass`, first deliver what the files hold now."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._wake.set()
        obs = self._observer
        if obs is not None:
            try:
                obs.stop()  # type: ignore[attr-defined]
            except Exception:  # noqa: BLE001 - shutting down: nothing to report to
                pass
        reader_done = True
        for t in self._threads:
            if t is not threading.current_thread() and t.name != "follow-stdin":
                t.join(timeout=5)
                reader_done = reader_done and not t.is_alive()
        if final_pass and reader_done:
            for tail in list(self.tails.values()):
                if tail.fh is not None:
                    self._drain(tail)
        for tail in self.tails.values():
            if tail.fh is not None:
                tail.fh.close()
                tail.fh = None

    def poll_now(self) -> None:
        """Ask the reader thread for an immediate pass (tests, watchdog events)."""
        self._wake.set()

    # -- the reader thread --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._pass()
            except Exception as exc:  # noqa: BLE001 - a follower must never die on input
                self.on_notice("error", f"following stopped a pass: {exc}")

    def _pass(self) -> None:
        import time

        now = time.monotonic()
        if now - self._last_scan >= RESCAN_INTERVAL:
            self._scan(initial=False)
            self._last_scan = now
        for tail in list(self.tails.values()):
            self._poll(tail)

    def _scan(self, initial: bool) -> None:
        """Expand the specs; start following every path not followed yet."""
        for spec in self.specs:
            if spec == STDIN:
                continue
            paths = self._expand(spec, initial)
            if not paths and spec not in self._empty_said:
                self._empty_said.add(spec)
                self.on_notice("warning", f"nothing to follow in {spec} yet: waiting for files")
            for path in paths:
                if path not in self.tails:
                    tail = _Tail(path, LineSplitter(path, self.reader))
                    self.tails[path] = tail
                    self._open(tail, at_end=initial and not self.config.from_start)
                    if self.use_watchdog:
                        self._watch(os.path.dirname(os.path.abspath(path)))

    def _expand(self, spec: str, initial: bool) -> list[str]:
        if os.path.isdir(spec):
            if self.use_watchdog:
                self._watch(os.path.abspath(spec), recursive=True)
            found = []
            for root, dirs, files in os.walk(spec):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
            return [p for p in found if p in self.tails or self._usable(p)]
        if any(c in spec for c in "*?["):
            if self.use_watchdog:
                base = _glob_base(spec)
                if os.path.isdir(base):
                    self._watch(os.path.abspath(base), recursive="**" in spec)
            return sorted(p for p in glob.glob(spec, recursive=True)
                          if os.path.isfile(p) and (p in self.tails or self._usable(p)))
        return [spec]  # a named file is followed even before it exists

    def _usable(self, path: str) -> bool:
        """False (with one notice) for binary files found in a directory or glob."""
        if path in self._binary_skipped:
            return False
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError:
            return True  # _open reports it
        if b"\x00" in head and head[:2] != b"\x1f\x8b":
            self.on_notice("warning", f"{path} looks binary: not following it")
            self._binary_skipped.add(path)
            return False
        return True

    def _open(self, tail: _Tail, at_end: bool) -> bool:
        """Open tail.path (at its end or start); a notice when it is missing or unreadable."""
        try:
            fh: IO[bytes] = open(tail.path, "rb", buffering=0)  # noqa: SIM115 - kept open
        except FileNotFoundError:
            if not tail.waiting_said:
                self.on_notice("warning", f"{tail.path} does not exist yet: waiting for it")
                tail.waiting_said = True
            return False
        except PermissionError:
            if tail.error_said != "perm":
                self.on_notice("error", f"cannot read {tail.path}: permission denied; "
                               "waiting until it becomes readable")
                tail.error_said = "perm"
            return False
        except OSError as exc:
            if tail.error_said != str(exc):
                self.on_notice("error", f"cannot read {tail.path}: {exc}")
                tail.error_said = str(exc)
            return False
        st = os.fstat(fh.fileno())
        tail.fh, tail.ident = fh, (st.st_dev, st.st_ino)
        if tail.waiting_said or tail.error_said:
            self.on_notice("information", f"following {tail.path}")
        tail.waiting_said, tail.error_said = False, ""
        if at_end and _is_regular(st.st_mode):
            tail.pos = st.st_size
            fh.seek(tail.pos)
            tail.sig = _read_at(fh, max(0, tail.pos - SIGNATURE), min(tail.pos, SIGNATURE))
        else:
            tail.pos, tail.sig = 0, b""
            head = fh.read(4096) if _is_regular(st.st_mode) else b""
            fh.seek(0)
            if b"\x00" in head and head[:2] != b"\x1f\x8b":
                self.on_notice("warning", f"{tail.path} looks binary: NUL bytes are dropped")
        return True

    def _poll(self, tail: _Tail) -> None:
        """Read what tail gained; handle truncation, rotation, deletion and late files."""
        if tail.fh is None:
            if self._open(tail, at_end=False):
                self._drain(tail)
            return
        fst = os.fstat(tail.fh.fileno())
        if _is_regular(fst.st_mode):
            if fst.st_size < tail.pos or not self._same_signature(tail, fst.st_size):
                self._emit(tail.splitter.flush())
                self.on_notice("information", f"{tail.path} was truncated: reading it from the start")
                tail.fh.seek(0)
                tail.pos, tail.sig = 0, b""
        self._drain(tail)
        try:
            st = os.stat(tail.path)
        except FileNotFoundError:
            return  # renamed or deleted: keep the old handle until a new file appears
        except OSError:
            return
        if (st.st_dev, st.st_ino) != tail.ident:
            self._drain(tail)  # the old file to its end before switching
            self._emit(tail.splitter.flush())
            tail.fh.close()
            tail.fh = None
            if self._open(tail, at_end=False):
                self.on_notice("information", f"{tail.path} was rotated: following the new file")
                self._drain(tail)

    def _same_signature(self, tail: _Tail, size: int) -> bool:
        """True when the bytes before our position are those we read (no truncate + rewrite)."""
        if not tail.sig:
            return True  # nothing read yet: nothing to compare (same size is no proof: check it)
        assert tail.fh is not None
        now = _read_at(tail.fh, tail.pos - len(tail.sig), len(tail.sig))
        tail.fh.seek(tail.pos)
        return now == tail.sig

    def _drain(self, tail: _Tail) -> None:
        """Read tail's handle to its current end, emitting complete lines."""
        fh = tail.fh
        if fh is None:
            return
        while True:
            try:
                data = fh.read(READ_CHUNK)
            except OSError as exc:
                self.on_notice("error", f"cannot read {tail.path}: {exc}")
                return
            if not data:
                return
            tail.pos += len(data)
            tail.sig = (tail.sig + data)[-SIGNATURE:]
            self._emit(tail.splitter.feed(data))

    def _emit(self, lines: list[Line]) -> None:
        if lines:
            self.on_lines(lines)

    def _read_stdin(self) -> None:
        """Read stdin (or the given stream) until its end."""
        stream = self.stdin if self.stdin is not None else sys.stdin.buffer
        splitter = LineSplitter(STDIN, self.reader)
        read = getattr(stream, "read1", stream.read)
        try:
            while not self._stop.is_set():
                data = read(READ_CHUNK)
                if not data:
                    break
                self._emit(splitter.feed(data))
            self._emit(splitter.flush())
        except (OSError, ValueError) as exc:
            self.on_notice("error", f"cannot read stdin: {exc}")
        self._stdin_open = False
        if self.only_stdin:
            self.eof.set()
            if self.on_eof is not None:
                self.on_eof()

    # -- watchdog -----------------------------------------------------------------------------
    def _start_observer(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            self.on_notice("warning", "watchdog is not installed: polling only")
            return
        wake = self._wake

        class _Handler(FileSystemEventHandler):  # type: ignore[misc]
            def on_any_event(self, event: object) -> None:
                if getattr(event, "event_type", "") not in ("opened", "closed_no_write"):
                    wake.set()

        self._handler = _Handler()
        try:
            observer = Observer()
            observer.daemon = True
            observer.start()
        except Exception as exc:  # noqa: BLE001 - e.g. inotify instance limit reached
            self.on_notice("warning", f"file events unavailable ({exc}): polling every "
                           f"{self.config.poll_interval:g} s")
            return
        self._observer = observer
        for d in list(self._watched):
            self._schedule(d[0], d[1] == "r")

    def _watch(self, directory: str, recursive: bool = False) -> None:
        key = (directory, "r" if recursive else "")
        if key in self._watched or (directory, "r") in self._watched:
            return
        self._watched.add(key)
        if self._observer is not None:
            self._schedule(directory, recursive)

    def _schedule(self, directory: str, recursive: bool) -> None:
        if not os.path.isdir(directory):
            return
        try:
            self._observer.schedule(self._handler, directory, recursive=recursive)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - watch limit: polling still covers it
            self.on_notice("warning", f"cannot watch {directory} ({exc}): polling it")


def _glob_base(pattern: str) -> str:
    """The directory part of a glob before its first wildcard."""
    parts = pattern.split(os.sep)
    base: list[str] = []
    for part in parts:
        if any(c in part for c in "*?["):
            break
        base.append(part)
    return os.sep.join(base) or "."


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _read_at(fh: IO[bytes], offset: int, n: int) -> bytes:
    """n bytes at offset (the handle's position is left wherever it lands)."""
    if n <= 0 or offset < 0:
        return b""
    return os.pread(fh.fileno(), n, offset)


__all__ = ["Follower", "LineSplitter", "STDIN"]  # LineSplitter re-exported from follow_lines
