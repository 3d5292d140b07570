"""Every error a user can cause, for every command: non-zero exit, one `Error:` line, no traceback.

The cases run through the real click group in-process (the same `_Group.invoke` that turns a
LogLlamaError into `Error: ...` and exit 2); click's own usage errors exit 2 with their `Error:`
line last. An unexpected exception would surface as `result.exception` that is not SystemExit,
which fails the test. One case per command kind also runs as a real process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from rel_helpers import hdfs_line, run_cli

from logllama_tui.cli import cli


@pytest.fixture(scope="module")
def env(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths the cases refer to as {name}."""
    d = tmp_path_factory.mktemp("errors")
    log = d / "app.log"
    log.write_text("\n".join(hdfs_line(i % 4, f"blk_{i // 4}", i) for i in range(40)) + "\n")
    labels = d / "labels.csv"
    labels.write_text("BlockId,Label\n" + "".join(f"blk_{i},Normal\n" for i in range(10)))
    bad_labels = d / "bad_labels.csv"
    bad_labels.write_text("this is not,a label file\n\x00\x01\n")
    corrupt = d / "corrupt"
    shutil.copytree(tiny_ckpt, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 10)
    v99 = d / "v99"
    shutil.copytree(tiny_ckpt, v99)
    meta = json.loads((v99 / "logllama.json").read_text())
    (v99 / "logllama.json").write_text(json.dumps({**meta, "checkpoint_version": 99}))
    badmeta = d / "badmeta"
    shutil.copytree(tiny_ckpt, badmeta)
    (badmeta / "logllama.json").write_text('{"checkpoint": "logllama-checkpoint", "arch"')
    empty_dir = d / "empty_dir"
    empty_dir.mkdir()
    empty_log = d / "empty.log"
    empty_log.write_text("")
    a_file = d / "a_file"
    a_file.write_text("x\n")
    import gzip

    packed = gzip.compress(log.read_bytes() * 50)
    (d / "cut.log.gz").write_bytes(packed[: len(packed) // 2])
    (d / "bad.log.xz").write_bytes(b"\xfd7zXZ\x00garbage")
    bad_feedback = d / "fb.jsonl"
    bad_feedback.write_text('{"version": 7}\n')
    home = d / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "notackpt").mkdir()
    return {"log": str(log), "ckpt": str(tiny_ckpt), "labels": str(labels),
            "bad_labels": str(bad_labels), "corrupt": str(corrupt), "v99": str(v99), "badmeta": str(badmeta),
            "missing": str(d / "missing.log"), "empty_dir": str(empty_dir),
            "empty_log": str(empty_log), "a_file": str(a_file), "bad_feedback": str(bad_feedback),
            "home": str(home), "out": str(d / "out"), "cut_gz": str(d / "cut.log.gz"),
            "bad_xz": str(d / "bad.log.xz")}


TRAIN = ["--layers", "1", "--heads", "2", "--hidden", "16", "--epochs", "1", "--device", "cpu"]
CASES: dict[str, list[str]] = {
    # parse
    "parse missing file": ["parse", "{missing}"],
    "parse bad option": ["parse", "{log}", "--nope"],
    "parse bad value": ["parse", "{log}", "--depth", "1"],
    "parse unknown format": ["parse", "{log}", "--format", "nosuchformat"],
    "parse format string matching nothing": ["parse", "{log}", "--format", "<Date> <Nope>: <Content> [<X>]"],
    "parse unknown preset": ["parse", "{log}", "--preset", "nosuchsystem"],
    "parse empty dir": ["parse", "{empty_dir}"],
    "parse truncated gzip": ["parse", "{cut_gz}"],
    "parse corrupt xz": ["parse", "{bad_xz}"],
    "parse output into missing dir": ["parse", "{log}", "--output", "{missing}/x/out.csv"],
    # train
    "train missing file": ["train", "{missing}", "--out", "{out}", *TRAIN],
    "train bad option": ["train", "{log}", "--nope"],
    "train bad value": ["train", "{log}", "--epochs", "0"],
    "train unknown format": ["train", "{log}", "--format", "nosuchformat", "--out", "{out}", *TRAIN],
    "train no gpu": ["train", "{log}", "--out", "{out}", *TRAIN[:-2], "--device", "cuda"],
    "train bad k": ["train", "{log}", "--out", "{out}", "--k", "lots", *TRAIN],
    "train out is a file": ["train", "{log}", "--out", "{a_file}", *TRAIN],
    "train resume nothing": ["train", "{log}", "--out", "{out}", "--resume", *TRAIN],
    "train missing labels": ["train", "{log}", "--out", "{out}", "--labels", "{missing}", *TRAIN],
    "train bad labels": ["train", "{log}", "--out", "{out}", "--labels", "{bad_labels}", *TRAIN],
    "train empty input": ["train", "{empty_log}", "--out", "{out}", *TRAIN],
    "train truncated gzip": ["train", "{cut_gz}", "--out", "{out}", *TRAIN],
    "train bad session regex": ["train", "{log}", "--out", "{out}", "--session-regex", "(", *TRAIN],
    # scan
    "scan missing file": ["scan", "{missing}", "--model", "{ckpt}"],
    "scan bad option": ["scan", "{log}", "--model", "{ckpt}", "--nope"],
    "scan unknown format": ["scan", "{log}", "--model", "{ckpt}", "--format", "nosuchformat"],
    "scan missing model": ["scan", "{log}", "--model", "{missing}"],
    "scan model is a file": ["scan", "{log}", "--model", "{a_file}"],
    "scan corrupt model": ["scan", "{log}", "--model", "{corrupt}"],
    "scan incompatible model": ["scan", "{log}", "--model", "{v99}"],
    "scan not a checkpoint": ["scan", "{log}", "--model", "{empty_dir}"],
    "scan truncated gzip": ["scan", "{cut_gz}", "--model", "{ckpt}"],
    "scan no gpu": ["scan", "{log}", "--model", "{ckpt}", "--device", "cuda"],
    "scan bad k": ["scan", "{log}", "--model", "{ckpt}", "--k", "1000"],
    "scan missing labels": ["scan", "{log}", "--model", "{ckpt}", "--labels", "{missing}"],
    "scan output into missing dir": ["scan", "{log}", "--model", "{ckpt}", "--output", "{missing}/x/o.jsonl"],
    # eval
    "eval missing file": ["eval", "{missing}", "--model", "{ckpt}", "--labels", "{labels}"],
    "eval bad option": ["eval", "{log}", "--model", "{ckpt}", "--nope"],
    "eval unknown format": ["eval", "{log}", "--model", "{ckpt}", "--labels", "{labels}", "--format", "nosuchformat"],
    "eval missing model": ["eval", "{log}", "--model", "{missing}", "--labels", "{labels}"],
    "eval corrupt model": ["eval", "{log}", "--model", "{corrupt}", "--labels", "{labels}"],
    "eval incompatible model": ["eval", "{log}", "--model", "{v99}", "--labels", "{labels}"],
    "eval no gpu": ["eval", "{log}", "--model", "{ckpt}", "--labels", "{labels}", "--device", "cuda"],
    "eval missing labels": ["eval", "{log}", "--model", "{ckpt}", "--labels", "{missing}"],
    "eval bad labels": ["eval", "{log}", "--model", "{ckpt}", "--labels", "{bad_labels}"],
    # finetune
    "finetune missing file": ["finetune", "{missing}", "--model", "{ckpt}", "--labels", "{labels}", "--out", "{out}"],
    "finetune bad option": ["finetune", "{log}", "--model", "{ckpt}", "--nope"],
    "finetune unknown format": ["finetune", "{log}", "--model", "{ckpt}", "--labels", "{labels}", "--format", "nosuchformat", "--out", "{out}"],
    "finetune missing model": ["finetune", "{log}", "--model", "{missing}", "--labels", "{labels}", "--out", "{out}"],
    "finetune corrupt model": ["finetune", "{log}", "--model", "{corrupt}", "--labels", "{labels}", "--out", "{out}"],
    "finetune incompatible model": ["finetune", "{log}", "--model", "{v99}", "--labels", "{labels}", "--out", "{out}"],
    "finetune no gpu": ["finetune", "{log}", "--model", "{ckpt}", "--labels", "{labels}", "--device", "cuda", "--out", "{out}"],
    "finetune bad feedback": ["finetune", "{log}", "--model", "{ckpt}", "--feedback", "{bad_feedback}", "--out", "{out}"],
    "finetune missing feedback": ["finetune", "{log}", "--model", "{ckpt}", "--feedback", "{missing}", "--out", "{out}"],
    # tail --plain
    "tail bad option": ["tail", "{log}", "--plain", "--nope"],
    "tail unknown format": ["tail", "{log}", "--plain", "--model", "{ckpt}", "--format", "nosuchformat"],
    "tail missing model": ["tail", "{log}", "--plain", "--model", "{missing}"],
    "tail corrupt model": ["tail", "{log}", "--plain", "--model", "{corrupt}"],
    "tail incompatible model": ["tail", "{log}", "--plain", "--model", "{v99}"],
    "tail no gpu": ["tail", "{log}", "--plain", "--model", "{ckpt}", "--device", "cuda"],
    "tail bad k": ["tail", "{log}", "--plain", "--model", "{ckpt}", "--k", "zero"],
    "tail bad poll interval": ["tail", "{log}", "--plain", "--poll-interval", "0"],
    # models
    "models show missing": ["models", "show", "nosuchmodel"],
    "models show corrupt": ["models", "show", "{badmeta}"],
    "models show not a checkpoint": ["models", "show", "notackpt"],
    "models rm missing": ["models", "rm", "nosuchmodel"],
    "models rm a path": ["models", "rm", "../../etc"],
    "models rm not a checkpoint": ["models", "rm", "notackpt"],
    "models unknown subcommand": ["models", "frobnicate"],
    "unknown command": ["frobnicate"],
}


def fill(args: list[str], env: dict[str, str]) -> list[str]:
    return [a.format(**env) for a in args]


def check(code: int, stderr: str, exc: BaseException | None = None) -> str:
    """Non-zero, one `Error:` line and it is the last line, no traceback; returns that line."""
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, stderr
    assert errors[0] == stderr.strip().splitlines()[-1], stderr
    assert len(errors[0]) > len("Error: ") + 10
    if exc is not None:
        assert isinstance(exc, SystemExit), repr(exc)
    return errors[0]


@pytest.mark.parametrize("case", list(CASES))
def test_error_path(env: dict[str, str], case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGLLAMA_HOME", env["home"])
    monkeypatch.chdir(env["home"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # "no GPU", also on a GPU box
    result = CliRunner().invoke(cli, fill(CASES[case], env), input="")
    check(result.exit_code, result.stderr, result.exception)
    assert not Path(env["out"]).exists() or case.startswith("finetune"), "an error left output"


@pytest.mark.parametrize("case", ["tail corrupt model", "train no gpu", "models rm a path"])
def test_error_path_in_a_real_process(env: dict[str, str], case: str) -> None:
    proc = run_cli(fill(CASES[case], env), cwd=Path(env["home"]), home=Path(env["home"]),
                   extra_env={"CUDA_VISIBLE_DEVICES": ""})  # no GPU, also on a GPU box
    check(proc.returncode, proc.stderr)


@pytest.mark.parametrize("command", ["train", "finetune", "scan", "parse"])
def test_markup_in_a_path_is_printed_not_interpreted(env: dict[str, str], tmp_path: Path,
                                                     command: str) -> None:
    """A file under `odd[/` named `]name.log`: its path holds rich markup, which must stay text."""
    folder = tmp_path / "odd["
    folder.mkdir()
    log = folder / "]name.log"
    shutil.copy(env["log"], log)
    args = {"train": ["train", str(log), "--out", str(tmp_path / "m"), *TRAIN],
            "finetune": ["finetune", str(log), "--model", env["ckpt"], "--labels", env["labels"],
                         "--episodes", "1", "--device", "cpu", "--out", str(tmp_path / "rl")],
            "scan": ["scan", str(log), "--model", env["ckpt"], "--device", "cpu"],
            "parse": ["parse", str(log)]}[command]
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 0, result.output
    if command == "train":  # it names the file it read: literally, brackets and all
        assert f"{log}: format hdfs" in result.stderr.replace("\n", ""), result.stderr


def test_models_rm_of_a_symlink_never_touches_its_target(tiny_ckpt: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A model name that is a symlink to a checkpoint elsewhere: the target must survive, and
    the command ends cleanly (the link removed, or one clear error)."""
    target = tmp_path / "elsewhere"
    shutil.copytree(tiny_ckpt, target)
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    (models / "linked").symlink_to(target)
    monkeypatch.setenv("LOGLLAMA_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(cli, ["models", "rm", "linked"])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code != 0:
        check(result.exit_code, result.stderr, result.exception)
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in tiny_ckpt.iterdir())
