"""The feedback JSONL: round trip, validation with line numbers, other models, default path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logllama_tui.errors import BadCheckpoint, BadInput
from logllama_tui.feedback import (
    FeedbackRecord,
    append_feedback,
    default_feedback_path,
    fingerprint_bytes,
    model_fingerprint,
    read_feedback,
)

FP = "sha256:" + "a" * 64


def _record(**over) -> FeedbackRecord:
    base = dict(file="/var/log/x.log", line=7, text="blk_1 Receiving block", key=5,
                template="<BLK> Receiving block", verdict="false_positive",
                model_name="hdfs", model_fingerprint=FP, sequence="blk_1",
                time="2026-11-23T18:00:00+00:00")
    base.update(over)
    return FeedbackRecord(**base)


def test_round_trip_appends_one_line_each(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "fb.jsonl"
    append_feedback(path, _record())
    append_feedback(path, _record(line=9, verdict="anomaly", sequence=None))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    assert json.loads(lines[0]) == {
        "version": 1, "time": "2026-11-23T18:00:00+00:00",
        "model": {"name": "hdfs", "fingerprint": FP}, "file": "/var/log/x.log", "line": 7,
        "text": "blk_1 Receiving block", "key": 5, "template": "<BLK> Receiving block",
        "verdict": "false_positive", "sequence": "blk_1",
    }
    got = read_feedback(path, model_fingerprint=FP)
    assert got == [_record(), _record(line=9, verdict="anomaly", sequence=None)]
    assert [r.is_anomaly for r in got] == [False, True]


def test_default_time_is_iso_utc() -> None:
    rec = FeedbackRecord(file="f", line=1, text="t", key=4, template="t", verdict="anomaly",
                         model_name="m", model_fingerprint=FP)
    assert rec.time.endswith("+00:00") and rec.version == 1


@pytest.mark.parametrize(
    ("bad", "needle"),
    [
        ("{not json", ":2: not JSON"),
        (json.dumps({**_record().to_json(), "version": 2}), ":2: not a logllama feedback record: unknown version 2"),
        (json.dumps({**_record().to_json(), "verdict": "meh"}), ":2: not a logllama feedback record: unknown verdict 'meh'"),
        (json.dumps({**_record().to_json(), "extra": 1}), "unknown fields extra"),
        (json.dumps({**_record().to_json(), "line": 0}), '"line" is 1-based'),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_bad_lines_name_their_line(tmp_path: Path, bad: str, needle: str) -> None:
    path = tmp_path / "fb.jsonl"
    path.write_text(json.dumps(_record().to_json()) + "\n" + bad + "\n", encoding="utf-8")
    with pytest.raises(BadInput) as err:
        read_feedback(path)
    assert needle in str(err.value)
    assert str(path) in str(err.value)


def test_other_model_is_refused_unless_ignored(tmp_path: Path) -> None:
    path = tmp_path / "fb.jsonl"
    append_feedback(path, _record())
    append_feedback(path, _record(model_name="bgl", model_fingerprint="sha256:" + "b" * 64, line=3))
    with pytest.raises(BadInput, match=r"fb.jsonl:2: this mark was made against model 'bgl'"):
        read_feedback(path, model_fingerprint=FP)
    assert [r.line for r in read_feedback(path, FP, ignore_other_models=True)] == [7]
    assert len(read_feedback(path)) == 2


def test_missing_file_and_blank_lines(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such feedback file"):
        read_feedback(tmp_path / "nope.jsonl")
    path = tmp_path / "fb.jsonl"
    path.write_text("\n" + json.dumps(_record().to_json()) + "\n\n", encoding="utf-8")
    assert len(read_feedback(path)) == 1


def test_refuses_to_write_an_invalid_record(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown verdict"):
        append_feedback(tmp_path / "fb.jsonl", _record(verdict="bogus"))
    assert not (tmp_path / "fb.jsonl").exists()


def test_default_path_and_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGLLAMA_HOME", str(tmp_path))
    assert default_feedback_path() == tmp_path / "feedback" / "feedback.jsonl"
    assert default_feedback_path("my model/x") == tmp_path / "feedback" / "my_model_x.jsonl"
    (tmp_path / "parser.json").write_bytes(b"{}")
    assert model_fingerprint(tmp_path) == fingerprint_bytes(b"{}") == (
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a")
    with pytest.raises(BadCheckpoint, match="parser.json"):
        model_fingerprint(tmp_path / "none")
