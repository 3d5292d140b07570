"""`--format auto`: guess a log's format from its first lines, and say why."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from .formats import LOGHUB_FORMATS, LogFormat, get_format, pattern_regex

SNIFF_LINES = 20
"""Lines read from the start of a file to guess its format."""
MIN_SHARE = 0.8
"""Share of the sniffed lines a shape must fit to be chosen."""

_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("deeplog", re.compile(r"^\d+(?:[ \t]+\d+)*[ \t]*$")),
    ("bgl", re.compile(r"^\S+ \d{9,10} \d{4}\.\d{2}\.\d{2} \S+ \d{4}-\d{2}-\d{2}-\d{2}\.\d{2}\.\d{2}\.\d+ \S+ ")),
    ("thunderbird", re.compile(r"^\S+ \d{9,10} \d{4}\.\d{2}\.\d{2} \S+ [A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2} ")),
    ("hdfs", re.compile(r"^\d{6} \d{6} \d+ [A-Z]+ \S+: ")),
    ("syslog", re.compile(
        r"^(?:<\d{1,3}>\d{1,2} \d{4}-\d{2}-\d{2}T\S+ \S+ \S+ \S+ \S+ "
        r"|(?:<\d{1,3}>)?[A-Z][a-z]{2} +\d{1,2} \d{2}:\d{2}:\d{2}(?:\.\d+)? \S+ \S"
        r"|(?:<\d{1,3}>)?\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}) \S+ [^\s:]+:)"
    )),
)
# Loghub systems whose shape a built-in already covers, or too loose to tell apart (HPC: any 7+ words).
_SKIP_PATTERNS = {"HDFS", "BGL", "Thunderbird", "Linux", "Mac", "OpenSSH", "HPC"}
_PATTERNS = [(s, pattern_regex(p)[1]) for s, p in LOGHUB_FORMATS.items() if s not in _SKIP_PATTERNS]


def _norm(name: str) -> str:
    return name.strip().strip('"').lower().replace("_", "")


def _is_structured_header(line: str) -> bool:
    """A CSV header with an event id column (loghub `*_structured.csv`, `label,time,event_id`)."""
    return "," in line and "eventid" in {_norm(c) for c in line.split(",")}


def sniff_format(first_lines: Sequence[str], path: str = "") -> str:
    """The best format name (or loghub format string) for a file that starts with `first_lines`."""
    lines = [ln.strip() for ln in first_lines if ln.strip()]
    if lines and _is_structured_header(lines[0]):
        return "structured"
    if not lines:
        return "raw"
    need = max(1, int(len(lines) * MIN_SHARE + 0.999))
    for name, shape in _SHAPES:
        if sum(1 for ln in lines if shape.match(ln)) >= need:
            return name
    best: tuple[int, int, str] | None = None
    for system, regex in _PATTERNS:
        hits = sum(1 for ln in lines if regex.match(ln))
        if hits >= need:
            score = (hits, regex.groups, LOGHUB_FORMATS[system])
            best = score if best is None or score > best else best
    if best is not None:
        return best[2]
    return "raw"


def detect(path: str, lines: Sequence[str]) -> tuple[LogFormat, str]:
    """The sniffed format for `path` and a reason the CLI can print ("sniffed from 20 lines")."""
    name = sniff_format(lines, path)
    fmt = get_format(name)
    n = sum(1 for ln in lines if ln.strip())
    label = next((f"loghub:{s}" for s, p in LOGHUB_FORMATS.items() if p == name), name)
    if name == "structured":
        reason = f"CSV header of {os.path.basename(path) or path} has an event id column"
    elif n == 0:
        reason = "no lines to sniff; every line is content"
    else:
        reason = f"sniffed from {n} line{'s' if n != 1 else ''}"
    if label != name:
        fmt.name = label
    return fmt, reason


__all__ = ["MIN_SHARE", "SNIFF_LINES", "detect", "sniff_format"]
