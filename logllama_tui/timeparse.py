"""Log timestamps -> epoch seconds (UTC), fast: dates are parsed once and cached, times by a regex."""

from __future__ import annotations

import calendar
import re
import time
from functools import lru_cache

MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_MONTH_NAMES = "|".join(MONTHS)
_TIME = re.compile(r"(?<!\d)(\d{1,2}):(\d{2}):(\d{2})(?:[.,:](\d{1,9}))?(?!\d)")
_TIME_DOTTED = re.compile(r"(?<!\d)(\d{2})\.(\d{2})\.(\d{2})(?:\.(\d{1,9}))?(?!\d)")
_YMD = re.compile(r"(?<!\d)((?:19|20)\d{2})[-/.]?(\d{1,2})[-/.]?(\d{1,2})(?!\d)")
_YMD_SHORT = re.compile(r"(?<!\d)(\d{2})/(\d{2})/(\d{2})(?!\d)")
_YYMMDD = re.compile(r"^\s*(\d{2})(\d{2})(\d{2})\b")
_MONTH_DAY = re.compile(rf"(?i)\b({_MONTH_NAMES})[a-z]*\.?\s+(\d{{1,2}})\b")
_YEAR = re.compile(r"(?<!\d)((?:19|20)\d{2})(?!\d)")
_MM_DD = re.compile(r"(?<![\d.])(\d{1,2})[-.](\d{1,2})(?![\d.])")
_HALF_YEAR = 183 * 86400.0


def _midnight(year: int, month: int, day: int) -> float | None:
    if not (1 <= month <= 12 and 1 <= day <= 31 and 1900 <= year <= 2200):
        return None
    return float(calendar.timegm((year, month, day, 0, 0, 0)))


@lru_cache(maxsize=4096)
def parse_date(text: str) -> tuple[float | None, int, int]:
    """(epoch of that midnight or None when the year is missing, month, day); (None, 0, 0) if no date."""
    m = _YMD.search(text)
    if m:
        y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
        return _midnight(y, mo, d), mo, d
    m = _YMD_SHORT.search(text) or _YYMMDD.search(text)
    if m:
        y, mo, d = 2000 + int(m.group(1)), int(m.group(2)), int(m.group(3))
        return _midnight(y, mo, d), mo, d
    m = _MONTH_DAY.search(text)
    if m:
        mo, d = MONTHS[m.group(1).lower()[:3]], int(m.group(2))
        rest = text[: m.start()] + " " + text[m.end() :]
        y = _YEAR.search(rest)
        return (_midnight(int(y.group(1)), mo, d) if y else None), mo, d
    m = _MM_DD.search(text)
    if m:
        mo, d = int(m.group(1)), int(m.group(2))
        if 1 <= mo <= 12 and 1 <= d <= 31:
            return None, mo, d
    return None, 0, 0


def _clock(text: str) -> tuple[float, int, int] | None:
    """(seconds since midnight, start, end) of the time of day in `text`."""
    m = _TIME.search(text) or _TIME_DOTTED.search(text)
    if m is None:
        return None
    h, mi, s, frac = m.groups()
    secs = int(h) * 3600 + int(mi) * 60 + int(s)
    if frac:
        secs += int(frac) / 10 ** len(frac)
    return float(secs), m.start(), m.end()


class Clock:
    """Parses one log's timestamps; year-less dates get a year that keeps the clock monotone."""

    def __init__(self, year: int | None = None) -> None:
        self.year = year if year is not None else time.gmtime().tm_year
        self.last: float | None = None

    def parse(self, text: str) -> float | None:
        """Epoch seconds for a timestamp such as "081109 203532", "Jun 14 15:16:01", "2017-05-16 00:00:00.008"."""
        text = text.strip()
        if text.isdigit() and len(text) >= 9:
            return float(text[:10]) + (int(text[10:]) / 10 ** len(text[10:]) if len(text) > 10 else 0.0)
        parts = text.split()
        if len(parts) == 2 and len(parts[0]) == 6 and len(parts[1]) == 6 and text.replace(" ", "").isdigit():
            day, _, _ = parse_date(parts[0])  # HDFS: yymmdd HHMMSS
            t = parts[1]
            return None if day is None else day + int(t[:2]) * 3600 + int(t[2:4]) * 60 + int(t[4:])
        found = _clock(text)
        if found is None:
            secs, date_text = 0.0, text
        else:
            secs, start, end = found
            date_text = text[:start] + " " + text[end:]
        day, month, mday = parse_date(date_text)
        if day is None and month:
            day = _midnight(self.year, month, mday)
            if day is not None and self.last is not None and day + secs < self.last - _HALF_YEAR:
                self.year += 1  # December -> January: a new year began
                day = _midnight(self.year, month, mday)
        if day is None:
            return None if found is None else self._monotone(secs)
        value = day + secs
        self.last = value
        return value

    def _monotone(self, secs: float) -> float:
        """A time of day with no date: keep counting days from the last value so the clock never runs back."""
        if self.last is None:
            value = secs
        else:
            base = self.last - self.last % 86400
            value = base + secs
            if value < self.last - 43200:
                value += 86400
        self.last = value
        return value


__all__ = ["Clock", "MONTHS", "parse_date"]
