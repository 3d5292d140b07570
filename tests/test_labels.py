"""Session label files and sequence labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from logllama_tui.errors import BadInput
from logllama_tui.labels import label_sequence, load_session_labels
from logllama_tui.records import Record, Sequence


def write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    return path


def test_load_labels_tolerates_bom_crlf_blank_lines_and_case(tmp_path: Path) -> None:
    path = write(tmp_path, b"\xef\xbb\xbfBlockId,Label\r\nblk_1,Normal\r\n\r\nblk_-2, ANOMALY \r\nblk_3,anomaly\n")
    assert load_session_labels(path) == {"blk_1": False, "blk_-2": True, "blk_3": True}


def test_load_labels_bad_header_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"\nBlockId;Label\nblk_1;Normal\n")
    with pytest.raises(BadInput, match=r"labels\.csv:2: header 'BlockId;Label' is not 'BlockId,Label'"):
        load_session_labels(path)


def test_load_labels_bad_value_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"BlockId,Label\nblk_1,Normal\nblk_2,Maybe\n")
    with pytest.raises(BadInput, match=r"labels\.csv:3: label 'Maybe' is neither Normal nor Anomaly"):
        load_session_labels(path)


def test_load_labels_wrong_column_count_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"BlockId,Label\nblk_1,Normal,extra\n")
    with pytest.raises(BadInput, match=r"labels\.csv:2: expected '<session id>,<Normal\|Anomaly>'"):
        load_session_labels(path)


def test_load_labels_conflicting_duplicate_is_bad_input(tmp_path: Path) -> None:
    path = write(tmp_path, b"BlockId,Label\nblk_1,Normal\nblk_1,Normal\nblk_1,Anomaly\n")
    with pytest.raises(BadInput, match=r"labels\.csv:4: session blk_1 is labelled both"):
        load_session_labels(path)


def test_load_labels_missing_empty_and_header_only(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        load_session_labels(tmp_path / "nope.csv")
    with pytest.raises(BadInput, match="is empty"):
        load_session_labels(write(tmp_path, b"\n\n"))
    with pytest.raises(BadInput, match="has a header but no labels"):
        load_session_labels(write(tmp_path, b"BlockId,Label\n"))
    with pytest.raises(BadInput, match="is a directory"):
        load_session_labels(tmp_path)


def rec(lineno: int, text: str = "x", label: str | None = None,
        sessions: tuple[str, ...] = ()) -> Record:
    return Record("f.log", lineno, text, text, label=label, sessions=sessions)


def test_inline_labels_any_alert_makes_the_sequence_anomalous() -> None:
    assert label_sequence(Sequence("f#1", [4, 5], [rec(1, label="-"), rec(2, label="KERNDTLB")])) is True
    assert label_sequence(Sequence("f#1", [4, 5], [rec(1, label="-"), rec(2, label="-")])) is False
    assert label_sequence(Sequence("f#1", [4], [rec(1)])) is None


def test_session_labels_by_sequence_id() -> None:
    labels = {"blk_1": True, "blk_2": False}
    assert label_sequence(Sequence("blk_1", [4], [rec(1)]), labels) is True
    assert label_sequence(Sequence("blk_2", [4], [rec(1)]), labels) is False
    assert label_sequence(Sequence("blk_3", [4], [rec(1)]), labels) is None
    assert label_sequence(Sequence("blk_2", [4], [rec(1, label="APPREAD")]), labels) is True


def test_windows_take_the_labels_of_the_sessions_their_lines_name() -> None:
    labels = {"blk_1": False, "blk_2": True}
    normal = Sequence("f#1", [4, 4], [rec(1, "a blk_1"), rec(2, "b")])
    mixed = Sequence("f#3", [4, 4], [rec(3, "a blk_1"), rec(4, "b", sessions=("blk_2",))])
    unknown = Sequence("f#5", [4], [rec(5, "blk_9")])
    assert label_sequence(normal, labels, r"blk_-?\d+") is False
    assert label_sequence(mixed, labels, r"blk_-?\d+") is True
    assert label_sequence(unknown, labels, r"blk_-?\d+") is None
    assert label_sequence(mixed, labels) is None  # no regex: a window id is no session id


def test_real_hdfs_label_file_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "shared/data/hdfs/HDFS_dev_anomaly_label.csv"
    if not path.exists():
        pytest.skip("shared data not present")
    labels = load_session_labels(path)
    assert (len(labels), sum(labels.values())) == (8012, 248)
