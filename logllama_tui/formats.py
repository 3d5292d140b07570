"""Lines -> records: built-in log formats, loghub-style format strings, and sniffing for `--format auto`."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

from .errors import BadInput
from .records import Line, Record
from .timeparse import Clock, parse_date

CHECK_LINES = 20
"""A format string must match at least one of this many first non-empty lines."""

# The loghub 2k format strings of logpai's Drain benchmark (logparser/benchmark/Drain_benchmark.py).
LOGHUB_FORMATS: dict[str, str] = {
    "Android": "<Date> <Time>  <Pid>  <Tid> <Level> <Component>: <Content>",
    "Apache": r"\[<Time>\] \[<Level>\] <Content>",
    "BGL": "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
    "HDFS": "<Date> <Time> <Pid> <Level> <Component>: <Content>",
    "HPC": "<LogId> <Node> <Component> <State> <Time> <Flag> <Content>",
    "Hadoop": r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>",
    "HealthApp": r"<Time>\|<Component>\|<Pid>\|<Content>",
    "Linux": r"<Month> <Date> <Time> <Level> <Component>(\[<PID>\])?: <Content>",
    "Mac": r"<Month>  <Date> <Time> <User> <Component>\[<PID>\]( \(<Address>\))?: <Content>",
    "OpenSSH": r"<Date> <Day> <Time> <Component> sshd\[<Pid>\]: <Content>",
    "OpenStack": r"<Logrecord> <Date> <Time> <Pid> <Level> <Component> \[<ADDR>\] <Content>",
    "Proxifier": r"\[<Time>\] <Program> - <Content>",
    "Spark": "<Date> <Time> <Level> <Component>: <Content>",
    "Thunderbird": r"<Label> <Timestamp> <Date> <User> <Month> <Day> <Time> <Location> <Component>(\[<PID>\])?: <Content>",
    "Windows": "<Date> <Time>, <Level>                  <Component>    <Content>",
    "Zookeeper": r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
}

_TIME_HEADERS = ("timestamp", "year", "month", "date", "day", "time")
_SEVERITY = ("EMERG", "ALERT", "CRIT", "ERR", "WARNING", "NOTICE", "INFO", "DEBUG")


class LogFormat:
    """Turns lines into records. Line formats override `parse`; file formats override `records`."""

    name = "raw"
    default_window = "count"
    """The windowing used when no session id is found: "session", "time" or "count"."""

    def __init__(self) -> None:
        self.unmatched = 0
        """Lines that did not have this format's shape (kept, with content = the whole line)."""
        self.clock = Clock()

    def parse(self, line: Line) -> Record:
        """One line -> one record (the raw format: the whole line is the content)."""
        return Record(line.source, line.lineno, line.text, line.text.strip())

    def records(self, lines: Iterable[Line]) -> Iterator[Record]:
        """Every line as a record, in order; a line that does not fit still yields a record."""
        parse = self.parse
        for line in lines:
            yield parse(line)

    def _fallback(self, line: Line) -> Record:
        self.unmatched += 1
        return Record(line.source, line.lineno, line.text, line.text.strip())

    def __repr__(self) -> str:
        return f"<LogFormat {self.name}>"


class HdfsFormat(LogFormat):
    """`081109 203532 147 INFO dfs.DataNode$DataXceiver: Receiving block blk_1 ...`."""

    name = "hdfs"
    default_window = "session"

    def __init__(self) -> None:
        super().__init__()
        self._days: dict[str, float | None] = {}
        self._secs: dict[str, int] = {}

    def parse(self, line: Line) -> Record:
        text = line.text
        parts = text.split(None, 4)
        if len(parts) == 5:
            component, sep, content = parts[4].partition(": ")
            date, hms = parts[0], parts[1]
            if sep and len(date) == 6:
                day = self._days.get(date, -1.0)
                if day == -1.0:
                    day = self._days[date] = parse_date(date)[0]
                secs = self._secs.get(hms)
                if secs is None and len(hms) == 6 and hms.isdigit():
                    secs = self._secs[hms] = int(hms[:2]) * 3600 + int(hms[2:4]) * 60 + int(hms[4:])
                ts = None if day is None or secs is None else day + secs
                return Record(line.source, line.lineno, text, content.strip(), ts, parts[3], component)
        return self._fallback(line)


def _epoch(field: str, fine: str = "") -> float | None:
    """Epoch seconds from a digits field, refined by the microseconds at the end of `fine` if any."""
    if not field.isdigit():
        return None
    ts = float(field)
    head, dot, micro = fine.rpartition(".")
    if dot and micro.isdigit() and head:
        ts += int(micro) / 10 ** len(micro)
    return ts


class BglFormat(LogFormat):
    """`- 1117838570 2005.06.03 R02-M1-N0 2005-06-03-15.42.50.363779 R02-M1-N0 RAS KERNEL INFO msg`."""

    name = "bgl"
    default_window = "time"

    def parse(self, line: Line) -> Record:
        parts = line.text.strip().split(None, 9)
        if len(parts) >= 9 and parts[1].isdigit():
            content = parts[9] if len(parts) == 10 else ""
            return Record(line.source, line.lineno, line.text, content.strip(), _epoch(parts[1], parts[4]),
                          parts[8], parts[7], parts[0])
        return self._fallback(line)


_PROGRAM = re.compile(r"([^\s\[:]+)(?:\[[^\]\s]*\])?:(?:\s+|$)")


class ThunderbirdFormat(LogFormat):
    """`- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond[2916]: (root) CMD ...`."""

    name = "thunderbird"
    default_window = "time"

    def parse(self, line: Line) -> Record:
        parts = line.text.strip().split(None, 8)
        if len(parts) >= 8 and parts[1].isdigit():
            rest = parts[8] if len(parts) == 9 else ""
            m = _PROGRAM.match(rest)
            component, content = (m.group(1), rest[m.end():]) if m else (None, rest)
            return Record(line.source, line.lineno, line.text, content.strip(), float(parts[1]), None,
                          component, parts[0])
        return self._fallback(line)


_SD = r'(?:-|(?:\[(?:[^\]"\\]|\\.|"(?:[^"\\]|\\.)*")*\])+)'
_RFC5424 = re.compile(rf"^<(\d{{1,3}})>\d{{1,2}} (\S+) (\S+) (\S+) (\S+) (\S+) {_SD}(?: (.*))?$")
_CLASSIC = re.compile(
    r"^(?:<(\d{1,3})>)?"
    r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|[A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2}(?:\.\d+)?(?: \d{4})?)"
    r"\s+(\S+)\s+(.*)$"
)


class SyslogFormat(LogFormat):
    """Classic /var/log/syslog (`Jun 14 15:16:01 host prog[pid]: msg`), RFC 3164 and RFC 5424 lines."""

    name = "syslog"
    default_window = "time"

    def parse(self, line: Line) -> Record:
        text = line.text.strip()
        m = _CLASSIC.match(text)
        if m:
            pri, stamp, _host, rest = m.groups()
            p = _PROGRAM.match(rest)
            component, content = (p.group(1), rest[p.end():]) if p else (None, rest)
        else:
            m = _RFC5424.match(text)
            if not m:
                return self._fallback(line)
            pri, stamp, _host, component, _procid, _msgid, content = m.groups()
            content = (content or "").lstrip("\ufeff")
            component = None if component == "-" else component
        level = _SEVERITY[int(pri) % 8] if pri else None
        return Record(line.source, line.lineno, line.text, content.strip(), self.clock.parse(stamp), level,
                      component)


def pattern_regex(pattern: str) -> tuple[list[str], re.Pattern[str]]:
    """Compile a loghub format string like logpai's `generate_logformat_regex`: (headers, regex).

    Changed so that a line that does not fit cannot backtrack for ever (loghub's nested lazy
    `.*?` fields are polynomial in the line length): a field followed by only spaces matches one
    token (`\\S+`); a field followed by literal text (`: `, `\\]`, `|`) stops at the first place
    that literal fits, inside an atomic group; the last field takes the rest of the line. On the
    14 loghub 2k files this extracts exactly the Content of their *_structured.csv.
    """
    headers: list[str] = []
    regex = ""
    parts = re.split(r"(<[^<>]+>)", pattern)
    k = 0
    while k < len(parts):
        part = parts[k]
        if k % 2 == 0:
            regex += _literal(part)
            k += 1
            continue
        header = part.strip("<>")
        if not header.isidentifier() or header in headers:
            raise BadInput(f"format header <{header}> must be a unique name of letters, digits or _")
        headers.append(header)
        after = parts[k + 1] if k + 1 < len(parts) else ""
        if k + 2 >= len(parts) and after == "":
            regex += f"(?P<{header}>.*)"  # the last field takes the rest of the line
        elif after and after.strip(" ") == "":
            regex += rf"(?P<{header}>\S+)"  # a field before a space is one token
        elif after and _compiles(_literal(after)):
            # stop at the first place the literal after the field fits, and never come back
            regex += f"(?>(?P<{header}>.*?){_literal(after)})"
            k += 1
        else:
            regex += f"(?P<{header}>.*?)"
        k += 1
    if "Content" not in headers:
        raise BadInput(f"format string {pattern!r} has no <Content> field; add one for the message part")
    try:
        return headers, re.compile("^" + regex + "$")
    except re.error as exc:
        raise BadInput(f"format string {pattern!r} is not a valid pattern ({exc}); escape [ ] ( ) | as \\[ ...") from None


def _literal(text: str) -> str:
    """The regex for the text between two fields: runs of spaces match any whitespace, and a bare
    `|` is a literal bar (loghub writes `\\|`; `<Time>|<Content>` means the same, never "or")."""
    return re.sub(r"(?<!\\)\|", r"\\|", re.sub(" +", r"\\s+", text))


def _compiles(text: str) -> bool:
    """True when a literal between two fields is a regex on its own (no half-open group)."""
    try:
        re.compile(text)
    except re.error:
        return False
    return True


class PatternFormat(LogFormat):
    """A loghub-style format string such as `<Date> <Time> <Pid> <Level> <Component>: <Content>`."""

    def __init__(self, pattern: str, name: str | None = None) -> None:
        super().__init__()
        self.pattern = pattern
        self.name = name or pattern
        self.headers, self.regex = pattern_regex(pattern)
        lower = {h.lower(): self.regex.groupindex[h] for h in self.headers}
        self._content = lower["content"]
        self._level = lower.get("level")
        self._component = lower.get("component") or lower.get("program")
        self._label = lower.get("label")
        self._epoch = lower.get("timestamp")
        self._time = [lower[h] for h in _TIME_HEADERS if h in lower]
        self._time.sort()
        self.default_window = "time" if self._time else "count"

    def parse(self, line: Line) -> Record:
        m = self.regex.match(line.text.strip())
        if m is None:
            return self._fallback(line)
        g = m.group
        ts = None
        if self._epoch is not None:
            ts = _epoch(g(self._epoch))
        if ts is None and self._time:
            ts = self.clock.parse(" ".join(g(i) or "" for i in self._time))
        return Record(
            line.source, line.lineno, line.text, g(self._content),
            ts,
            g(self._level) if self._level else None,
            g(self._component) if self._component else None,
            g(self._label) if self._label else None,
        )

    def records(self, lines: Iterable[Line]) -> Iterator[Record]:
        """Like LogFormat.records, but a format string that fits none of the first lines is an error."""
        matched = False
        checked = 0
        first: str | None = None
        for line in lines:
            before = self.unmatched
            record = self.parse(line)
            if not matched:
                if self.unmatched == before:
                    matched = True
                elif line.text.strip():
                    checked += 1
                    first = first if first is not None else line.text
                    if checked >= CHECK_LINES:
                        raise BadInput(
                            f"format '{self.pattern}' matches none of the first {checked} lines of "
                            f"{line.source}; first line: {first[:200]!r}. Fix the format or use --format auto"
                        )
            yield record
        if not matched and checked:
            raise BadInput(
                f"format '{self.pattern}' matches no line of the input; first line: {first[:200]!r}. "  # type: ignore[index]
                "Fix the format or use --format auto"
            )


BUILTIN: dict[str, type[LogFormat]] = {
    "hdfs": HdfsFormat,
    "bgl": BglFormat,
    "thunderbird": ThunderbirdFormat,
    "syslog": SyslogFormat,
    "raw": LogFormat,
}
FILE_FORMATS = ("structured", "deeplog")
FORMAT_NAMES = (*BUILTIN, *FILE_FORMATS)


def is_pattern(text: str) -> bool:
    """True when `text` looks like a loghub format string (has a `<Name>` field)."""
    return re.search(r"<\w+>", text) is not None


def get_format(name_or_pattern: str, templates_path: str | None = None) -> LogFormat:
    """A fresh LogFormat for a built-in name, `loghub:<System>`, or a loghub-style format string."""
    key = name_or_pattern.strip()
    low = key.lower()
    if low in BUILTIN:
        return BUILTIN[low]()
    if low in FILE_FORMATS:
        from .parsed_formats import DeepLogFormat, StructuredFormat

        return StructuredFormat(templates_path) if low == "structured" else DeepLogFormat()
    system = key.split(":", 1)[1] if low.startswith("loghub:") else None
    if system is not None:
        match = {s.lower(): s for s in LOGHUB_FORMATS}.get(system.lower())
        if match is None:
            raise BadInput(f"unknown loghub system {system!r}; choose one of {', '.join(LOGHUB_FORMATS)}")
        return PatternFormat(LOGHUB_FORMATS[match], f"loghub:{match}")
    if is_pattern(key):
        return PatternFormat(key)
    raise BadInput(
        f"unknown format {name_or_pattern!r}; choose one of auto, {', '.join(FORMAT_NAMES)}, "
        "loghub:<System>, or give a format string such as '<Date> <Time> <Level> <Component>: <Content>'"
    )


def sniff_format(first_lines: Sequence[str], path: str = "") -> str:
    """The format name (or loghub format string) that fits a file starting with `first_lines`."""
    from .sniff import sniff_format as sniff  # sniff builds on this module's classes

    return sniff(first_lines, path)


def detect(path: str, lines: Sequence[str]) -> tuple[LogFormat, str]:
    """A fresh format sniffed from a file's first lines, and why ("sniffed from 20 lines")."""
    from .sniff import detect as sniff_detect

    return sniff_detect(path, lines)

__all__ = [
    "BUILTIN", "FORMAT_NAMES", "LOGHUB_FORMATS", "BglFormat", "HdfsFormat", "LogFormat", "PatternFormat",
    "SyslogFormat", "ThunderbirdFormat", "detect", "get_format", "is_pattern", "pattern_regex",
    "sniff_format",
]
