"""`logllama scan` end to end on a small synthetic HDFS log with a tiny trained model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from logllama_tui.cli import cli

torch.set_num_threads(1)

HEAD = "081109 2036{:02d} 148 INFO "
NORMAL = [
    "dfs.DataNode$DataXceiver: Receiving block {b} src: /10.250.19.102:54106 dest: /10.250.19.102:50010",
    "dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /mnt/hadoop/part-00001. {b}",
    "dfs.DataNode$PacketResponder: PacketResponder 1 for block {b} terminating",
    "dfs.DataNode$PacketResponder: Received block {b} of size 67108864 from /10.250.10.6",
]
UNSEEN = ("dfs.DataNode$DataXceiver: writeBlock {b} received exception java.io.IOException: "
          "Could not read from stream")


def write_hdfs(folder: Path, n_normal: int = 40) -> tuple[Path, Path, list[str]]:
    """A log of whole sessions (normal ones, one with an unseen line, one cut short) + labels."""
    lines: list[str] = []
    labels = ["BlockId,Label"]
    anomalous: list[str] = []
    for i in range(n_normal + 2):
        blk = f"blk_{1000 + i}"
        steps = [t.format(b=blk) for t in NORMAL]
        if i == n_normal:  # an exception nobody trained on
            steps = steps[:2] + [UNSEEN.format(b=blk)] + steps[2:]
        elif i == n_normal + 1:  # the session stops early: no final "Received block"
            steps = steps[:3]
        if i >= n_normal:
            anomalous.append(blk)
        lines += [HEAD.format(i % 60) + s for s in steps]
        labels.append(f"{blk},{'Anomaly' if i >= n_normal else 'Normal'}")
    log = folder / "tiny_hdfs.log"
    log.write_text("\n".join(lines) + "\n")
    lab = folder / "tiny_labels.csv"
    lab.write_text("\n".join(labels) + "\n")
    return log, lab, anomalous


def train_tiny(folder: Path, log: Path, lab: Path, train_fraction: float | None = None,
               arch: str = "llama", name: str = "model") -> Path:
    """A 1-layer, hidden-16 model trained by the library on the normal sessions of `log`.

    The exception line is cut out of the training file, so its template stays unseen.
    """
    from logllama_tui.config import ModelConfig, TrainConfig, WindowConfig, to_dict
    from logllama_tui.labels import load_session_labels
    from logllama_tui.parser import LogParser
    from logllama_tui.pipeline import collect_sequences
    from logllama_tui.train import train

    train_log = folder / f"{name}_train.log"
    train_log.write_text("".join(ln for ln in log.read_text().splitlines(keepends=True)
                                 if "IOException" not in ln))
    parser = LogParser()
    window = WindowConfig()
    seqs = collect_sequences([str(train_log)], "hdfs", parser, window,
                             load_session_labels(lab), learn=True)
    model_cfg = ModelConfig(arch=arch, n_layers=1, n_heads=2, hidden=16, head_dim=8,
                            intermediate=32, max_positions=64, lstm_hidden=16, lstm_layers=1,
                            embed_dim=8)
    train_cfg = TrainConfig(epochs=40, batch_size=8, lr=0.02, patience=40, device="cpu",
                            threads=1, train_fraction=train_fraction, warmup_steps=2)
    meta = {"log_format": "hdfs", "window": to_dict(window),
            "detect": {"k": "0.5", "target_fpr": 0.01}}
    return train(seqs, parser, model_cfg, train_cfg, folder / name, meta).path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, list[str]]:
    folder = tmp_path_factory.mktemp("scan")
    log, lab, anomalous = write_hdfs(folder)
    return log, lab, train_tiny(folder, log, lab), anomalous


def test_scan_flags_the_anomalies_and_writes_jsonl(trained, tmp_path) -> None:
    log, lab, model, anomalous = trained
    out = tmp_path / "found.jsonl"
    result = CliRunner().invoke(cli, ["scan", str(log), "--model", str(model), "--k", "1",
                                      "--labels", str(lab), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Model: {model}" in result.stderr
    assert "Lines:               168" in result.stdout
    assert "Sequences:           42" in result.stdout
    assert "recall 1.000" in result.stdout
    records = [json.loads(line) for line in out.read_text().splitlines()]
    unseen = [r for r in records if r["kind"] == "unseen"]
    assert len(unseen) == 1 and unseen[0]["sequence"] == anomalous[0]
    assert unseen[0]["line"] == 40 * 4 + 3 and "IOException" in unseen[0]["text"]
    assert unseen[0]["file"] == str(log) and unseen[0]["k"] == 1
    early = [r for r in records if r["sequence"] == anomalous[1]]
    assert early and early[-1]["key"] == 2 and early[-1]["kind"] == "rank"  # the end was missed
    cands = early[-1]["candidates"]
    assert cands and {"key", "template", "prob"} <= set(cands[0])
    assert "Received block" in cands[0]["template"]  # what it expected instead of the end


def test_scan_csv_and_fail_on_anomaly(trained, tmp_path) -> None:
    log, _lab, model, _ = trained
    out = tmp_path / "found.csv"
    result = CliRunner().invoke(cli, ["scan", str(log), "--model", str(model), "--k", "1",
                                      "--output", str(out), "--fail-on-anomaly"])
    assert result.exit_code == 1, result.output
    rows = list(csv.DictReader(out.open()))
    assert rows and set(rows[0]) == {"file", "line", "text", "key", "template", "rank", "k", "kind",
                                     "sequence", "candidates"}
    assert isinstance(json.loads(rows[0]["candidates"]), list)


def test_scan_of_normal_lines_exits_zero_with_fail_on_anomaly(trained, tmp_path) -> None:
    log, _lab, model, _ = trained
    clean = tmp_path / "clean.log"
    clean.write_text("".join(log.read_text().splitlines(keepends=True)[:8]))
    result = CliRunner().invoke(cli, ["scan", str(clean), "--model", str(model), "--k", "3",
                                      "--fail-on-anomaly"])
    assert result.exit_code == 0, result.output
    assert "Anomalous sequences: 0" in result.stdout


def test_scan_errors_are_one_line(trained, tmp_path) -> None:
    log, _lab, model, _ = trained
    runner = CliRunner()
    bad_k = runner.invoke(cli, ["scan", str(log), "--model", str(model), "--k", "999"])
    assert bad_k.exit_code == 2 and "out of range" in bad_k.stderr
    assert "Traceback" not in bad_k.output
    missing = runner.invoke(cli, ["scan", str(log), "--model", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "Error:" in missing.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "model.safetensors").write_bytes(b"garbage")
    corrupt = runner.invoke(cli, ["scan", str(log), "--model", str(broken)])
    assert corrupt.exit_code == 2 and "corrupt" in corrupt.stderr
    ext = runner.invoke(cli, ["scan", str(log), "--model", str(model), "--output",
                              str(tmp_path / "x.txt")])
    assert ext.exit_code == 2 and ".jsonl or .csv" in ext.stderr
    assert not list(tmp_path.glob(".x.txt*"))


def test_no_model_and_no_shipped_model(tmp_path, monkeypatch) -> None:
    log = tmp_path / "app.log"
    log.write_text("hello world 1\nhello world 2\n")
    monkeypatch.setattr("logllama_tui.resolve.default_model_for", lambda name, root=None: None)
    result = CliRunner().invoke(cli, ["scan", str(log)])
    assert result.exit_code == 2
    assert "no --model given and no shipped model for format" in result.stderr


def test_unseen_lines_are_summarised_and_written_with_their_own_template(tmp_path: Path) -> None:
    from logllama_tui.cli.scan import Report
    from logllama_tui.config import UNK
    from logllama_tui.parser import LogParser
    from logllama_tui.records import Record, Sequence
    from logllama_tui.scoring import KeyVerdict, ScoredSequence

    parser = LogParser()
    parser.learn(Record("a.log", 1, "disk ok", "disk ok"))
    odd = Record("a.log", 2, "kernel panic at 0x1f", "kernel panic at 0x1f")
    seq = Sequence("s1", [UNK], [odd], label=True)
    verdict = KeyVerdict(UNK, 2, True, "unseen", [])
    end = KeyVerdict(2, 0, False, None, [])
    summary = Report(parser, k=1)
    records: list[dict] = []

    class Sink:
        def write(self, record: dict) -> None:
            records.append(record)

    summary.add([ScoredSequence(seq, [verdict], end, True)], Sink())
    assert records[0]["template"] == "kernel panic at <HEX>" and records[0]["kind"] == "unseen"
    assert dict(summary.flagged) == {"<unseen> kernel panic at <HEX>": 1}


@pytest.mark.parametrize("arch", ["llama", "deeplog"])
def test_sessions_open_to_the_end_are_ranked_early_and_both_engines_agree(trained, tmp_path,
                                                                          monkeypatch, arch) -> None:
    """The log twice, as two files: every block comes back in the second copy, so no session
    closes before the end; the two-core engine ranks them as they grow (llama: the prefix trie;
    the LSTM gets Scorer in two workers at the close) and prints what inline prints."""
    from logllama_tui import fastscan

    log, lab, model, _ = trained
    if arch == "deeplog":
        model = train_tiny(tmp_path, log, lab, arch="deeplog", name="lstm")
    copies = [tmp_path / "a.log", tmp_path / "b.log"]
    for copy in copies:
        copy.write_text(log.read_text())
    grown: list[list[int]] = []
    send = fastscan.ScoreWorker.grow
    monkeypatch.setattr(fastscan, "TICK_LINES", 16)
    monkeypatch.setattr(fastscan.ScoreWorker, "grow",
                        lambda self, g, d: (grown.extend(g), send(self, g, d))[1])
    got = {}
    for engine in ("two-core", "inline"):
        out = tmp_path / f"{engine}.jsonl"
        result = CliRunner().invoke(cli, ["scan", *map(str, copies), "--model", str(model), "--k", "2",
                                          "--labels", str(lab), "--output", str(out),
                                          "--engine", engine])
        assert result.exit_code == 0, result.output
        got[engine] = (result.stdout, out.read_bytes())
    assert "Sequences:           42" in got["inline"][0]
    assert got["two-core"] == got["inline"]
    if arch == "llama":
        # every key reported before the close (168 lines a file: the ticks count across files)
        assert sum(len(g) - 1 for g in grown) == 2 * 168


def test_two_core_scan_never_imports_torch_here(trained) -> None:
    """The parsing process finds the model (--model or the shipped one) and K without torch."""
    import subprocess
    import sys

    log, _lab, model, _ = trained
    code = ("import sys\nfrom click.testing import CliRunner\nfrom logllama_tui.cli import cli\n"
            f"a = CliRunner().invoke(cli, ['scan', {str(log)!r}, '--model', {str(model)!r}])\n"
            f"b = CliRunner().invoke(cli, ['scan', {str(log)!r}])\n"
            "print(a.exit_code, b.exit_code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.stdout.split()[-4:] == ["0", "0", "False", "False"], done.stdout + done.stderr


def test_keys_never_in_a_training_sequence_are_unseen_in_both_engines(trained, tmp_path) -> None:
    """The parser may know a template that no training sequence held (it learned from every line):
    both engines must call it unseen (the two-core parent once ranked it instead)."""
    import shutil

    log, lab, model, _ = trained
    narrowed = tmp_path / "narrowed"
    shutil.copytree(model, narrowed)
    meta = json.loads((narrowed / "logllama.json").read_text())
    assert meta["split"]["train_keys"], "the tiny model records its training keys"
    dropped = max(meta["split"]["train_keys"])  # any one key the parser knows
    meta["split"]["train_keys"] = [k for k in meta["split"]["train_keys"] if k != dropped]
    (narrowed / "logllama.json").write_text(json.dumps(meta))
    got = {}
    for engine in ("two-core", "inline"):
        out = tmp_path / f"{engine}.jsonl"
        result = CliRunner().invoke(cli, ["scan", str(log), "--model", str(narrowed), "--output",
                                          str(out), "--engine", engine])
        assert result.exit_code == 0, result.output
        got[engine] = (result.stdout, out.read_bytes())
        unseen = [json.loads(r) for r in out.read_text().splitlines()]
        unseen = [r for r in unseen if r["kind"] == "unseen"]
        assert len(unseen) >= 41, (engine, len(unseen))  # the dropped key in (nearly) every session
    assert got["two-core"] == got["inline"]
