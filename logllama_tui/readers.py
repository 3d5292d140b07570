"""Bytes -> lines: plain and compressed files, directories, globs and stdin, never fatal on bad bytes."""

from __future__ import annotations

import bz2
import glob
import gzip
import lzma
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

from .config import ReaderConfig
from .errors import BadInput
from .records import Line

STDIN = "-"
DEFAULT_READER = ReaderConfig()
CHUNK = 1 << 20
"""Bytes asked for per read: large enough that splitting dominates, small enough to stream."""

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gz"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_GLOB_CHARS = re.compile(r"[*?\[]")
_ROTATION = re.compile(r"^(?P<base>.*?)(?:\.(?P<num>\d{1,3}))?(?P<ext>\.(?:gz|bz2|xz))?$")


@dataclass
class ReadStats:
    """What the reader saw: counts a CLI can report after a run."""

    lines: int = 0
    truncated: int = 0
    """Lines longer than ReaderConfig.max_line_bytes, cut (never dropped)."""
    invalid_utf8: int = 0
    """Lines with bytes that did not decode and were replaced by U+FFFD."""
    files: int = 0


def compression_of(head: bytes) -> str | None:
    """The compression ("gz", "bz2", "xz") announced by a file's first bytes, or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def _looks_binary(path: str) -> bool:
    """True for files that are neither text nor a compressed log (NUL bytes near the start)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return compression_of(head) is None and b"\x00" in head


def rotation_order(path: str) -> tuple[str, int, str]:
    """Sort key that puts rotated logs oldest first: syslog.3.gz, syslog.2.gz, syslog.1, syslog."""
    m = _ROTATION.match(path)
    assert m is not None  # the pattern matches any string
    num = m.group("num")
    base = m.group("base") if num is not None or m.group("ext") else path
    return (base, -int(num) if num is not None else 0, path)


def _check_readable(path: str) -> None:
    if not os.access(path, os.R_OK):
        raise BadInput(f"cannot read {path}: permission denied; fix its permissions or pick another file")


def _walk(directory: str) -> list[str]:
    """Every non-hidden, non-binary file under `directory`, recursively."""
    found: list[str] = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = os.path.join(root, name)
            if name.startswith(".") or not os.path.isfile(path) or _looks_binary(path):
                continue
            found.append(path)
    return sorted(found, key=rotation_order)


def rotated_siblings(path: str) -> list[str]:
    """`path` and its rotations (path.1, path.2.gz, path-20261122[.gz]), oldest first."""
    if not os.path.isfile(path):
        raise BadInput(f"no such file: {path}; check the path")
    sibling = re.compile(re.escape(path) + r"(?:\.\d{1,3}|-\d{8})?(?:\.(?:gz|bz2|xz))?$")
    found = [p for p in glob.glob(glob.escape(path) + "[.-]*") if sibling.fullmatch(p) and os.path.isfile(p)]
    order = sorted(found, key=rotation_order)
    dated = sorted(p for p in order if re.search(r"-\d{8}", p[len(path):]))  # date suffixes: old first
    return dated + [p for p in order if p not in dated] + [path]


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Files, directories (recursive, hidden files skipped), globs and "-" -> readable files, in order."""
    if not paths:
        raise BadInput("no input given: name a log file, a directory, a glob or - for stdin")
    out: list[str] = []
    for p in paths:
        if p == STDIN:
            out.append(STDIN)
        elif os.path.isdir(p):
            files = _walk(p)
            if not files:
                raise BadInput(f"directory {p} holds no log files; point at a directory with logs in it")
            out.extend(files)
        elif os.path.exists(p):
            if not os.path.isfile(p) and not _is_stream(p):
                raise BadInput(f"{p} is not a regular file; give a log file or a directory")
            _check_readable(p)
            out.append(p)
        elif _GLOB_CHARS.search(p):
            matches = [m for m in glob.glob(p, recursive=True) if os.path.isfile(m)]
            if not matches:
                raise BadInput(f"no files match {p}; check the pattern (quote it so the shell leaves it alone)")
            out.extend(sorted(matches, key=rotation_order))
        else:
            raise BadInput(f"no such file or directory: {p}; check the path")
    for p in out:
        if p != STDIN:
            _check_readable(p)
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]  # type: ignore[func-returns-value]


def _is_stream(path: str) -> bool:
    """Named pipes and character devices (e.g. /dev/stdin) are readable like files."""
    import stat

    mode = os.stat(path).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def open_binary(path: str) -> IO[bytes]:
    """Open `path` (or stdin for "-") for binary reading, decompressing by magic bytes."""
    if path == STDIN:
        raw: IO[bytes] = sys.stdin.buffer
        peek = getattr(raw, "peek", None)
        head = peek(8)[:8] if peek is not None else b""
        kind = compression_of(head)
        return _decompressor(kind, raw) if kind else raw
    try:
        f = open(path, "rb")  # noqa: SIM115 - returned to the caller, closed by iter_lines
    except FileNotFoundError:
        raise BadInput(f"no such file: {path}; check the path") from None
    except PermissionError:
        raise BadInput(f"cannot read {path}: permission denied; fix its permissions") from None
    except IsADirectoryError:
        raise BadInput(f"{path} is a directory; name the files in it or pass the directory to expand") from None
    kind = compression_of(f.peek(8)[:8])
    return _decompressor(kind, f) if kind else f


def _decompressor(kind: str, raw: IO[bytes]) -> IO[bytes]:
    if kind == "gz":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "bz2":
        return bz2.BZ2File(raw, "rb")  # type: ignore[return-value]
    return lzma.LZMAFile(raw, "rb")  # type: ignore[return-value]


def _cut(data: bytes, limit: int) -> bytes:
    """`data[:limit]`, backed off to a UTF-8 character boundary so the cut adds no U+FFFD."""
    cut = data[:limit]
    for back in range(1, min(4, len(cut)) + 1):
        b = cut[-back]
        if b & 0xC0 != 0x80:  # a lead byte (or ASCII): does its sequence fit?
            need = 1 if b < 0x80 else 2 if b >> 5 == 0b110 else 3 if b >> 4 == 0b1110 else 4
            return cut if need <= back else cut[:-back]
    return cut


def _split_chunks(f: IO[bytes], limit: int) -> Iterator[tuple[bytes, bool]]:
    """(line bytes without "\\n", truncated) for every line of `f`, reading in large chunks."""
    read = getattr(f, "read1", f.read)
    buf = b""
    skipping = False  # discarding the rest of a line already yielded cut
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        if skipping:
            i = chunk.find(b"\n")
            if i < 0:
                continue
            chunk = chunk[i + 1 :]
            skipping = False
        parts = (buf + chunk).split(b"\n") if buf else chunk.split(b"\n")
        buf = parts.pop()
        for part in parts:
            if len(part) > limit:
                yield _cut(part, limit), True
            else:
                yield part, False
        if len(buf) > limit:
            yield _cut(buf, limit), True
            buf = b""
            skipping = True
    if buf and not skipping:
        yield buf, False


def iter_lines(
    path: str, config: ReaderConfig = DEFAULT_READER, stats: ReadStats | None = None
) -> Iterator[Line]:
    """Every line of `path` ("-" = stdin) as a Line: 1-based numbers, no line ending, never dropped.

    Compressed input (gz, bz2, xz) is recognised by its magic bytes. A trailing "\\r" is removed,
    invalid bytes become U+FFFD, NUL bytes are removed, and a line longer than
    `config.max_line_bytes` is cut there and marked `truncated`.
    """
    encoding = config.encoding
    limit = max(1, config.max_line_bytes)
    f = open_binary(path)
    if stats is not None:
        stats.files += 1
    n = truncated = invalid = 0
    flushed = [0, 0, 0]  # what stats already holds of this file: kept live for progress views

    def flush() -> None:
        if stats is not None:
            stats.lines += n - flushed[0]
            stats.truncated += truncated - flushed[1]
            stats.invalid_utf8 += invalid - flushed[2]
            flushed[:] = [n, truncated, invalid]

    try:
        for raw, cut in _split_chunks(f, limit):
            n += 1
            if not n & 4095:
                flush()
            if raw.endswith(b"\r") and not cut:
                raw = raw[:-1]
            if b"\x00" in raw:
                raw = raw.replace(b"\x00", b"")
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError:
                text = raw.decode(encoding, errors="replace")
                invalid += 1
            if cut:
                truncated += 1
                yield Line(path, n, text, True)
            else:
                yield Line(path, n, text)
    except (OSError, EOFError, lzma.LZMAError) as exc:
        raise BadInput(f"cannot read {path} past line {n}: {exc}; is the archive complete?") from None
    finally:
        flush()
        if path != STDIN:
            f.close()


def iter_all_lines(
    paths: Sequence[str], config: ReaderConfig = DEFAULT_READER, stats: ReadStats | None = None
) -> Iterator[Line]:
    """The lines of each expanded path in turn."""
    for path in expand_paths(paths):
        yield from iter_lines(path, config, stats)


__all__ = [
    "ReadStats", "STDIN", "compression_of", "expand_paths", "iter_all_lines", "iter_lines",
    "open_binary", "rotation_order", "rotated_siblings",
]
