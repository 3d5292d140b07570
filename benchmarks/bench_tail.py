"""Tail benchmark (issues 5 and 7): the real `logllama tail` TUI on a pty, fed real HDFS lines.

Run: .venv/bin/python benchmarks/bench_tail.py [--data ../shared/data] [--runs 3] [--seconds 20]
     [--model models/hdfs] [--only screen,latency,rate,burst,rss] [--quick]
Prints a markdown section and writes it to benchmarks/out/tail.md. The default run takes about
10 minutes (3 runs of 5 rates x 20 s and a 200k burst, then 1M lines for RSS); `--quick` is a
2-minute smoke run. Skips cleanly without the `logllama` executable or the model; without the
data it uses sample_logs/.

How it measures. Each phase spawns a fresh `logllama tail FILE --model M` on a pseudo-terminal
(fixed size, TERM=xterm-256color) with LOGLLAMA_TRACE set (logllama_tui/tui/trace.py: after each
frame the app records which line numbers that frame counted, with the wall clock), waits for the
model, then a writer appends lines to FILE (write + flush, its own wall clock per write). A line's
latency is the trace time of the first frame that counted it minus the time its write returned.

* first screen: spawn -> the header's text ("anomalies") in the pty's output; model ready: spawn ->
  "<model> on cpu" in the output;
* latency: median and p95 over every line at 100 and 1,000 lines/s;
* sustained rate: offered rates for `--seconds` each; achieved = lines / (last counted - first
  written); the lag when the writer stops and the time to drain it; kept up = less than a second
  of lines behind when the writer stops, drained within a second, every line counted once;
* burst: 200,000 lines in one write; time until the last is counted; every line number counted
  exactly once (the trace's runs cover 1..N once, and the header's total equals N);
* RSS of the tail process (psutil) after 100k, 500k and 1M lines, written in 20,000-line chunks
  while the app is at most 100,000 lines behind.

Lines: HDFS_dev.log from the start in every phase (fresh process, cold caches); past its end it
repeats with the block ids prefixed by the repetition number and the dates moved 3 days per
repetition, so later repetitions are new sessions in later log time. Without the data it falls
back to sample_logs/hdfs_sample.log (said in the output).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import pty
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).with_name("logllama"))
SIZE = (40, 120)
"""Rows, columns of the pty."""
ANSI = re.compile(rb"\x1b(\[[0-9;?<>=!$ ]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|P[^\x1b]*\x1b\\|[()][0-9A-Za-z]|.)")
BLK = re.compile(r"blk_(-?)(\d+)")


# -- lines ----------------------------------------------------------------------------------------
class Lines:
    """Line i (0-based) of an endless HDFS log made from `base` (see the module docstring)."""

    def __init__(self, base: list[str]) -> None:
        self.base = base
        self._dates: dict[tuple[int, str], str] = {}

    def get(self, i: int) -> str:
        rep, j = divmod(i, len(self.base))
        line = self.base[j]
        if rep == 0:
            return line
        key = (rep, line[:6])
        date = self._dates.get(key)
        if date is None:
            try:
                day = dt.datetime.strptime(line[:6], "%y%m%d") + dt.timedelta(days=3 * rep)
                date = day.strftime("%y%m%d")
            except ValueError:
                date = line[:6]
            self._dates[key] = date
        return date + BLK.sub(rf"blk_\g<1>{rep}\g<2>", line[6:])

    def chunk(self, start: int, n: int) -> bytes:
        return "".join(self.get(i) + "\n" for i in range(start, start + n)).encode()


# -- the app on a pty ---------------------------------------------------------------------------------
class Tail:
    """One `logllama tail FILE` process on a pty, its trace and what its screen showed."""

    def __init__(self, log: Path, model: str, work: Path) -> None:
        self.trace_path = work / f"trace-{time.monotonic_ns()}.jsonl"
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[0], SIZE[1], 0, 0))
        env = {k: v for k, v in os.environ.items()
               if k not in ("COLUMNS", "LINES") and not k.startswith("TEXTUAL")}
        env |= {"TERM": "xterm-256color", "LOGLLAMA_TRACE": str(self.trace_path),
                "LOGLLAMA_HOME": str(work / "home")}
        self.marker_ready = f"{Path(model).name} on cpu".encode()
        self.t_spawn_wall = time.time()
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen([EXE, "tail", str(log), "--model", model], stdin=slave,
                                     stdout=slave, stderr=slave, env=env, start_new_session=True)
        os.close(slave)
        self.master = master
        self.screen_s: float | None = None
        self.ready_s: float | None = None
        self.screen_text = b""
        self._trace_fh: Any = None
        self._trace_buf = ""
        self.records: list[dict[str, Any]] = []
        self.total = 0
        threading.Thread(target=self._read_pty, daemon=True).start()

    def _read_pty(self) -> None:
        """Drain the terminal (a full pty would stall the app); note when the markers appear."""
        carry = b""
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:
                return
            if not data:
                return
            if self.ready_s is not None:
                continue
            text = ANSI.sub(b"", carry + data)
            carry = data[-256:]
            now = time.perf_counter() - self.t_spawn
            if self.screen_s is None and b"anomalies" in text:
                self.screen_s = now
            if self.marker_ready in text:
                self.ready_s = now
            self.screen_text = (self.screen_text + text)[-4096:]

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.perf_counter() + timeout
        while self.ready_s is None:
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"bench_tail: the tail process did not show the model "
                                 f"(exit {self.proc.poll()}); screen:\n{self.screen_text.decode(errors='replace')}")
            time.sleep(0.01)
        time.sleep(0.5)  # the follower and watchdog are up by now; let the first frames settle

    def poll_trace(self) -> None:
        """Read the trace records written since the last call."""
        if self._trace_fh is None:
            if not self.trace_path.exists():
                return
            self._trace_fh = open(self.trace_path, encoding="utf-8")  # noqa: SIM115
        self._trace_buf += self._trace_fh.read()
        *lines, self._trace_buf = self._trace_buf.split("\n")
        for line in lines:
            rec = json.loads(line)
            self.records.append(rec)
            if rec["ev"] == "shown":
                self.total = rec["total"]

    def wait_total(self, n: int, timeout: float) -> bool:
        deadline = time.perf_counter() + timeout
        while True:
            self.poll_trace()
            if self.total >= n:
                return True
            if time.perf_counter() > deadline or self.proc.poll() is not None:
                return False
            time.sleep(0.02)

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        """q, as a person quits; killed if it does not go."""
        with contextlib.suppress(OSError):
            os.write(self.master, b"q")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)
        if self._trace_fh is not None:
            self._trace_fh.close()


# -- phases -----------------------------------------------------------------------------------------
def start(lines: Lines, model: str, work: Path) -> tuple[Tail, Path, int]:
    log = work / f"live-{time.monotonic_ns()}.log"
    log.write_bytes(b"")
    tail = Tail(log, model, work)
    tail.wait_ready()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    return tail, log, fd


def shown_times(tail: Tail, n: int) -> tuple[list[float], bool, bool]:
    """Per line number 1..n, the time of the frame that counted it; (.., none twice, all there)."""
    when = [0.0] * (n + 1)
    seen = bytearray(n + 1)
    once = True
    for rec in tail.records:
        if rec["ev"] != "shown":
            continue
        for _src, lo, hi in rec["lines"]:
            for i in range(lo, hi + 1):
                if i > n or seen[i]:
                    once = False
                    continue
                seen[i] = 1
                when[i] = rec["t"]
    return when, once, all(seen[1:])


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def rate_phase(lines: Lines, model: str, work: Path, rate: int, seconds: float,
               drain_limit: float) -> dict[str, Any]:
    """Write `rate` lines/s for `seconds`; latencies, lag at the end, drain time, exactly-once.

    A phase that has not drained `drain_limit` s after the writer stopped ends there: its
    latencies are over the lines counted by then (a lower bound) and `drained` is False.
    """
    tail, log, fd = start(lines, model, work)
    try:
        load = os.getloadavg()[0]
        total = int(rate * seconds)
        written_at = [0.0] * (total + 1)
        n = 0
        t0 = time.perf_counter()
        wall0 = time.time()
        while n < total:
            due = min(total, int((time.perf_counter() - t0) * rate) + 1)
            if due > n:
                os.write(fd, lines.chunk(n, due - n))
                now = time.time()
                for i in range(n + 1, due + 1):
                    written_at[i] = now
                n = due
            if n < total:  # until the next line is due, at least 5 ms (writes of rate/200 lines)
                time.sleep(max(0.005, t0 + n / rate - time.perf_counter()))
        end = time.time()
        tail.poll_trace()
        lag = total - max([r["total"] for r in tail.records if r["ev"] == "shown" and r["t"] <= end],
                          default=0)
        done = tail.wait_total(total, timeout=drain_limit)
        when, once, complete = shown_times(tail, total)
        last = max(when)
        lat = [when[i] - written_at[i] for i in range(1, total + 1) if when[i]]
        counted = sum(1 for w in when[1:] if w)
        return {"rate": rate, "lines": total, "load": load, "p50": statistics.median(lat) * 1000,
                "p95": pct(lat, 0.95) * 1000, "achieved": counted / (last - wall0),
                "lag": lag, "drain": last - end, "drained": done, "all": done and once and complete,
                "once": once,
                "counted": tail.total, "rss": tail.rss_mb(),
                "screen": tail.screen_s, "ready": tail.ready_s}
    finally:
        os.close(fd)
        tail.stop()
        log.unlink(missing_ok=True)


def burst_phase(lines: Lines, model: str, work: Path, n: int) -> dict[str, Any]:
    """`n` lines in one write; time until the last is counted; every line exactly once."""
    tail, log, fd = start(lines, model, work)
    try:
        data = lines.chunk(0, n)
        load = os.getloadavg()[0]
        os.write(fd, data)
        wrote = time.time()
        done = tail.wait_total(n, timeout=600)
        when, once, complete = shown_times(tail, n)
        return {"lines": n, "load": load, "catch_up": max(when) - wrote if done else float("inf"),
                "counted": tail.total, "all": done and once and complete and tail.total == n, "rss": tail.rss_mb()}
    finally:
        os.close(fd)
        tail.stop()
        log.unlink(missing_ok=True)


def rss_phase(lines: Lines, model: str, work: Path, marks: list[int]) -> dict[str, Any]:
    """RSS of the tail process once it has counted each mark, fed in chunks as fast as it goes."""
    tail, log, fd = start(lines, model, work)
    try:
        load = os.getloadavg()[0]
        chunk, ahead = 20_000, 100_000
        out: dict[int, float] = {0: tail.rss_mb()}
        n = 0
        t0 = time.time()
        todo = sorted(marks)
        while todo:
            if n < todo[-1] and n - tail.total < ahead:
                os.write(fd, lines.chunk(n, min(chunk, todo[-1] - n)))
                n = min(n + chunk, todo[-1])
            else:
                time.sleep(0.05)
            tail.poll_trace()
            while todo and tail.total >= todo[0]:
                out[todo.pop(0)] = tail.rss_mb()
            if tail.proc.poll() is not None:
                raise SystemExit("bench_tail: the tail process died during the RSS phase")
        took = time.time() - t0
        return {"rss": out, "load": load, "took": took, "rate": marks[-1] / took,
                "all": all(shown_times(tail, max(marks))[1:])}
    finally:
        os.close(fd)
        tail.stop()
        log.unlink(missing_ok=True)


def kept_up(phase: dict[str, Any]) -> bool:
    """Less than a second of lines behind when the writer stopped, drained within a second, every
    line counted once."""
    return phase["all"] and phase["lag"] <= phase["rate"] and phase["drain"] < 1.0


# -- report -----------------------------------------------------------------------------------------
def stat(values: list[float], fmt: str = ",.0f") -> str:
    """'median (min-max)' (just the value for one run)."""
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def load_lines(data: Path) -> tuple[list[str], str]:
    src = data / "hdfs" / "HDFS_dev.log"
    note = f"`{src.name}`"
    if not src.exists():
        src = ROOT / "sample_logs" / "hdfs_sample.log"
        note = f"`sample_logs/{src.name}` ({data}/hdfs/HDFS_dev.log not found)"
    with open(src, encoding="utf-8", errors="replace") as fh:
        base = [ln.rstrip("\r\n") for ln in fh if ln.strip()]
    return base, f"{note}, {len(base):,} lines"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20.0, help="writing time of each rate phase")
    ap.add_argument("--model", default=str(ROOT / "models" / "hdfs"))
    ap.add_argument("--rates", default="2000,5000,10000", help="offered rates besides 100 and 1,000")
    ap.add_argument("--burst", type=int, default=200_000)
    ap.add_argument("--rss-lines", type=int, default=1_000_000)
    ap.add_argument("--drain-limit", type=float, default=30.0,
                    help="seconds a rate phase may take to drain after the writer stops")
    ap.add_argument("--only", default="screen,latency,rate,burst,rss")
    ap.add_argument("--quick", action="store_true",
                    help="one run, 5 s phases, a 50k burst, RSS to 200k: a smoke run on a busy box")
    args = ap.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.burst, args.rss_lines = 1, 5.0, 50_000, 200_000
    if shutil.which(EXE) is None and not Path(EXE).exists():
        print(f"bench_tail: {EXE} not found (pip install -e .); skipping.")
        return 0
    if not (Path(args.model) / "logllama.json").exists():
        print(f"bench_tail: model {args.model} not found; skipping.")
        return 0
    only = set(args.only.split(","))
    base, source = load_lines(Path(args.data))
    lines = Lines(base)
    runs = max(1, args.runs)
    command = ".venv/bin/python benchmarks/bench_tail.py" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv))
    out = ["## Tail (issues 5 and 7)", "", f"Command: `{command}`", "",
           f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average "
           f"{os.getloadavg()[0]:.1f} at the start ({time.strftime('%H:%M')}); model "
           f"`{Path(args.model).name}`; lines from {source}; a fresh `logllama tail` process on a "
           f"{SIZE[1]}x{SIZE[0]} pty per phase; median of {runs} runs (min-max) unless said.", ""]
    rates = [100, 1000] if only & {"latency", "screen"} else []
    if "rate" in only:
        rates += [int(r) for r in args.rates.split(",") if r]
    results: dict[int, list[dict[str, Any]]] = {r: [] for r in rates}
    bursts: list[dict[str, Any]] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="logllama-bench-tail-") as tmp:
        work = Path(tmp)
        for run in range(runs):
            for rate in rates:
                if rate > 1000 and any(not kept_up(g) for r in rates if 1000 < r < rate
                                       for g in results[r][run:]):
                    continue  # a lower rate was not kept up with in this run: skip the higher ones
                got = rate_phase(lines, args.model, work, rate, args.seconds, args.drain_limit)
                results[rate].append(got)
                print(f"bench_tail: run {run + 1} rate {rate}: {json.dumps(got)}", file=sys.stderr, flush=True)
            if "burst" in only:
                bursts.append(burst_phase(lines, args.model, work, args.burst))
                print(f"bench_tail: run {run + 1} burst: {json.dumps(bursts[-1])}", file=sys.stderr, flush=True)
        rss = None
        if "rss" in only:
            marks = sorted({m for m in (100_000, 500_000, args.rss_lines) if m <= args.rss_lines})
            rss = rss_phase(lines, args.model, work, marks)
            print(f"bench_tail: rss: {json.dumps(rss)}", file=sys.stderr, flush=True)
    every = [g for r in rates for g in results[r]]
    if every and "screen" in only:
        out += ["### Start-up", "",
                f"Spawn to the text on the pty, every phase's process ({len(every)} starts):", "",
                "| what | ms |", "|---|---|",
                f"| first screen (header drawn) | {stat([g['screen'] * 1000 for g in every])} |",
                f"| model ready (\"{Path(args.model).name} on cpu\" drawn) | "
                f"{stat([g['ready'] * 1000 for g in every])} |", ""]
    if "latency" in only:
        out += ["### Latency: line appended -> its verdict counted on screen", "",
                f"{args.seconds:g} s of writing per rate; over every line of the phase.", "",
                "| offered lines/s | median ms | p95 ms | load at start |", "|---|---|---|---|"]
        for r in (100, 1000):
            g = results.get(r, [])
            if g:
                out.append(f"| {r:,} | {stat([x['p50'] for x in g])} | {stat([x['p95'] for x in g])} | "
                           f"{stat([x['load'] for x in g], '.1f')} |")
        out.append("")
    if "rate" in only:
        out += ["### Sustained rate", "",
                f"{args.seconds:g} s of writing per rate. Lag = lines written and not yet counted when "
                "the writer stopped; drain = from then to the last line counted; kept up = less than "
                "one second of lines behind when the writer stopped and drained within 1 s, every line "
                "counted once, in every run.", "",
                "| offered lines/s | achieved lines/s | p95 latency ms | lag (lines) | drain s | "
                "every line once | RSS MB at the end | kept up | load at start |",
                "|---|---|---|---|---|---|---|---|---|"]
        best = 0
        for r in rates:
            g = results[r]
            if not g:
                out.append(f"| {r:,} | skipped: a lower rate was not kept up with | | | | | | no | |")
                continue
            kept = len(g) == runs and all(kept_up(x) for x in g)
            if kept:
                best = max(best, r)
            drain = stat([x["drain"] for x in g], ".2f") if all(x["drained"] for x in g) else \
                f"> {args.drain_limit:g} in {sum(not x['drained'] for x in g)} of {len(g)}"
            once = "yes" if all(x["all"] for x in g) else "none twice (not all drained)" if all(
                x["once"] for x in g) else "NO"
            out.append(f"| {r:,} | {stat([x['achieved'] for x in g])} | {stat([x['p95'] for x in g])} | "
                       f"{stat([x['lag'] for x in g])} | {drain} | {once} | "
                       f"{stat([x['rss'] for x in g])} | {'yes' if kept else 'no'} | "
                       f"{stat([x['load'] for x in g], '.1f')} |")
        out += ["", f"Highest offered rate kept up with: **{best:,} lines/s** (goal >= 5,000).", ""]
    if bursts:
        b = bursts
        out += ["### Burst catch-up", "",
                f"{args.burst:,} lines in one write to a followed file.", "",
                "| lines | time until all counted s | counted == written, each once | load at start |",
                "|---|---|---|---|",
                f"| {args.burst:,} | {stat([x['catch_up'] for x in b], '.1f')} | "
                f"{'yes' if all(x['all'] for x in b) else 'NO: ' + str([x['counted'] for x in b])} | "
                f"{stat([x['load'] for x in b], '.1f')} |", ""]
    if rss is not None:
        out += ["### Memory", "",
                f"One process, lines written in 20,000-line chunks while it is at most 100,000 behind "
                f"({rss['took']:.0f} s, {rss['rate']:,.0f} lines/s; every line counted once: "
                f"{'yes' if rss['all'] else 'NO'}; load {rss['load']:.1f} at the start).", "",
                "| lines counted | RSS MB |", "|---|---|"]
        out += [f"| {m:,} | {mb:,.0f} |" for m, mb in sorted(rss["rss"].items())]
        out.append("")
    out.append(f"(bench_tail: {time.perf_counter() - began:.0f} s, load average "
               f"{os.getloadavg()[0]:.1f} at the end)")
    text = "\n".join(out) + "\n"
    print(text)
    dest = ROOT / "benchmarks" / "out"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tail.md").write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
