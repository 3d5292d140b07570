"""Labels: session labels from a `BlockId,Label` CSV, inline alert labels, and sequence verdicts."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Mapping

from .errors import BadInput
from .records import Sequence

_VALUES = {"normal": False, "anomaly": True}


def load_session_labels(path: str | os.PathLike[str]) -> dict[str, bool]:
    """Session id -> True (anomalous) / False (normal) from a loghub anomaly_label.csv.

    The first non-blank line is a header of two columns, the second named Label; every other
    non-blank line is `<session id>,<Normal|Anomaly>` (any case). A BOM, CRLF line ends, blank
    lines and spaces around fields are accepted; anything else raises BadInput with its line.
    """
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8-sig", newline="") as f:
            rows = list(enumerate(csv.reader(f), start=1))
    except FileNotFoundError:
        raise BadInput(f"labels file {where} does not exist; pass a BlockId,Label CSV "
                       "(loghub's anomaly_label.csv) to --labels") from None
    except IsADirectoryError:
        raise BadInput(f"labels file {where} is a directory; pass a BlockId,Label CSV") from None
    except UnicodeDecodeError as exc:
        raise BadInput(f"labels file {where} is not UTF-8 text ({exc.reason}); pass a "
                       "BlockId,Label CSV") from None
    except (OSError, csv.Error) as exc:
        raise BadInput(f"cannot read labels file {where}: {exc}") from None
    rows = [(n, [c.strip() for c in row]) for n, row in rows if any(c.strip() for c in row)]
    if not rows:
        raise BadInput(f"labels file {where} is empty; it needs a BlockId,Label header and rows "
                       "such as blk_123,Anomaly")
    n, header = rows[0]
    if len(header) != 2 or header[1].lower() != "label":
        raise BadInput(f"{where}:{n}: header {','.join(header)!r} is not 'BlockId,Label'; the "
                       "labels file needs two columns, a session id and Label")
    labels: dict[str, bool] = {}
    for n, row in rows[1:]:
        if len(row) != 2 or not row[0]:
            raise BadInput(f"{where}:{n}: expected '<session id>,<Normal|Anomaly>', got "
                           f"{','.join(row)!r}")
        sid, value = row
        anomalous = _VALUES.get(value.lower())
        if anomalous is None:
            raise BadInput(f"{where}:{n}: label {value!r} is neither Normal nor Anomaly; fix "
                           "the line")
        if labels.get(sid, anomalous) != anomalous:
            raise BadInput(f"{where}:{n}: session {sid} is labelled both Normal and Anomaly; "
                           "keep one of its lines")
        labels[sid] = anomalous
    if not labels:
        raise BadInput(f"labels file {where} has a header but no labels; add rows such as "
                       "blk_123,Anomaly")
    return labels


def label_sequence(seq: Sequence, session_labels: Mapping[str, bool] | None = None,
                   session_regex: str | re.Pattern[str] | None = None) -> bool | None:
    """True anomalous, False normal, None unknown: a sequence is anomalous when any line is.

    A line is anomalous when it carries an inline alert label, or when a session it belongs to is
    labelled anomalous. The sequence's own id is looked up in `session_labels`; for time or count
    windows, whose ids are no session ids, pass `session_regex`: each record's sessions (the
    format's, else the regex's matches in its text) are looked up instead.
    """
    known = False
    for rec in seq.records:
        if rec.label is not None:
            if rec.label != "-":
                return True
            known = True
    if session_labels:
        verdict = session_labels.get(seq.sid)
        if verdict is not None:
            return verdict
        if session_regex is not None:
            verdict = _window_verdict(seq, session_labels, session_regex)
            if verdict is not None:
                return verdict
    return False if known else None


def _window_verdict(seq: Sequence, session_labels: Mapping[str, bool],
                    session_regex: str | re.Pattern[str]) -> bool | None:
    """The labels of the sessions named by a window's lines: True if any is anomalous."""
    regex = re.compile(session_regex) if isinstance(session_regex, str) else session_regex
    find: Callable[[str], list[str]] = regex.findall if regex.groups == 0 else (
        lambda text: [m.group(0) for m in regex.finditer(text)])
    known = False
    for rec in seq.records:
        ids = rec.sessions or find(rec.text)
        for sid in ids:
            verdict = session_labels.get(sid)
            if verdict:
                return True
            if verdict is not None:
                known = True
    return False if known else None


__all__ = ["label_sequence", "load_session_labels"]
