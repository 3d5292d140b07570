"""Already-parsed inputs: loghub `*_structured.csv` files and DeepLog key-sequence files."""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable, Iterator

from .errors import BadInput
from .formats import CHECK_LINES, LogFormat
from .records import Line, Record

_NORMAL_LABELS = {"-", "", "normal", "0", "false", "no"}
_TIME_COLUMNS = ("timestamp", "year", "month", "date", "day", "time")


def norm_column(name: str) -> str:
    """Column names compare case-insensitively, ignoring `_`, spaces and a BOM."""
    return name.strip().lstrip("\ufeff").lower().replace("_", "").replace(" ", "")


def read_templates(path: str) -> dict[str, str]:
    """EventId -> EventTemplate from a loghub `*_templates.csv`."""
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            rows = csv.reader(f)
            header = [norm_column(c) for c in next(rows, [])]
            if "eventid" not in header or "eventtemplate" not in header:
                raise BadInput(f"{path} has no EventId/EventTemplate columns; give a loghub *_templates.csv")
            i, j = header.index("eventid"), header.index("eventtemplate")
            return {row[i]: row[j] for row in rows if len(row) > max(i, j)}
    except OSError as exc:
        raise BadInput(f"cannot read templates file {path}: {exc.strerror}; check the path") from None


def find_templates(csv_path: str) -> str | None:
    """A templates file next to a structured CSV (X_templates.csv, X.log_templates.csv, *templates*.csv)."""
    folder = os.path.dirname(csv_path) or "."
    base = os.path.basename(csv_path)
    candidates = [os.path.join(folder, base.replace("_structured", "_templates"))] if "_structured" in base else []
    candidates += sorted(glob.glob(os.path.join(glob.escape(folder), "*templates*.csv")))
    prefix = base.split("_")[0].lower()
    candidates.sort(key=lambda p: not os.path.basename(p).lower().startswith(prefix))  # same system first
    for path in candidates:
        if path == csv_path or not os.path.isfile(path):
            continue
        try:
            with open(path, newline="", encoding="utf-8", errors="replace") as f:
                header = {norm_column(c) for c in next(csv.reader(f), [])}
        except OSError:
            continue
        if {"eventid", "eventtemplate"} <= header:
            return path
    return None


class StructuredFormat(LogFormat):
    """A CSV with an EventId column (loghub `*_structured.csv`, or `label,time,event_id`)."""

    name = "structured"
    default_window = "time"

    def __init__(self, templates_path: str | None = None) -> None:
        super().__init__()
        self.templates_path = templates_path
        """Where EventTemplate comes from when the CSV has no such column (found next to it if None)."""

    def parse(self, line: Line) -> Record:
        """Structured CSVs are read whole (they have a header); a single line cannot be parsed."""
        raise BadInput("format 'structured' reads whole CSV files; it cannot follow a live log")

    def records(self, lines: Iterable[Line]) -> Iterator[Record]:
        """One record per CSV row; the header row of each file is read first."""
        source_lines = iter(lines)
        while True:
            first = next(source_lines, None)
            if first is None:
                return
            yield from self._file(first, source_lines)

    def _file(self, first: Line, rest: Iterator[Line]) -> Iterator[Record]:
        header = next(csv.reader([first.text]), [])
        cols = {norm_column(c): i for i, c in enumerate(header)}
        if "eventid" not in cols:
            raise BadInput(
                f"{first.source} has no EventId (or event_id) column in its header {first.text[:120]!r}; "
                "use a loghub *_structured.csv or pick another --format"
            )
        eid, tpl, content_i = cols["eventid"], cols.get("eventtemplate"), cols.get("content")
        label_i = cols.get("label")
        level_i, comp_i = cols.get("level"), cols.get("component")
        time_is = sorted(cols[c] for c in _TIME_COLUMNS if c in cols)
        templates: dict[str, str] = {}
        if tpl is None:
            path = self.templates_path or find_templates(first.source)
            if path:
                templates = read_templates(path)
                self.templates_path = path
        pending: list[Line] = []
        held: list[Line] = []

        def texts() -> Iterator[str]:
            for line in rest:
                if line.source != first.source:
                    held.append(line)
                    return
                pending.append(line)
                yield line.text + "\n"

        width = len(header)
        for row in csv.reader(texts()):
            line = pending[0]
            text = "\n".join(ln.text for ln in pending) if len(pending) > 1 else line.text
            pending.clear()
            if len(row) < width:
                self.unmatched += 1
                row = row + [""] * (width - len(row))
            event_id = row[eid]
            template = row[tpl] if tpl is not None else templates.get(event_id)
            content = row[content_i] if content_i is not None else (template or event_id)
            label = None
            if label_i is not None:
                raw = row[label_i].strip()
                label = "-" if raw.lower() in _NORMAL_LABELS else raw
            ts = self.clock.parse(" ".join(row[i] for i in time_is)) if time_is else None
            yield Record(
                line.source, line.lineno, text, content, ts,
                row[level_i] if level_i is not None else None,
                row[comp_i] if comp_i is not None else None,
                label, (), event_id, template,
            )
        if held:
            yield from self._file(held[0], rest)


class DeepLogFormat(LogFormat):
    """DeepLog key files: one session per line, space-separated keys; each key becomes a record."""

    name = "deeplog"
    default_window = "session"

    def parse(self, line: Line) -> Record:
        """DeepLog lines hold whole sessions; use `records`."""
        raise BadInput("format 'deeplog' reads whole sessions per line; it cannot follow a live log")

    def records(self, lines: Iterable[Line]) -> Iterator[Record]:
        """Every key of every session line, in order; an empty line (empty session) yields nothing."""
        good = bad = 0
        for line in lines:
            keys = line.text.split()
            if not keys:
                continue
            if all(k.isdigit() for k in keys):
                good += 1
            else:
                bad += 1
                self.unmatched += 1
                if not good and bad >= CHECK_LINES:
                    raise BadInput(
                        f"{line.source} does not look like a DeepLog key file (first line: "
                        f"{line.text[:120]!r}); its lines must be space-separated integer keys"
                    )
            sid = (f"{line.source}#{line.lineno}",)
            src, n, text = line.source, line.lineno, line.text
            for key in keys:
                yield Record(src, n, text, key, None, None, None, None, sid, key)


__all__ = ["DeepLogFormat", "StructuredFormat", "find_templates", "norm_column", "read_templates"]
