"""A numbered-line writer and a `logllama tail --plain --json --all` reader for the tail tests.

Every line the writers emit starts with `<tag> <7-digit number> `, so the reader can check that
each number of each tag arrives exactly once and in order, whatever happened to the file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rel_helpers import cli_env

MARK = re.compile(r"^([A-Za-z_]+) (\d{7}) ")
DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search"]
"""As root, run tail without the capabilities that ignore file modes (so chmod 000 bites)."""


def can_drop_dac() -> bool:
    """True when we are root and setpriv can take DAC override away."""
    return os.geteuid() == 0 and shutil.which("setpriv") is not None


class Writer:
    """Appends numbered lines for one tag to whatever file is at `path` now."""

    def __init__(self, tag: str, path: Path) -> None:
        self.tag, self.path = tag, path
        self.n = 0
        self.expected: list[int] = []

    def text(self, n: int) -> str:
        extra = f" blk_{n // 8}" if n % 5 == 0 else ""
        return f"{self.tag} {n:07d} INFO worker: request handled in {n % 97} ms{extra}"

    def take(self) -> int:
        self.n += 1
        self.expected.append(self.n)
        return self.n

    def lines(self, count: int, ending: bytes = b"\n") -> bytes:
        return b"".join(self.text(self.take()).encode() + ending for _ in range(count))

    def write(self, data: bytes, path: Path | None = None) -> None:
        with open(path or self.path, "ab") as fh:
            fh.write(data)
            fh.flush()

    def emit(self, count: int, path: Path | None = None) -> None:
        self.write(self.lines(count), path)


class TailRun:
    """One `logllama tail --plain --json --all --from-start` process and what it printed."""

    def __init__(self, paths: list[Path], model: Path, cwd: Path, drop_dac: bool,
                 poll: float = 0.05) -> None:
        cmd = [sys.executable, "-m", "logllama_tui", "tail", *map(str, paths), "--model", str(model),
               "--plain", "--json", "--all", "--from-start", "--poll-interval", str(poll)]
        if drop_dac:
            cmd = [*DROP_DAC, *cmd]
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=cli_env(cwd / "home"), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.rows: dict[str, list[tuple[int, dict[str, object]]]] = {}
        self.bad: list[str] = []
        self.cond = threading.Condition()
        self.err = b""
        self._out = threading.Thread(target=self._read, daemon=True)
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._out.start()
        self._err.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                row = json.loads(raw)
            except ValueError:
                with self.cond:
                    self.bad.append(raw.decode("utf-8", "replace")[:200])
                continue
            m = MARK.match(str(row.get("text", "")))
            with self.cond:
                if m is None:
                    self.bad.append(str(row.get("text", ""))[:200])
                else:
                    self.rows.setdefault(m.group(1), []).append((int(m.group(2)), row))
                self.cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.err = self.proc.stderr.read()

    def count(self, tag: str) -> int:
        with self.cond:
            return len(self.rows.get(tag, []))

    def wait_for(self, tag: str, n: int, timeout: float = 90) -> None:
        """Block until `tag` has at least n lines out (AssertionError on timeout or exit)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.rows.get(tag, [])) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"{tag}: {len(self.rows.get(tag, []))} of {n} lines after {timeout} s"
                assert self.proc.poll() is None, f"tail exited early: {self.stderr()}"
                self.cond.wait(min(left, 0.5))

    def numbers(self, tag: str) -> list[int]:
        with self.cond:
            return [n for n, _ in self.rows.get(tag, [])]

    def stop(self) -> int:
        """SIGTERM (tail flushes what the files hold), wait, return the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._out.join(10)
        self._err.join(10)
        return rc

    def stderr(self) -> str:
        return self.err.decode("utf-8", "replace")


def run_scenarios(scenarios: list[Callable[[], None]]) -> list[BaseException]:
    """Run each scenario in its own thread; the errors they raised."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=wrap, args=(fn,), daemon=True) for fn in scenarios]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return errors
