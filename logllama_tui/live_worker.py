"""The `tail` scoring thread (no textual here): queued lines -> batches -> Engine -> `sink`.

Split from live.py (the scoring itself) to keep both readable. One thread: parsing and the model
share the interpreter, and a second thread for parsing was measured slower (each small torch call
gives the GIL away and waits to get it back while the parser holds it; measured on the
busy 2-core box, 0.6-1.0x).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from .live import Engine, Notice, Sink
from .records import Line

EXPIRE_EVERY = 1.0
"""Seconds between checks for sessions idle past their timeout."""


class LiveWorker:
    """A thread: queued Lines -> batches of `batch_ms` -> Engine -> `sink(verdicts)`.

    `load()` runs in this thread (transformers costs seconds to import); lines submitted meanwhile
    wait in the queue and are scored once it returns. A load error goes to `on_notice` and the
    worker then only drains its queue.
    """

    def __init__(self, load: Callable[[], Engine], sink: Sink, on_notice: Notice | None = None,
                 on_ready: Callable[[Engine], None] | None = None, batch_ms: int = 50,
                 max_batch: int = 2048) -> None:
        self.load, self.sink = load, sink
        self.on_notice = on_notice or (lambda level, msg: None)
        self.on_ready = on_ready
        self.batch_s = max(0.001, batch_ms / 1000)
        self.max_batch = max_batch
        self.queue: queue.SimpleQueue[list[Line] | None] = queue.SimpleQueue()
        self.engine: Engine | None = None
        self.failed = False
        self.error: str | None = None
        """Why the model did not load."""
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="live-score", daemon=True)
        self.sniffed = False
        self._lock = threading.Lock()
        self.pending = 0
        """Lines queued and not scored yet (the UI shows it while the model loads)."""

    def start(self) -> None:
        self._thread.start()

    def submit(self, lines: list[Line]) -> None:
        """Queue lines (any thread)."""
        with self._lock:
            self.pending += len(lines)
        self.queue.put(lines)

    def stop(self, timeout: float | None = 10.0) -> None:
        """Score what is queued, then end the thread."""
        self.queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self.engine = self.load()
        except Exception as exc:  # noqa: BLE001 - shown to the user; the app keeps running
            self.failed = True
            self.error = _message(exc)
            self.on_notice("error", self.error)
        else:
            if self.on_ready is not None:
                self.on_ready(self.engine)
        done = False
        last_expire = time.monotonic()
        while not done:
            try:
                item = self.queue.get(timeout=EXPIRE_EVERY)
            except queue.Empty:
                item = []
            if item is None:
                break
            now = time.monotonic()
            if self.engine is not None and now - last_expire >= EXPIRE_EVERY:
                self.engine.live.expire(now)
                last_expire = now
            if not item:
                continue
            batch = list(item)
            deadline = time.monotonic() + self.batch_s
            while len(batch) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    more = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                batch.extend(more)
            self._handle(batch)

    def _handle(self, lines: list[Line]) -> None:
        engine = self.engine
        if engine is None:
            with self._lock:
                self.pending -= len(lines)
            return
        try:
            if not self.sniffed:
                from .live_engine import check_format

                self.sniffed = True
                check_format(engine, lines, self.on_notice)
            verdicts = engine.live.process(list(engine.fmt.records(lines)))
        except Exception as exc:  # noqa: BLE001 - one bad batch must not stop the tail
            self.on_notice("error", f"could not score {len(lines)} lines: {_message(exc)}")
            verdicts = []
        with self._lock:
            self.pending -= len(lines)
        if verdicts:
            self.sink(verdicts)


def _message(exc: BaseException) -> str:
    from .errors import LogLlamaError

    if isinstance(exc, LogLlamaError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


__all__ = ["EXPIRE_EVERY", "LiveWorker"]
