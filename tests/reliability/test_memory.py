"""Bounded memory: an endless stream of ever-new session ids through the pipeline keeps RSS flat.

Every line names a new block, four lines per block, so nothing is ever seen twice. The stream is
generated lazily and the finished sequences are dropped, so the only thing that can grow is what
the parser and the windower keep. RSS is read from /proc at two points of the stream, after a
warm-up third: the growth between them must stay under a few MiB while the lines in between
would take well over a hundred MiB if they were kept.

Default: 100,000 lines for the log-time test and 40,000 for the two others (2,000,000 each with
LOGLLAMA_FULL_RELIABILITY=1). The parser's match cache is a separate, bounded structure (at most
`cache_size` contents, 50,000 by default, cleared when full): it is shrunk to 2,000 here so its
filling does not hide a leak elsewhere, and its bound is checked on its own.
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from rel_helpers import FULL, hdfs_line

from logllama_tui.config import WindowConfig
from logllama_tui.formats import get_format
from logllama_tui.parser import LogParser
from logllama_tui.pipeline import make_pipeline
from logllama_tui.records import Line

LINES = 2_000_000 if FULL else 100_000
SHORT = 2_000_000 if FULL else 40_000
GROWTH_LIMIT = 8 << 20
"""Bytes RSS may grow between the two checkpoints (allocator noise, the parser's match cache)."""


def rss() -> int:
    """Resident set size of this process in bytes (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def stream(n: int, with_time: bool = True) -> Iterator[Line]:
    """n lines, four per never-repeated block; the log clock advances one second per block."""
    for i in range(n):
        block, step = i // 4, i % 4
        text = hdfs_line(step, f"blk_{block}", block)
        if not with_time:
            text = text.split(" ", 3)[3]  # no date and time: `raw` lines with a session id
        yield Line("stream.log", i + 1, text)


def frozen_parser(cache_size: int = 2_000) -> LogParser:
    """A parser that knows the four step templates and learns nothing more (as scan and tail)."""
    parser = LogParser(cache_size=cache_size)
    fmt = get_format("hdfs")
    for r in fmt.records(Line("t", i + 1, hdfs_line(i % 4, "blk_1", i)) for i in range(4)):
        parser.learn(r)
    return parser


def measure(n: int, fmt_name: str, window: WindowConfig, with_time: bool,
            clock_step: float = 0.0) -> tuple[int, int, int, int]:
    """(RSS growth from the 1/3 to the end, sequences out, largest open count, lines)."""
    clock = [0.0]
    pipe = make_pipeline(frozen_parser(), window, "session", clock=lambda: clock[0])
    fmt = get_format(fmt_name)
    marks = {n // 3, n - 1}
    seen: list[int] = []
    out = max_open = 0
    for i, rec in enumerate(fmt.records(stream(n, with_time))):
        out += len(pipe.feed(rec))
        if clock_step:
            clock[0] += clock_step
            if i % 1000 == 0:
                out += len(pipe.expire(clock[0]))
        if i % 1000 == 0:
            max_open = max(max_open, pipe.windower.open_count)
        if i in marks:
            gc.collect()
            seen.append(rss())
    out += len(pipe.flush())
    return seen[1] - seen[0], out, max_open, n


@pytest.mark.slow
def test_sessions_idle_by_log_time_are_released() -> None:
    window = dataclasses.replace(WindowConfig(), session_timeout=600.0)
    growth, out, max_open, n = measure(LINES, "hdfs", window, with_time=True)
    assert out == n // 4  # every block came out as one finished sequence
    assert max_open <= 602  # 600 s of log time, one block per second
    assert growth < GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB over {2 * n // 3} lines"


@pytest.mark.slow
def test_open_sessions_are_capped_without_timestamps() -> None:
    window = dataclasses.replace(WindowConfig(), max_open_sessions=5_000)
    growth, out, max_open, n = measure(SHORT, "raw", window, with_time=False)
    assert out == n // 4
    assert max_open <= 5_000
    assert growth < GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB over {2 * n // 3} lines"


@pytest.mark.slow
def test_sessions_idle_by_wall_clock_are_expired() -> None:
    """No timestamps, default cap (100k): expire(now) is what releases the quiet sessions."""
    window = dataclasses.replace(WindowConfig(), session_timeout=30.0)
    growth, out, max_open, n = measure(SHORT, "raw", window, with_time=False, clock_step=0.01)
    assert out == n // 4
    assert max_open <= 30.0 / 0.01 / 4 + 1000 / 4 + 2  # 30 s of lines, plus one expire period
    assert growth < GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB over {2 * n // 3} lines"


def test_match_cache_is_bounded() -> None:
    parser = frozen_parser(cache_size=1_000)
    fmt = get_format("hdfs")
    for rec in fmt.records(stream(20_000)):
        parser.match(rec)
        assert len(parser._cache) <= 1_000


LIVE = 400_000 if FULL else 20_000


@pytest.mark.slow
def test_live_scorer_releases_idle_sessions(tiny_ckpt: Path) -> None:
    """`tail`'s path: LiveScorer keeps a prefix per open session; idle ones must be dropped."""
    from logllama_tui.checkpoint import load_checkpoint
    from logllama_tui.live import LiveScorer
    from logllama_tui.scoring import Scorer

    ckpt = load_checkpoint(tiny_ckpt)
    ckpt.parser.cache_size = 2_000  # the match cache is bounded on its own (see above)
    window = dataclasses.replace(WindowConfig(), session_timeout=100.0)
    live = LiveScorer(ckpt.parser, Scorer(ckpt.model, ckpt.parser.vocab.n_keys, 1), window, "session")
    fmt = get_format("hdfs")
    batch: list[Line] = []
    verdicts = max_open = 0
    marks = {LIVE // 3, LIVE - 1}
    seen: list[int] = []
    for i, line in enumerate(stream(LIVE)):
        batch.append(line)
        if len(batch) == 500 or i == LIVE - 1:
            verdicts += len(live.process(list(fmt.records(batch)), wall=0.0))
            batch = []
            assert live.tracker is not None
            max_open = max(max_open, live.tracker.open_count)
        if i in marks:
            gc.collect()
            seen.append(rss())
    assert verdicts == LIVE  # one verdict per line
    assert max_open <= 100 + 500 // 4 + 2  # 100 s of log time, plus one batch
    growth = seen[1] - seen[0]
    assert growth < GROWTH_LIMIT, f"RSS grew {growth / 2**20:.1f} MiB"
