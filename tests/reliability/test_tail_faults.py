"""`logllama tail --plain --json --all`, end to end: every line exactly once, whatever the file does.

One tail process follows one file per fault; a writer thread per file emits numbered lines and
injects its fault. Where a fault destroys bytes the follower cannot have read yet (truncation,
copytruncate, replacing a file with restricted permissions) the writer first waits until the
follower has delivered what was written, as a real follower could not do better; everywhere else
it does not wait. At the end every number of every file must be out exactly once, in order.

Default sizes: a burst of 20,000 lines at once (200,000 with LOGLLAMA_FULL_RELIABILITY=1), three
lines of 1 MiB. As root, tail runs without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH (setpriv), so a
file with mode 000 really is unreadable to it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from rel_helpers import FULL
from rel_tail import TailRun, Writer, can_drop_dac, run_scenarios

BURST = 200_000 if FULL else 20_000
MIB = 1 << 20


TAGS = ["ready", "rename", "copytrunc", "delete", "trunc", "truncsame", "symlink", "late", "vanish",
        "perm", "partial", "huge", "binary", "badutf", "crlf", "burst"]


@dataclass
class Outcome:
    """What one tail run printed, and what the writers wrote."""

    run: TailRun
    writers: dict[str, Writer]
    rc: int
    err: str
    drop: bool
    partial_no: int
    texts: dict[str, list[str]]


@pytest.fixture(scope="module")
def outcome(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    """Run every fault at once against one tail process (its start-up costs seconds)."""
    tmp_path = tmp_path_factory.mktemp("tail")
    tags = TAGS
    d = tmp_path / "logs"
    d.mkdir()
    w = {t: Writer(t, d / f"{t}.log") for t in tags}
    for t in tags:
        if t != "late":
            w[t].emit(5)  # existing content, replayed by --from-start
    drop = can_drop_dac()
    partial_no = [0]
    run = TailRun([w[t].path for t in tags], tiny_ckpt, tmp_path, drop_dac=drop)
    try:
        run.wait_for("ready", 5, timeout=180)  # the model is loaded and lines flow

        def synced(t: str) -> None:
            run.wait_for(t, len(w[t].expected))

        def rename() -> None:  # logrotate's default: rename, the app writes on, then reopens
            x = w["rename"]
            x.emit(40)
            for i in range(3):
                old = d / f"rename.log.{i}"
                os.rename(x.path, old)
                x.emit(10, old)  # the app still holds the old file
                x.emit(30)  # reopened: a new file at the path
                synced("rename")  # the follower must see each new file before the next rotation

        def copytrunc() -> None:  # logrotate copytruncate, new lines land before the next poll
            x = w["copytrunc"]
            x.emit(40)
            synced("copytrunc")
            shutil.copy(x.path, d / "copytrunc.log.1")
            with open(x.path, "r+b") as fh:
                fh.truncate(0)
            x.emit(200)  # more bytes than before the truncation: size alone cannot tell

        def delete() -> None:
            x = w["delete"]
            x.emit(40)
            x.path.unlink()
            x.emit(40)

        def trunc() -> None:
            x = w["trunc"]
            x.emit(60)
            synced("trunc")
            os.truncate(x.path, 0)
            x.emit(10)

        def truncsame() -> None:  # truncated and rewritten to exactly the size it had
            x = w["truncsame"]
            x.emit(20)
            synced("truncsame")
            size = x.path.stat().st_size
            count = size // 50 - 1
            lengths = [50] * count + [size - 50 * count]  # new lines, exactly `size` bytes in all
            data = b"".join(f"truncsame {x.take():07d} ".encode().ljust(n - 1, b"y") + b"\n"
                            for n in lengths)
            assert len(data) == size
            with open(x.path, "r+b") as fh:
                fh.truncate(0)
                fh.write(data)

        def symlink() -> None:
            x = w["symlink"]
            x.emit(30)
            target = d / "symlink.target"
            x.emit(20, target)
            tmp = d / "symlink.tmp"
            os.symlink(target, tmp)
            os.replace(tmp, x.path)  # the path is now a symlink to another file
            x.emit(20)

        def late() -> None:
            x = w["late"]
            time.sleep(0.5)
            x.emit(40)  # created now: read from its first line
            x.emit(40)

        def vanish() -> None:
            x = w["vanish"]
            x.emit(40)
            x.path.unlink()  # never comes back

        def perm() -> None:
            x = w["perm"]
            x.emit(20)
            synced("perm")
            os.rename(x.path, d / "perm.log.1")
            fd = os.open(x.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o000)
            os.close(fd)
            x.emit(20)  # written by root into a file tail cannot open yet
            time.sleep(1.0)
            x.path.chmod(0o644)  # restored
            x.emit(20)

        def partial() -> None:
            x = w["partial"]
            x.emit(10)
            n = partial_no[0] = x.take()
            x.write(f"partial {n:07d} first half".encode())
            time.sleep(1.0)  # many polls see the unfinished line
            x.write(b" second half\n")
            x.emit(10)

        def huge() -> None:
            x = w["huge"]
            for _ in range(3):
                n = x.take()
                x.write(f"huge {n:07d} ".encode() + b"x" * MIB + b"\n")
                x.emit(5)

        def odd_bytes(tag: str, tail: bytes) -> Callable[[], None]:
            """Ten numbered lines ending in `tail`, then five plain ones."""
            def scenario() -> None:
                x = w[tag]
                for _ in range(10):
                    x.write(f"{tag} {x.take():07d} ".encode() + tail)
                x.emit(5)
            return scenario

        binary = odd_bytes("binary", b"\x00\x01\x02\x00\xff\xfe\x7f\x00 end\n")
        badutf = odd_bytes("badutf", b"caf\xc3 \xe9t\xe9 \xed\xa0\x80 \xf0\x28\n")

        def crlf() -> None:
            x = w["crlf"]
            x.write(x.lines(30, b"\r\n"))

        def burst() -> None:
            x = w["burst"]
            x.write(x.lines(BURST))  # one write, as from a process dumping its buffer

        scenarios: list[Callable[[], None]] = [rename, copytrunc, delete, trunc, truncsame, symlink,
                                               late, vanish, perm, partial, huge, binary, badutf,
                                               crlf, burst]
        errors = run_scenarios(scenarios)
        assert not errors, errors
        deadline = time.monotonic() + (600 if FULL else 60)
        for t in tags:  # one shared deadline: a missing line must not cost a timeout per file
            try:
                run.wait_for(t, len(w[t].expected), timeout=max(0.1, deadline - time.monotonic()))
            except AssertionError:
                pass
        time.sleep(1.5)  # more polls and a directory rescan: a duplicate would show up now
    finally:
        rc = run.stop()
    texts = {t: [str(row["text"]) for _, row in run.rows.get(t, [])] for t in tags}
    return Outcome(run, w, rc, run.stderr(), drop, partial_no[0], texts)


def test_tail_exits_cleanly(outcome: Outcome) -> None:
    assert outcome.rc == 0, outcome.err
    assert "Traceback" not in outcome.err, outcome.err
    assert not outcome.run.bad, outcome.run.bad[:5]


@pytest.mark.parametrize("tag", TAGS)
def test_every_number_exactly_once_in_order(outcome: Outcome, tag: str) -> None:
    got, want = outcome.run.numbers(tag), outcome.writers[tag].expected
    missing = sorted(set(want) - set(got))
    dups = sorted({n for n in got if got.count(n) > 1}) if len(got) < 5000 else []
    assert got == want, (f"{tag}: {len(got)} lines out of {len(want)}; missing {missing[:10]} "
                         f"({len(missing)}), duplicated {dups[:10]}", outcome.err[-1500:])
    files = {str(row["file"]) for _, row in outcome.run.rows[tag]}
    assert files == {str(outcome.writers[tag].path)}


def test_partial_line_is_one_line_once_completed(outcome: Outcome) -> None:
    n = outcome.partial_no
    assert [s for s in outcome.texts["partial"] if "half" in s] == \
        [f"partial {n:07d} first half second half"]


def test_megabyte_lines_are_cut_not_dropped(outcome: Outcome) -> None:
    texts = outcome.texts["huge"]
    assert all(len(s.encode()) <= 64 * 1024 for s in texts)  # cut at --max-line-bytes
    assert sum(len(s) > 60_000 for s in texts) == 3


def test_nul_binary_and_invalid_utf8_bytes(outcome: Outcome) -> None:
    binary, bad = outcome.texts["binary"][5:15], outcome.texts["badutf"][5:15]
    assert len(binary) == 10 and all("\x00" not in s and s.endswith(" end") for s in binary)
    assert len(bad) == 10 and all("\ufffd" in s for s in bad)


def test_crlf_endings_are_stripped(outcome: Outcome) -> None:
    texts = outcome.texts["crlf"]
    assert len(texts) == 35 and all("\r" not in s for s in texts)


def test_unreadable_file_is_reported_then_followed(outcome: Outcome) -> None:
    if not outcome.drop:  # not root: chmod 000 bites without setpriv
        assert os.geteuid() != 0
    assert "permission denied" in outcome.err, outcome.err
