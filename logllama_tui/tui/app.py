"""The `logllama tail` app: follower and scoring threads feed it through typed messages."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input, Sparkline, Static

from logllama_tui.config import ReaderConfig, TailConfig

from .details import Details
from .logview import LogView
from .messages import CursorMoved, ModelReady, Notice, VerdictBatch
from .screens import HelpScreen
from .trace import open_trace

_TAIL, _READER = TailConfig(), ReaderConfig()
SPARK_SECONDS = 60
"""Seconds of anomaly rate in the header's sparkline."""
BUSY_LINES = 2_000
"""Lines per second from which the view takes new lines at most every FRAME_S."""
FRAME_S = 0.1
"""A frame costs ~10-25 ms of the one interpreter the scorer also needs: at high rates ten a
second are enough to follow, and batches that land in between are shown together."""


class Stats(Static):
    """The header's counters; remembers the line count its last render showed (for the trace)."""

    lines_set = 0
    lines_drawn = 0

    def show(self, text: str, lines: int) -> None:
        self.lines_set = lines
        self.update(text, layout=False)  # one row, fixed size: no layout pass per batch

    def render(self) -> Any:
        self.lines_drawn = self.lines_set
        return super().render()


class TailApp(App[None]):
    """Live triage: the log list, the details of the selected line, the stats header."""

    CSS_PATH = "tail.tcss"
    TITLE = "logllama tail"
    BINDINGS = [
        Binding("n", "next_anomaly", "Next"),
        Binding("N", "prev_anomaly", "Prev", key_display="N"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("a", "toggle_anomalies", "Anomalies"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("x", "mark('false_positive')", "False pos."),
        Binding("c", "mark('anomaly')", "Confirm"),
        Binding("e", "export", "Export"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "clear_search", "Clear search", show=False),
    ]

    def __init__(self, paths: list[str], load: Callable[[Callable[[str, str], None]], Any],
                 tail: TailConfig = _TAIL, reader: ReaderConfig = _READER,
                 feedback: str | None = None, export_dir: str | None = None,
                 start_threads: bool = True, stdin: Any = None) -> None:
        super().__init__()
        self.stdin = stdin
        self.paths, self.load, self.tail, self.reader = paths, load, tail, reader
        self.feedback_path = feedback
        self.export_dir = Path(export_dir) if export_dir else Path.cwd()
        self.start_threads = start_threads
        self.engine: Any | None = None
        self.lines = 0
        self.anomalies = 0
        self.rates: deque[float] = deque([0.0] * SPARK_SECONDS, maxlen=SPARK_SECONDS)
        self._second_lines = 0
        self._second_anoms = 0
        self._lps = 0.0
        self._incoming: list[Any] = []
        self._shown_at = 0.0
        self._paced: Any | None = None
        self.follower: Any | None = None
        self.worker: Any | None = None
        self.fingerprint: str | None = None
        self.load_error: str | None = None
        self.trace = open_trace()
        """LOGLLAMA_TRACE=FILE: timings for benchmarks/bench_tail.py (tui/trace.py); else None."""

    def compose(self) -> ComposeResult:
        with Horizontal(id="header"):
            yield Stats(self._stats_text(), id="stats")
            yield Sparkline(list(self.rates), id="rate", summary_function=max)
        yield LogView(self.tail.ring_size, self.tail.max_anomalies, id="log")
        yield Details(id="details")
        yield Input(placeholder="search text (Enter applies, Esc clears)", id="search")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(LogView).focus()
        self.query_one(Details).show(None)
        self.tick_timer = self.set_interval(1.0, self._tick)
        if self.trace is not None:
            self.call_after_refresh(self.trace.event, "screen")
        if self.start_threads:  # after the first frame: torch's import holds the GIL for seconds
            self.call_after_refresh(self.start_following)

    # -- threads -> messages --------------------------------------------------------------------
    def start_following(self) -> None:
        """Start the follower and the scoring worker (the model loads in the worker)."""
        from logllama_tui.follow import Follower
        from logllama_tui.live_worker import LiveWorker

        def notice(level: str, text: str) -> None:
            self.post_message(Notice(level, text))

        self.worker = LiveWorker(lambda: self.load(notice), lambda v: self.post_message(VerdictBatch(v)),
                                 notice, lambda e: self.post_message(ModelReady(e)),
                                 batch_ms=self.tail.batch_ms)
        self.follower = Follower(self.paths, self.worker.submit, self.tail, self.reader,
                                 on_notice=notice, stdin=self.stdin,
                                 on_eof=lambda: notice("information", "stdin ended: nothing more "
                                                       "will arrive (q quits)"))
        self.worker.start()
        self.follower.start()

    def on_unmount(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        if self.trace is not None:
            self.trace.close()

    def on_verdict_batch(self, message: VerdictBatch) -> None:
        self._incoming.extend(message.verdicts)
        if self._paced is not None:
            return  # a frame is due: these go with it
        busy = max(self._lps, self._second_lines) >= BUSY_LINES
        wait = self._shown_at + FRAME_S - time.monotonic() if busy else 0.0
        if wait > 0:
            self._paced = self.set_timer(wait, self._take_incoming)
        else:
            self._take_incoming()

    def _take_incoming(self) -> None:
        self._paced = None
        self._shown_at = time.monotonic()
        batch, self._incoming = self._incoming, []
        self.add_verdicts(batch)

    def add_verdicts(self, verdicts: Iterable[Any]) -> None:
        """Show scored lines (also used directly by tests)."""
        verdicts = list(verdicts)
        n_anom = sum(1 for v in verdicts if v.anomalous)
        self.lines += len(verdicts)
        self.anomalies += n_anom
        self._second_lines += len(verdicts)
        self._second_anoms += n_anom
        view = self.query_one(LogView)
        dropped = view.dropped_anomalies
        view.add(verdicts)
        if view.dropped_anomalies and not dropped:  # once: memory stays bounded, say what goes
            self.notify(f"more than {view.max_anomalies:,} anomalies: the oldest leave the view (and "
                        "exports); nearly every line flagged often means a model for another log "
                        "format (--model)", severity="warning", timeout=15)
        self._show_stats()
        if self.trace is not None:
            self.trace.batch(verdicts, self.lines)
            if not self.trace.armed:
                self.trace.armed = True
                self.call_after_refresh(self._trace_flush)

    def _trace_flush(self) -> None:
        assert self.trace is not None
        stats = self.query_one("#stats", Stats)
        self.trace.flush(stats.lines_drawn, lambda: self.call_after_refresh(self._trace_flush))

    def on_notice(self, message: Notice) -> None:
        severity = message.level if message.level in ("information", "warning", "error") else "information"
        self.notify(message.text, severity=severity, timeout=8 if severity != "error" else 30)  # type: ignore[arg-type]
        if self.worker is not None and self.worker.error and self.load_error is None:
            self.load_error = self.worker.error  # stays in the details pane: toasts go away
            if self.query_one(LogView).selected is None:
                self.query_one(Details).show(None, error=self.load_error)
        self._show_stats()

    def on_model_ready(self, message: ModelReady) -> None:
        self.engine = message.engine
        self._show_stats()
        if self.trace is not None:
            self.call_after_refresh(self.trace.event, "ready")

    def on_cursor_moved(self, message: CursorMoved) -> None:
        self.query_one(Details).show(message.verdict, self.engine.model_name if self.engine else "",
                                     self.load_error)

    # -- header -------------------------------------------------------------------------------
    def _tick(self) -> None:
        lines, anoms = self._second_lines, self._second_anoms
        self._second_lines = self._second_anoms = 0
        self._lps = float(lines)
        self.rates.append(anoms / lines if lines else 0.0)
        self.query_one(Sparkline).data = list(self.rates)
        self._show_stats()

    def _stats_text(self) -> str:
        if self.engine is not None:
            model = f"[b]{self.engine.model_name}[/b] on {self.engine.device} (K={self.engine.info.get('k')})"
        elif self.worker is not None and self.worker.failed:
            model = "[red]no model[/red]"
        else:
            waiting = self.worker.pending if self.worker is not None else 0
            model = f"[yellow]loading model...[/yellow] {waiting} lines waiting"
        found = self.query(LogView)
        view = found.first() if found else None
        flags = []
        if view is not None:
            flags.append("follow" if view.follow else "[dim]paused[/dim]")
            if view.anomalies_only:
                flags.append("[b]anomalies only[/b]")
            if view.search:
                flags.append(f"search: [b]{view.search}[/b]")
        rate = self.anomalies / self.lines if self.lines else 0.0
        return (f"lines [b]{self.lines}[/b]  {self._lps:.0f}/s  anomalies [b red]{self.anomalies}"
                f"[/b red] ({rate:.1%})  {model}  {' '.join(flags)}")

    def _show_stats(self) -> None:
        for stats in self.query("#stats").results(Stats):
            stats.show(self._stats_text(), self.lines)

    # -- actions ------------------------------------------------------------------------------
    def action_next_anomaly(self) -> None:
        if not self.query_one(LogView).find_anomaly(1):
            self.notify("no later anomaly", timeout=2)
        self._show_stats()

    def action_prev_anomaly(self) -> None:
        if not self.query_one(LogView).find_anomaly(-1):
            self.notify("no earlier anomaly", timeout=2)
        self._show_stats()

    def action_toggle_follow(self) -> None:
        view = self.query_one(LogView)
        view.follow = not view.follow
        if view.follow and view.rows:
            view.cursor = len(view.rows) - 1
        self._show_stats()

    def action_toggle_anomalies(self) -> None:
        view = self.query_one(LogView)
        view.anomalies_only = not view.anomalies_only
        view.refilter()
        self._show_stats()

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        view = self.query_one(LogView)
        view.search = event.value.strip().lower()
        view.refilter()
        event.input.display = False
        view.focus()
        if view.search and not view.rows:
            self.notify(f"no line contains {event.value!r} (Esc clears the search)", timeout=4)
        self._show_stats()

    def action_clear_search(self) -> None:
        box = self.query_one("#search", Input)
        view = self.query_one(LogView)
        box.value, box.display = "", False
        if view.search:
            view.search = ""
            view.refilter()
        view.focus()
        self._show_stats()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_mark(self, verdict: str) -> None:
        """Append the selected line to the feedback JSONL as a false positive or an anomaly."""
        from logllama_tui.errors import LogLlamaError
        from logllama_tui.feedback import (
            FeedbackRecord,
            append_feedback,
            default_feedback_path,
            model_fingerprint,
        )

        view = self.query_one(LogView)
        v = view.selected
        if v is None:
            self.notify("select a line first", severity="warning", timeout=3)
            return
        if self.engine is None:
            self.notify("the model is not loaded yet: marks need it", severity="warning", timeout=4)
            return
        try:
            if self.fingerprint is None:
                self.fingerprint = model_fingerprint(self.engine.info["path"])
            path = Path(self.feedback_path) if self.feedback_path else \
                default_feedback_path(self.engine.model_name)
            append_feedback(path, FeedbackRecord(
                file=v.source, line=v.lineno, text=v.text, key=v.key, template=v.template,
                verdict=verdict, model_name=self.engine.model_name,
                model_fingerprint=self.fingerprint, sequence=v.sid))
        except (LogLlamaError, OSError) as exc:
            self.notify(f"could not write feedback: {exc}", severity="error", timeout=8)
            return
        view.marks[id(v)] = "FP" if verdict == "false_positive" else "OK"
        view.refresh()
        label = "false positive" if verdict == "false_positive" else "confirmed anomaly"
        self.notify(f"{v.source}:{v.lineno} marked {label} -> {path}", timeout=4)

    def action_export(self) -> None:
        """Write every anomaly kept so far to a JSONL file."""
        view = self.query_one(LogView)
        anomalies = [v for v in view.entries if v.anomalous]
        path = self.export_dir / f"logllama-anomalies-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
        from pathlib import Path

        from logllama_tui.parser import atomic_write_text

        try:  # temp file + fsync + rename: a crash never leaves half an export
            atomic_write_text(Path(path), "".join(json.dumps(v.to_json(), ensure_ascii=False) + "\n"
                                                  for v in anomalies))
        except OSError as exc:
            self.notify(f"could not export: {exc}", severity="error", timeout=8)
            return
        self.notify(f"exported {len(anomalies)} anomalies to {path}", timeout=6)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Next anomaly", "Jump to the next flagged line (n)", self.action_next_anomaly)
        yield SystemCommand("Previous anomaly", "Jump to the previous flagged line (N)",
                            self.action_prev_anomaly)
        yield SystemCommand("Toggle follow", "Follow new lines on/off (f)", self.action_toggle_follow)
        yield SystemCommand("Anomalies only", "Show only flagged lines, or all (a)",
                            self.action_toggle_anomalies)
        yield SystemCommand("Search", "Filter lines by text (/)", self.action_search)
        yield SystemCommand("Mark false positive", "Append to the feedback JSONL (x)",
                            lambda: self.action_mark("false_positive"))
        yield SystemCommand("Mark confirmed anomaly", "Append to the feedback JSONL (c)",
                            lambda: self.action_mark("anomaly"))
        yield SystemCommand("Export anomalies", "Write every anomaly to a JSONL file (e)",
                            self.action_export)
        yield SystemCommand("Keys", "Show every key (?)", self.action_help)


def make_app(paths: list[str], spec: Any = None, tail: TailConfig = _TAIL,
             reader: ReaderConfig = _READER, feedback: str | None = None,
             export_dir: str | None = None, load: Callable[..., Any] | None = None,
             start_threads: bool = True, stdin: Any = None) -> TailApp:
    """The app for `logllama tail` (and the tests): `spec` is a live_engine.EngineSpec."""
    if load is None:
        def load(notice: Callable[[str, str], None]) -> Any:
            from logllama_tui.live_engine import open_engine

            return open_engine(spec, notice)
    return TailApp(paths, load, tail, reader, feedback, export_dir, start_threads, stdin)
