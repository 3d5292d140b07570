"""Opt-in timing trace for benchmarks/bench_tail.py: `LOGLLAMA_TRACE=FILE logllama tail ...`.

A developers' tool, not a user feature: unset (the default) it costs one `is None` test per batch.
Set, the app appends one JSON object per line to FILE, each stamped with the wall clock
(`time.time()`, comparable with the writer's clock in another process):

* `{"ev": "screen", "t": ...}` after the first frame is drawn;
* `{"ev": "ready", "t": ...}` after the first frame that shows the model loaded;
* `{"ev": "shown", "t": ..., "n": N, "total": T, "lines": [[source, lo, hi], ...]}` for each batch
  of scored lines, once a frame whose header counts the batch (`total` lines so far) was drawn;
  `lines` are the runs of consecutive line numbers in the batch.

"Drawn" means the compositor handed the frame to the terminal driver: the record is written from a
`call_after_refresh` callback, re-armed until the header's last render shows the batch's total.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

ENV = "LOGLLAMA_TRACE"


class Trace:
    """Appends trace records to a file; `shown` records wait for the frame that counts them."""

    def __init__(self, path: str) -> None:
        self.fh: IO[str] = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - app lifetime
        self.pending: list[dict[str, Any]] = []
        self.armed = False

    def event(self, ev: str, **fields: Any) -> None:
        """Write one record stamped now."""
        if not self.fh.closed:
            self.fh.write(json.dumps({"ev": ev, "t": time.time(), **fields}) + "\n")

    def batch(self, verdicts: Iterable[Any], total: int) -> None:
        """Note a batch added to the view; `flush` writes it once a frame counts it."""
        runs: list[list[Any]] = []
        n = 0
        for v in verdicts:
            n += 1
            last = runs[-1] if runs else None
            if last is not None and last[0] == v.source and last[2] + 1 == v.lineno:
                last[2] = v.lineno
            else:
                runs.append([v.source, v.lineno, v.lineno])
        self.pending.append({"n": n, "total": total, "lines": runs})

    def flush(self, painted: int, rearm: Callable[[], Any]) -> None:
        """Write the batches a drawn frame counted (`painted` lines); re-arm for the rest."""
        self.armed = False
        now = time.time()
        done = [p for p in self.pending if p["total"] <= painted]
        if done and not self.fh.closed:
            self.pending = self.pending[len(done):]
            self.fh.write("".join(json.dumps({"ev": "shown", "t": now, **p}) + "\n" for p in done))
        if self.pending:
            self.armed = True
            rearm()

    def close(self) -> None:
        self.fh.close()


def open_trace() -> Trace | None:
    """The trace named by $LOGLLAMA_TRACE, or None (the normal case)."""
    path = os.environ.get(ENV)
    return Trace(path) if path else None


__all__ = ["ENV", "Trace", "open_trace"]
