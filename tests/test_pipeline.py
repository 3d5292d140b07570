"""The pipeline seam: files -> records -> keys -> labelled sequences."""

from __future__ import annotations

from pathlib import Path

import pytest

from logllama_tui.config import UNK, WindowConfig
from logllama_tui.errors import BadInput
from logllama_tui.pipeline import Pipeline, collect_sequences, read_records
from logllama_tui.records import Event, Record, Sequence
from logllama_tui.windows import SessionWindower

HDFS = [
    "081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:1 dest: /10.0.0.2:50010",
    "081109 203518 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /a/b. blk_2",
    "081109 203519 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_2 src: /10.0.0.1:1 dest: /10.0.0.2:50010",
    "081109 203520 145 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_1 terminating",
    "081109 203521 19 INFO dfs.FSDataset: Deleting block blk_1 file /a/blk_1",
    "081109 203522 19 INFO dfs.FSNamesystem: BLOCK* ask 10.0.0.1:50010 to replicate blk_2 to datanode(s) 10.0.0.3:50010",
    "081109 203523 19 INFO dfs.FSNamesystem: Roll Edit Log",
]


class FakeParser:
    """Keys by the first two words of the content; `match` gives UNK for unseen ones."""

    def __init__(self) -> None:
        self.keys: dict[str, int] = {}
        self.learned = 0

    def learn(self, record: Record) -> Event:
        self.learned += 1
        name = " ".join(record.content.split()[:2])
        key = self.keys.setdefault(name, 4 + len(self.keys))
        return Event(record, key, name)

    def match(self, record: Record) -> Event:
        name = " ".join(record.content.split()[:2])
        return Event(record, self.keys.get(name, UNK), name)


def shape(seqs: list[Sequence]) -> list[tuple[str, list[tuple[int, int]], bool | None]]:
    return [(s.sid, [(r.lineno, k) for r, k in zip(s.records, s.keys, strict=True)], s.label)
            for s in seqs]


@pytest.fixture
def hdfs_file(tmp_path: Path) -> Path:
    path = tmp_path / "hdfs.log"
    path.write_text("\n".join(HDFS) + "\n")
    return path


def test_read_records_sniffs_the_format_and_says_so(hdfs_file: Path) -> None:
    notes: list[str] = []
    records = list(read_records([str(hdfs_file)], notice=notes.append))
    assert notes == [f"{hdfs_file}: format hdfs (sniffed from 7 lines)"]
    assert [r.lineno for r in records] == [1, 2, 3, 4, 5, 6, 7]
    assert records[3].content == "PacketResponder 1 for block blk_1 terminating"
    assert records[1].timestamp is not None and records[2].timestamp - records[1].timestamp == 1


def test_read_records_named_format_reads_every_file_in_order(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("one\ntwo\n")
    (tmp_path / "b.log").write_text("three\n")
    records = list(read_records([str(tmp_path)], fmt="raw"))
    assert [(Path(r.source).name, r.lineno, r.content) for r in records] == [
        ("a.log", 1, "one"), ("a.log", 2, "two"), ("b.log", 1, "three")]


def test_read_records_bad_format_or_path_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput):
        list(read_records([str(tmp_path / "missing.log")]))
    (tmp_path / "a.log").write_text("x\n")
    with pytest.raises(BadInput, match="unknown format 'nosuch'"):
        list(read_records([str(tmp_path / "a.log")], fmt="nosuch"))


def test_collect_sequences_hdfs_sessions_with_labels(hdfs_file: Path) -> None:
    notes: list[str] = []
    parser = FakeParser()
    seqs = collect_sequences([str(hdfs_file)], "auto", parser, WindowConfig(),
                             session_labels={"blk_1": False, "blk_2": True}, learn=True,
                             notice=notes.append)
    assert notes[1] == r"window: session (sessions by blk_-?\d+, idle timeout 86400 s)"
    assert shape(seqs) == [
        ("blk_1", [(1, 4), (4, 6), (5, 7)], False),
        ("blk_2", [(2, 5), (3, 4), (6, 8)], True),
    ]
    assert parser.learned == 7


def test_pipeline_counts_and_matches_without_learning(hdfs_file: Path) -> None:
    parser = FakeParser()
    parser.keys = {"Receiving block": 4, "Deleting block": 5}
    pipe = Pipeline(parser, SessionWindower(WindowConfig(mode="session")), {"blk_1": True})
    out: list[Sequence] = []
    for record in read_records([str(hdfs_file)], fmt="hdfs"):
        out += pipe.feed(record)
    out += pipe.flush()
    assert shape(out) == [
        ("blk_1", [(1, 4), (4, UNK), (5, 5)], True),
        ("blk_2", [(2, UNK), (3, 4), (6, UNK)], None),
    ]
    assert (pipe.lines, pipe.events, pipe.sequences, pipe.orphans) == (7, 7, 2, 1)
    assert pipe.labelled == {True: 1, False: 0, None: 1}
    assert parser.learned == 0


def test_collect_sequences_count_windows_per_file_with_window_labels(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("go blk_1\ngo blk_1\nstop blk_2\nstop blk_2\nend\n")
    (tmp_path / "b.log").write_text("go\nend\n")
    seqs = collect_sequences([str(tmp_path)], "raw", FakeParser(),
                             WindowConfig(mode="count", window_size=2, step=2),
                             session_labels={"blk_1": False, "blk_2": True}, learn=True)
    assert [(Path(s.sid).name, s.keys, s.label) for s in seqs] == [
        ("a.log#1", [4, 4], False), ("a.log#3", [5, 5], True), ("b.log#1", [7, 6], None),
        ("a.log#5", [6], None)]


def test_pipeline_expire_labels_what_it_closes() -> None:
    clock = iter([0.0, 1.0]).__next__
    pipe = Pipeline(FakeParser(), SessionWindower(WindowConfig(mode="session", session_timeout=5),
                                                  clock=clock), {"blk_7": True}, learn=True)
    pipe.feed(Record("x", 1, "a blk_7", "a blk_7"))
    pipe.feed(Record("x", 2, "b blk_8", "b blk_8"))
    assert shape(pipe.expire(5.5)) == [("blk_7", [(1, 4)], True)]
    assert pipe.sequences == 1


def test_pipeline_key_then_feed_event_equals_feed() -> None:
    pipe = Pipeline(FakeParser(), SessionWindower(WindowConfig(mode="session", max_open_sessions=1)),
                    {"blk_1": True}, learn=True)
    event = pipe.key(Record("x", 1, "a blk_1", "a blk_1"))
    assert (event.key, event.template) == (4, "a blk_1")
    assert pipe.feed_event(event) == []
    closed = pipe.feed(Record("x", 2, "b blk_2", "b blk_2"))
    assert shape(closed) == [("blk_1", [(1, 4)], True)]
    assert pipe.lines == 2


def test_real_parser_gives_the_same_keys_when_matching_what_it_learned(hdfs_file: Path) -> None:
    from logllama_tui.parser import LogParser

    parser = LogParser()
    learned = collect_sequences([str(hdfs_file)], "hdfs", parser, WindowConfig(), learn=True)
    matched = collect_sequences([str(hdfs_file)], "hdfs", parser, WindowConfig())
    assert [s.sid for s in learned] == ["blk_1", "blk_2"]
    assert [s.keys for s in matched] == [s.keys for s in learned]
    assert all(k >= 4 for s in matched for k in s.keys)
