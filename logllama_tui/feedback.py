"""People's verdicts on flagged lines: the JSONL the TUI appends and `logllama finetune --feedback` reads.

One JSON object per line, UTF-8, appended and fsynced one record at a time (a crash loses at most
the record being written; a torn last line is reported with its line number, never guessed at).

| field | type | meaning |
|---|---|---|
| `version` | int | format version, always 1 |
| `time` | str | when the mark was made, ISO-8601 with time zone (UTC) |
| `model` | object | `{"name": str, "fingerprint": "sha256:<hex>"}`: the model whose verdict was judged; the fingerprint is the sha256 of its `parser.json`, i.e. of its key space |
| `file` | str | the log file as the TUI saw it |
| `line` | int | 1-based line number in `file` |
| `text` | str | the raw line |
| `key` | int | the line's log key under that model |
| `template` | str | the key's template |
| `verdict` | str | `false_positive` (flagged, but normal) or `anomaly` (confirmed anomalous) |
| `sequence` | str or null | the sequence (session/window) id the line was scored in, when known |

Unknown fields are an error (a newer writer), so is any other `version` or `verdict`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from logllama_tui.errors import BadCheckpoint, BadInput

FEEDBACK_VERSION = 1
VERDICTS = ("false_positive", "anomaly")
_FIELDS = ("version", "time", "model", "file", "line", "text", "key", "template", "verdict", "sequence")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class FeedbackRecord:
    """One person's verdict on one line, as written to the feedback JSONL."""

    file: str
    line: int
    """1-based line number in `file`."""
    text: str
    key: int
    template: str
    verdict: str
    """false_positive | anomaly."""
    model_name: str
    model_fingerprint: str
    """"sha256:<hex>" of the model's parser.json (see `model_fingerprint`)."""
    sequence: str | None = None
    time: str = field(default_factory=_now)
    version: int = FEEDBACK_VERSION

    @property
    def is_anomaly(self) -> bool:
        """True when the person confirmed the line as anomalous."""
        return self.verdict == "anomaly"

    def to_json(self) -> dict[str, Any]:
        """The record as the JSON object written to the file."""
        return {
            "version": self.version,
            "time": self.time,
            "model": {"name": self.model_name, "fingerprint": self.model_fingerprint},
            "file": self.file,
            "line": self.line,
            "text": self.text,
            "key": self.key,
            "template": self.template,
            "verdict": self.verdict,
            "sequence": self.sequence,
        }

    @classmethod
    def from_json(cls, data: Any) -> FeedbackRecord:
        """Validate one decoded JSON object; ValueError says what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("version") != FEEDBACK_VERSION:
            raise ValueError(f"unknown version {data.get('version')!r} (this logllama reads version 1)")
        unknown = set(data) - set(_FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {', '.join(sorted(unknown))}")
        missing = [f for f in _FIELDS if f not in data and f != "sequence"]
        if missing:
            raise ValueError(f"missing fields {', '.join(missing)}")
        if data["verdict"] not in VERDICTS:
            raise ValueError(f"unknown verdict {data['verdict']!r} (use false_positive or anomaly)")
        model = data["model"]
        if not (isinstance(model, dict) and set(model) == {"name", "fingerprint"}
                and all(isinstance(v, str) for v in model.values())):
            raise ValueError('"model" must be {"name": str, "fingerprint": str}')
        checks = {"time": str, "file": str, "text": str, "template": str}
        for name, kind in checks.items():
            if not isinstance(data[name], kind):
                raise ValueError(f'"{name}" must be a string')
        for name in ("line", "key"):
            if not isinstance(data[name], int) or isinstance(data[name], bool) or data[name] < 0:
                raise ValueError(f'"{name}" must be a non-negative integer')
        if data["line"] < 1:
            raise ValueError('"line" is 1-based')
        sequence = data.get("sequence")
        if sequence is not None and not isinstance(sequence, str):
            raise ValueError('"sequence" must be a string or null')
        try:
            datetime.fromisoformat(data["time"])
        except ValueError:
            raise ValueError(f'"time" is not ISO-8601: {data["time"]!r}') from None
        return cls(
            file=data["file"], line=data["line"], text=data["text"], key=data["key"],
            template=data["template"], verdict=data["verdict"], model_name=model["name"],
            model_fingerprint=model["fingerprint"], sequence=sequence, time=data["time"],
            version=data["version"],
        )


def logllama_home() -> Path:
    """The base data directory: $LOGLLAMA_HOME, else the platformdirs user data dir."""
    env = os.environ.get("LOGLLAMA_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("logllama"))


def default_feedback_path(model_name: str | None = None) -> Path:
    """Where the TUI appends marks: <home>/feedback/<model name>.jsonl (or feedback.jsonl)."""
    name = model_name or "feedback"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "feedback"
    return logllama_home() / "feedback" / f"{safe}.jsonl"


def model_fingerprint(checkpoint_dir: str | os.PathLike[str]) -> str:
    """"sha256:<hex>" of a checkpoint's parser.json: the identity of its key space."""
    path = Path(checkpoint_dir) / "parser.json"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BadCheckpoint(
            f"{checkpoint_dir}: no readable parser.json ({exc.strerror}); retrain the model "
            "with `logllama train`"
        ) from None
    return fingerprint_bytes(data)


def fingerprint_bytes(data: bytes) -> str:
    """"sha256:<hex>" of some bytes (a parser state as saved)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def append_feedback(path: str | os.PathLike[str], record: FeedbackRecord) -> None:
    """Append one record as one line; flushed and fsynced before returning."""
    FeedbackRecord.from_json(record.to_json())  # never write what we would refuse to read
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_feedback(
    path: str | os.PathLike[str],
    model_fingerprint: str | None = None,
    ignore_other_models: bool = False,
) -> list[FeedbackRecord]:
    """Every record of a feedback file, validated; BadInput names the first bad line.

    With `model_fingerprint`, a record made against another model is an error (its keys mean
    something else), unless `ignore_other_models` drops such records instead.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such feedback file; mark lines in `logllama tail` to create it, or pass the right path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read the feedback file ({exc})") from None
    records: list[FeedbackRecord] = []
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = FeedbackRecord.from_json(json.loads(text))
        except json.JSONDecodeError as exc:
            raise BadInput(f"{path}:{lineno}: not JSON ({exc.msg}); fix or delete that line") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise BadInput(f"{path}:{lineno}: not a logllama feedback record: {exc}; fix or delete that line") from None
        if model_fingerprint is not None and record.model_fingerprint != model_fingerprint:
            if ignore_other_models:
                continue
            raise BadInput(
                f"{path}:{lineno}: this mark was made against model {record.model_name!r} "
                f"({record.model_fingerprint[:19]}), not the one given; pass that model, or "
                "--ignore-other-models to skip such marks"
            )
        records.append(record)
    return records


__all__ = [
    "FEEDBACK_VERSION", "VERDICTS", "FeedbackRecord", "append_feedback", "read_feedback",
    "default_feedback_path", "model_fingerprint", "fingerprint_bytes", "logllama_home",
]
