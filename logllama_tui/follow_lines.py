"""Bytes in, lines out, incrementally: the follower's splitter (a partial last line waits)."""

from __future__ import annotations

from .config import ReaderConfig
from .records import Line

_READER = ReaderConfig()


class LineSplitter:
    """Bytes in, complete decoded lines out; holds the partial last line; cuts over-long lines."""

    def __init__(self, source: str, config: ReaderConfig = _READER) -> None:
        self.source = source
        self.limit = max(1, config.max_line_bytes)
        self.encoding = config.encoding
        self.lineno = 0
        self.buf = b""
        self.skipping = False
        """Discarding the rest of a line already emitted cut."""

    def feed(self, data: bytes) -> list[Line]:
        """Lines completed by `data`."""
        out: list[Line] = []
        if self.skipping:
            i = data.find(b"\n")
            if i < 0:
                return out
            data = data[i + 1:]
            self.skipping = False
        parts = (self.buf + data).split(b"\n") if self.buf else data.split(b"\n")
        self.buf = parts.pop()
        for part in parts:
            out.append(self._line(part))
        if len(self.buf) > self.limit:
            out.append(self._line(self.buf))
            self.buf, self.skipping = b"", True
        return out

    def flush(self) -> list[Line]:
        """The partial last line as a line (end of a file), or nothing."""
        self.skipping = False
        if not self.buf:
            return []
        raw, self.buf = self.buf, b""
        return [self._line(raw)]

    def _line(self, raw: bytes) -> Line:
        cut = len(raw) > self.limit
        if cut:
            raw = _cut(raw, self.limit)
        elif raw.endswith(b"\r"):
            raw = raw[:-1]
        if b"\x00" in raw:
            raw = raw.replace(b"\x00", b"")
        self.lineno += 1
        return Line(self.source, self.lineno, raw.decode(self.encoding, errors="replace"), cut)


def _cut(data: bytes, limit: int) -> bytes:
    """`data[:limit]` backed off to a UTF-8 character boundary."""
    cut = data[:limit]
    for back in range(1, min(4, len(cut)) + 1):
        b = cut[-back]
        if b & 0xC0 != 0x80:
            need = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4
            return cut if need <= back else cut[:-back]
    return cut


__all__ = ["LineSplitter"]
