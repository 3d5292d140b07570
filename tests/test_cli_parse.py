"""`logllama parse`: the table, --json, --output, presets, and one clear line for each bad input."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from logllama_tui.cli import cli

HDFS_LINES = [
    "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865 terminating",
    "081109 203807 222 INFO dfs.DataNode$PacketResponder: PacketResponder 0 for block blk_-69522 terminating",
    "081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: "
    "10.251.73.220:50010 is added to blk_7128370237687728475 size 67108864",
    "081109 204106 329 INFO dfs.DataNode$PacketResponder: PacketResponder 2 for block blk_-6670 terminating",
    "081109 204132 26 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: "
    "10.251.43.115:50010 is added to blk_3050920587428079149 size 67108864",
    "081109 204324 34 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: "
    "10.251.203.80:50010 is added to blk_7888946331804732825 size 67108864",
    "081109 204453 34 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: "
    "10.250.11.85:50010 is added to blk_2377150260128098806 size 67108864",
    "081109 204525 512 INFO dfs.DataNode$PacketResponder: PacketResponder 2 for block blk_572492 terminating",
    "081109 204655 556 INFO dfs.DataNode$Receiving: Receiving block blk_-5623 src: /10.251.194.213:55333 "
    "dest: /10.251.194.213:50010",
]
T_RESP = "PacketResponder <NUM> for block <BLK> terminating"
T_ADDED = "BLOCK* NameSystem.addStoredBlock: blockMap updated: <IP> is added to <BLK> size <NUM>"
T_RECV = "Receiving block <BLK> src: /<IP> dest: /<IP>"


def run(*args: str):
    return CliRunner().invoke(cli, ["parse", *args])


@pytest.fixture
def hdfs(tmp_path: Path) -> Path:
    path = tmp_path / "hdfs.log"
    path.write_text("\n".join(HDFS_LINES) + "\n")
    return path


def test_json_counts_and_templates(hdfs: Path) -> None:
    result = run(str(hdfs), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"lines": 9, "templates": [
        {"key": 4, "template": T_RESP, "count": 4},
        {"key": 5, "template": T_ADDED, "count": 4},
        {"key": 6, "template": T_RECV, "count": 1},
    ]}
    assert "format: hdfs" in result.stderr


def test_table_lists_templates_by_count(hdfs: Path) -> None:
    result = run(str(hdfs), "--format", "hdfs")
    assert result.exit_code == 0, result.output
    cells = [ln.split("│")[1].strip() for ln in result.stdout.splitlines() if ln.startswith("│")]
    assert [c for c in cells if c] == ["4", "5", "6"]
    assert "9 lines, 3 templates, 1 file" in result.stdout
    assert result.stderr.strip() == "format: hdfs"


def test_output_csv_one_row_per_line(hdfs: Path, tmp_path: Path) -> None:
    out = tmp_path / "keys.csv"
    result = run(str(hdfs), "--json", "--output", str(out))
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["LineId", "Key", "Template"]
    assert rows[1:] == [[str(i), str(k), t] for i, (k, t) in enumerate(
        [(4, T_RESP), (4, T_RESP), (5, T_ADDED), (4, T_RESP), (5, T_ADDED), (5, T_ADDED), (5, T_ADDED),
         (4, T_RESP), (6, T_RECV)], 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hdfs.log", "keys.csv"]


def test_several_files_add_a_file_column(hdfs: Path, tmp_path: Path) -> None:
    other = tmp_path / "more.log.gz"
    with gzip.open(other, "wt") as fh:
        fh.write(HDFS_LINES[0] + "\n" + HDFS_LINES[8] + "\n")
    out = tmp_path / "keys.csv"
    result = run(str(hdfs), str(other), "--output", str(out), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["lines"] == 11
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["File", "LineId", "Key", "Template"]
    assert rows[-2:] == [[str(other), "1", "4", T_RESP], [str(other), "2", "6", T_RECV]]


def test_loghub_format_applies_its_preset(tmp_path: Path) -> None:
    log = tmp_path / "ssh.log"
    log.write_text(
        "Dec 10 06:55:46 LabSZ sshd[24200]: Invalid user webmaster from 173.234.31.186\n"
        "Dec 10 06:55:48 LabSZ sshd[24202]: Invalid user test from 52.80.34.196\n"
    )
    result = run(str(log), "--format", "loghub:OpenSSH", "--json")
    assert result.exit_code == 0, result.output
    assert "parser: preset OpenSSH" in result.stderr
    templates = json.loads(result.stdout)["templates"]
    assert [(t["template"], t["count"]) for t in templates] == [("Invalid user <*> from <IP>", 2)]
    plain = run(str(log), "--format", "loghub:OpenSSH", "--preset", "none", "--sim-th", "0.9", "--json")
    assert len(json.loads(plain.stdout)["templates"]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing.log"], "no such file or directory"),
        (["{tmp}/emptydir"], "holds no log files"),
        (["{tmp}/empty.log"], "is empty"),
        (["{tmp}/hdfs.log", "--format", "<Date> -- <Level> -- <Content>"], "matches no"),
        (["{tmp}/hdfs.log", "--format", "nonsense"], "unknown format"),
        (["{tmp}/hdfs.log", "--preset", "Windows95"], "unknown --preset"),
        (["{tmp}/hdfs.log", "--output", "{tmp}/nodir/keys.csv"], "does not exist"),
        (["{tmp}/hdfs.log", "--output", "{tmp}"], "is a directory"),
    ],
)
def test_bad_input_is_one_clear_line(hdfs: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "empty.log").write_text("")
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    err = result.stderr.strip().splitlines()
    assert err[-1].startswith("Error: ") and message in err[-1], err
    assert "Traceback" not in result.output
    assert not (tmp_path / "nodir").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.log", "emptydir", "hdfs.log"]


def test_bad_format_string_leaves_no_output_behind(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"plain line {i}\n" for i in range(50)))
    out = tmp_path / "keys.csv"
    out.write_text("previous")
    result = run(str(log), "--format", "<Date> -- <Level> -- <Content>", "--output", str(out))
    assert result.exit_code == 2
    assert out.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.csv", "x.log"]


def test_bad_option_value_is_a_usage_error(hdfs: Path) -> None:
    result = run(str(hdfs), "--sim-th", "2")
    assert result.exit_code == 2 and "Invalid value for '--sim-th'" in result.stderr


def test_stdin_is_read_as_raw_lines() -> None:
    result = CliRunner().invoke(cli, ["parse", "-", "--json"], input="a 1\na 2\nb x y\n")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"lines": 3, "templates": [
        {"key": 4, "template": "a <NUM>", "count": 2}, {"key": 5, "template": "b x y", "count": 1}]}
    assert result.stderr.strip() == "format: raw"
