"""The seam shared by scan, train, eval, finetune and tail: records -> keys -> labelled sequences."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from collections.abc import Sequence as Seq
from typing import Protocol

from . import formats, readers
from .config import ReaderConfig, WindowConfig
from .formats import LogFormat
from .labels import label_sequence
from .readers import ReadStats
from .records import Event, Record, Sequence
from .windows import Windower, compile_session_regex, make_windower, resolve_mode

DEFAULT_READER = ReaderConfig()
SNIFF_LINES = 20
"""First lines of a file handed to `formats.detect` for --format auto."""
MODE_SAMPLE = 200
"""First records looked at to resolve --window auto."""

Notice = Callable[[str], None]


class Parser(Protocol):
    """What the pipeline needs of logllama_tui.parser.LogParser."""

    def learn(self, record: Record) -> Event: ...

    def match(self, record: Record) -> Event: ...


def iter_files(paths: Seq[str], fmt: str = "auto", reader: ReaderConfig = DEFAULT_READER,
               notice: Notice | None = None, stats: ReadStats | None = None,
               ) -> Iterator[tuple[str, LogFormat, Iterator[Record]]]:
    """(path, format, records) for each expanded path, lazily; `auto` sniffs each file's format."""
    auto = fmt.strip().lower() == "auto"
    if not auto:
        formats.get_format(fmt)  # a bad name or pattern fails before any file is opened
    for path in readers.expand_paths(paths):
        lines = readers.iter_lines(path, reader, stats)
        if auto:
            head = list(itertools.islice(lines, SNIFF_LINES))
            log_format, reason = formats.detect(path, [line.text for line in head])
            if notice is not None:
                notice(f"{path}: format {log_format.name} ({reason})")
            lines = itertools.chain(head, lines)
        else:
            log_format = formats.get_format(fmt)  # fresh per file: file formats keep state
        yield path, log_format, log_format.records(lines)


def read_records(paths: Seq[str], fmt: str = "auto", reader: ReaderConfig = DEFAULT_READER,
                 notice: Notice | None = None, stats: ReadStats | None = None) -> Iterator[Record]:
    """Every record of every expanded path, file after file, in line order."""
    for _path, _fmt, records in iter_files(paths, fmt, reader, notice, stats):
        yield from records


class Pipeline:
    """One record in -> key (parser) -> window -> zero or more labelled sequences out."""

    def __init__(self, parser: Parser, windower: Windower,
                 session_labels: Mapping[str, bool] | None = None, learn: bool = False,
                 session_regex: str | None = None) -> None:
        """`session_regex`: for time/count windows with session labels, how lines name sessions."""
        self.parser = parser
        self.windower = windower
        self.session_labels = session_labels
        self._to_event = parser.learn if learn else parser.match
        self._regex = compile_session_regex(session_regex) if session_regex else None
        self.lines = 0
        """Records fed."""
        self.sequences = 0
        """Sequences emitted."""
        self.labelled = {True: 0, False: 0, None: 0}
        """Emitted sequences by label: anomalous, normal, unknown."""

    @property
    def events(self) -> int:
        """Keyed events handed to the windower (one per record)."""
        return self.lines

    @property
    def orphans(self) -> int:
        """Lines that named no session (session windows only): counted, not windowed."""
        return self.windower.orphans

    def feed(self, record: Record) -> list[Sequence]:
        """Parse one record, window it, and return the sequences it finished, labelled."""
        self.lines += 1
        done = self.windower.feed(self._to_event(record))
        return self._label(done) if done else done

    def key(self, record: Record) -> Event:
        """Only the parsing step (a live view shows the line's key before its window closes)."""
        self.lines += 1
        return self._to_event(record)

    def feed_event(self, event: Event) -> list[Sequence]:
        """Only the windowing step, for an event from `key`; returns finished, labelled sequences."""
        done = self.windower.feed(event)
        return self._label(done) if done else done

    def feed_many(self, records: Iterable[Record]) -> list[Sequence]:
        """Feed records in order; return every sequence they finished."""
        out: list[Sequence] = []
        feed, to_event = self.windower.feed, self._to_event
        n = 0
        try:
            for record in records:
                n += 1
                done = feed(to_event(record))
                if done:
                    out += done
        finally:
            self.lines += n
        return self._label(out) if out else out

    def flush(self) -> list[Sequence]:
        """Close every open sequence (end of input)."""
        return self._label(self.windower.flush())

    def expire(self, now: float) -> list[Sequence]:
        """Close what has been idle past its timeout (live tailing)."""
        return self._label(self.windower.expire(now))

    def _label(self, seqs: list[Sequence]) -> list[Sequence]:
        labels, regex, counts = self.session_labels, self._regex, self.labelled
        for seq in seqs:
            seq.label = label_sequence(seq, labels, regex)
            counts[seq.label] += 1
        self.sequences += len(seqs)
        return seqs


def collect_sequences(paths: Seq[str], fmt: str, parser: Parser, window: WindowConfig,
                      session_labels: Mapping[str, bool] | None = None, learn: bool = False,
                      reader: ReaderConfig = DEFAULT_READER, notice: Notice | None = None,
                      stats: ReadStats | None = None) -> list[Sequence]:
    """Every labelled sequence of the given files (training, eval, finetuning).

    --window auto is resolved once, from the first file's format and first records (see
    windows.resolve_mode); `notice` hears the chosen format of each file and the window mode.
    """
    pipeline: Pipeline | None = None
    out: list[Sequence] = []
    for _path, log_format, records in iter_files(paths, fmt, reader, notice, stats):
        if pipeline is None:
            head = list(itertools.islice(records, MODE_SAMPLE))
            records = itertools.chain(head, records)
            mode = resolve_mode(window, log_format.default_window, head)
            if notice is not None and window.mode == "auto":
                notice(f"window: {mode} ({_describe(window, mode)})")
            pipeline = make_pipeline(parser, window, mode, session_labels, learn)
        out += pipeline.feed_many(records)
    if pipeline is not None:
        out += pipeline.flush()
    return out


def make_pipeline(parser: Parser, window: WindowConfig, mode: str,
                  session_labels: Mapping[str, bool] | None = None, learn: bool = False,
                  **windower_kwargs: object) -> Pipeline:
    """A Pipeline whose windower is built for `mode` (already resolved, not "auto")."""
    windower = make_windower(window, mode, **windower_kwargs)  # type: ignore[arg-type]
    regex = window.session_regex if mode != "session" and session_labels else None
    return Pipeline(parser, windower, session_labels, learn, regex)


def _describe(window: WindowConfig, mode: str) -> str:
    """The window settings in words, for notices."""
    if mode == "session":
        return f"sessions by {window.session_regex}, idle timeout {window.session_timeout:g} s"
    if mode == "time":
        return f"{window.window_seconds:g} s every {window.step_seconds:g} s"
    return f"{window.window_size} keys every {window.step}"


__all__ = ["Parser", "Pipeline", "collect_sequences", "iter_files", "make_pipeline", "read_records"]
