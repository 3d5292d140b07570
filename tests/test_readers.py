"""Readers: bytes -> lines, for plain and compressed files, directories, globs and stdin."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys
from pathlib import Path

import pytest

from logllama_tui.config import ReaderConfig
from logllama_tui.errors import BadInput
from logllama_tui.readers import ReadStats, expand_paths, iter_lines, rotation_order

SAMPLES = Path(__file__).resolve().parent.parent / "sample_logs"


def lines_of(path: Path | str, **kw: int) -> list[tuple[int, str, bool]]:
    cfg = ReaderConfig(**kw) if kw else ReaderConfig()
    return [(ln.lineno, ln.text, ln.truncated) for ln in iter_lines(str(path), cfg)]


def test_plain_lines_are_numbered_from_one_and_crlf_is_stripped(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_bytes(b"first\r\nsecond\n\nlast without newline")
    assert lines_of(p) == [(1, "first", False), (2, "second", False), (3, "", False),
                           (4, "last without newline", False)]


@pytest.mark.parametrize("opener, name", [(gzip.open, "x.gz"), (bz2.open, "x.bz2"), (lzma.open, "x.xz")])
def test_compressed_files_are_read_by_magic_bytes(tmp_path: Path, opener, name: str) -> None:
    body = b"".join(b"line %d\n" % i for i in range(1, 2001))
    with opener(tmp_path / name, "wb") as f:
        f.write(body)
    renamed = tmp_path / ("archive_without_extension_" + name.split(".")[1])
    os.rename(tmp_path / name, renamed)
    got = lines_of(renamed)
    assert len(got) == 2000
    assert got[0] == (1, "line 1", False) and got[-1] == (2000, "line 2000", False)


def test_invalid_utf8_is_replaced_and_counted(tmp_path: Path) -> None:
    p = tmp_path / "bad.log"
    p.write_bytes(b"ok\nbad \xff\xfe byte\nnul\x00inside\n")
    stats = ReadStats()
    got = [ln.text for ln in iter_lines(str(p), ReaderConfig(), stats)]
    assert got == ["ok", "bad \ufffd\ufffd byte", "nulinside"]
    assert (stats.lines, stats.invalid_utf8, stats.truncated, stats.files) == (3, 1, 0, 1)


def test_long_lines_are_cut_counted_and_never_dropped(tmp_path: Path) -> None:
    p = tmp_path / "long.log"
    p.write_bytes(b"short\n" + b"x" * 100 + b"\nafter\n" + b"y" * 50)
    stats = ReadStats()
    got = list(iter_lines(str(p), ReaderConfig(max_line_bytes=10), stats))
    assert [(ln.lineno, ln.text, ln.truncated) for ln in got] == [
        (1, "short", False), (2, "x" * 10, True), (3, "after", False), (4, "y" * 10, True)]
    assert stats.truncated == 2


def test_a_line_longer_than_a_read_chunk_is_cut_and_the_next_line_survives(tmp_path: Path) -> None:
    p = tmp_path / "huge.log"
    p.write_bytes(b"z" * (3 << 20) + b"\nnext\n")
    got = lines_of(p, max_line_bytes=1000)
    assert got == [(1, "z" * 1000, True), (2, "next", False)]


def test_a_cut_never_splits_a_utf8_character(tmp_path: Path) -> None:
    p = tmp_path / "utf.log"
    p.write_bytes("ééééé\n".encode())  # 10 bytes, 2 per character
    stats = ReadStats()
    got = [ln.text for ln in iter_lines(str(p), ReaderConfig(max_line_bytes=5), stats)]
    assert got == ["éé"] and stats.invalid_utf8 == 0


def test_empty_file_yields_nothing(tmp_path: Path) -> None:
    p = tmp_path / "empty.log"
    p.write_bytes(b"")
    assert lines_of(p) == []


def test_stdin_is_read_through_its_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BufferedReader(io.BytesIO(gzip.compress(b"a\r\nb\n"))))
    monkeypatch.setattr(sys, "stdin", fake)
    assert [(ln.source, ln.lineno, ln.text) for ln in iter_lines("-")] == [("-", 1, "a"), ("-", 2, "b")]


def test_sample_log_last_line_without_newline_is_kept() -> None:
    path = SAMPLES / "linux_sample.log"
    assert not path.read_bytes().endswith(b"\n")
    got = list(iter_lines(str(path)))
    assert len(got) == 2000 and got[-1].lineno == 2000 and got[-1].text.startswith("Jul 27")


def test_expand_paths_walks_directories_skipping_hidden_and_binary(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".git").mkdir()
    (tmp_path / "sub" / "b.log").write_text("b\n")
    (tmp_path / "a.log").write_text("a\n")
    (tmp_path / ".hidden.log").write_text("h\n")
    (tmp_path / ".git" / "c.log").write_text("c\n")
    (tmp_path / "image.bin").write_bytes(b"\x89PNG\x00\x00\x01")
    (tmp_path / "old.log.1.gz").write_bytes(gzip.compress(b"old\n"))
    got = [Path(p).relative_to(tmp_path).as_posix() for p in expand_paths([str(tmp_path)])]
    assert got == ["a.log", "old.log.1.gz", "sub/b.log"]


def test_expand_paths_globs_in_rotation_order_and_keeps_stdin(tmp_path: Path) -> None:
    for name in ["syslog", "syslog.1", "syslog.2.gz", "syslog.10.gz"]:
        (tmp_path / name).write_text("x\n")
    got = expand_paths([str(tmp_path / "syslog*"), "-"])
    assert [Path(p).name if p != "-" else p for p in got] == [
        "syslog.10.gz", "syslog.2.gz", "syslog.1", "syslog", "-"]
    assert sorted(["a.2", "a", "a.1"], key=rotation_order) == ["a.2", "a.1", "a"]


def test_expand_paths_drops_duplicates(tmp_path: Path) -> None:
    p = tmp_path / "a.log"
    p.write_text("a\n")
    assert expand_paths([str(p), str(p), str(tmp_path)]) == [str(p)]


@pytest.mark.parametrize("make, needle", [
    (lambda d: str(d / "missing.log"), "no such file or directory"),
    (lambda d: str(d / "nothing*.log"), "no files match"),
    (lambda d: (d / "emptydir").mkdir() or str(d / "emptydir"), "holds no log files"),
])
def test_expand_paths_bad_input_names_the_path(tmp_path: Path, make, needle: str) -> None:
    target = make(tmp_path)
    with pytest.raises(BadInput, match=needle) as err:
        expand_paths([target])
    assert os.path.basename(target) in str(err.value)


def test_expand_paths_with_nothing_given_is_bad_input() -> None:
    with pytest.raises(BadInput, match="no input"):
        expand_paths([])


def test_unreadable_file_is_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "secret.log"
    p.write_text("x\n")
    # root reads any file whatever its mode bits, so the permission check is made to say no
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(p))
    with pytest.raises(BadInput, match="permission denied") as err:
        expand_paths([str(p)])
    assert "secret.log" in str(err.value)


def test_truncated_archive_is_bad_input_not_a_traceback(tmp_path: Path) -> None:
    p = tmp_path / "cut.gz"
    whole = gzip.compress(b"".join(b"line %d\n" % i for i in range(10000)))
    p.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BadInput, match="is the archive complete"):
        list(iter_lines(str(p)))


def test_stats_count_while_reading_and_add_up_over_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    a.write_bytes(b"x\n" * 10000)
    b.write_bytes(b"y\n" * 5)
    stats = ReadStats()
    it = iter_lines(str(a), ReaderConfig(), stats)
    for _ in range(5000):
        next(it)
    assert stats.lines == 4096  # visible before the file ends
    list(it)
    list(iter_lines(str(b), ReaderConfig(), stats))
    assert (stats.lines, stats.files) == (10005, 2)
