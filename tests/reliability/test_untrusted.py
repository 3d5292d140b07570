"""Nothing from a file runs code: tampered checkpoints and parser states are refused, clearly.

Each case copies the tiny checkpoint and breaks one thing: a pickle beside the weights or instead
of them, a jsonpickle payload in parser.json, truncated or hand-edited JSON, weights of the wrong
shape. `logllama scan FILE --model DIR` must exit non-zero with exactly one `Error:` line and no
traceback, and the payloads, which would create a marker file if they ever ran, must never run.
The pickle cases also go through a real `python -m logllama_tui` process.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from rel_helpers import hdfs_line, run_cli

from logllama_tui.cli import cli
from logllama_tui.errors import BadCheckpoint
from logllama_tui.parser import LogParser
from logllama_tui.records import Record


class Payload:
    """Unpickling this touches `marker` (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (Path.touch, (self.marker,))


def pickle_bytes(marker: Path) -> bytes:
    data = pickle.dumps({"state_dict": Payload(marker)})
    probe = marker.with_suffix(".probe")  # prove the payload works when unpickled
    pickle.loads(pickle.dumps(Payload(probe)))
    assert probe.exists()
    probe.unlink()
    return data


def jsonpickle_reduce(marker: Path) -> dict[str, object]:
    """jsonpickle's encoding of a call: decode() would run `touch marker`."""
    return {"py/reduce": [{"py/function": "os.system"}, {"py/tuple": [f"touch {marker}"]}]}


def jsonpickle_object(marker: Path) -> dict[str, object]:
    return {"py/object": "pathlib.Path", "py/reduce": [{"py/type": "pathlib.Path"},
                                                      {"py/tuple": [str(marker)]}]}


def edit_json(name: str, change: Callable[[dict[str, object]], object]) -> Callable[[Path, Path], None]:
    def apply(ckpt: Path, marker: Path) -> None:
        path = ckpt / name
        data = json.loads(path.read_text())
        new = change(data)
        path.write_text(json.dumps(data if new is None else new))
    return apply


def truncate(name: str, keep: float = 0.5) -> Callable[[Path, Path], None]:
    def apply(ckpt: Path, marker: Path) -> None:
        path = ckpt / name
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
    return apply


def beside(name: str) -> Callable[[Path, Path], None]:
    def apply(ckpt: Path, marker: Path) -> None:
        (ckpt / name).write_bytes(pickle_bytes(marker))
    return apply


def replace_weights_with_pickle(ckpt: Path, marker: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(pickle_bytes(marker))


def lying_safetensors_header(ckpt: Path, marker: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 60) + b"{}")


def parser_py_object(ckpt: Path, marker: Path) -> None:
    data = json.loads((ckpt / "parser.json").read_text())
    data["drain"]["clusters"].append(jsonpickle_object(marker))
    (ckpt / "parser.json").write_text(json.dumps(data))


def parser_is_jsonpickle(ckpt: Path, marker: Path) -> None:
    (ckpt / "parser.json").write_text(json.dumps(jsonpickle_reduce(marker)))


def meta_is_jsonpickle(ckpt: Path, marker: Path) -> None:
    (ckpt / "logllama.json").write_text(json.dumps(jsonpickle_reduce(marker)))


def config_is_jsonpickle(ckpt: Path, marker: Path) -> None:
    (ckpt / "config.json").write_text(json.dumps(jsonpickle_reduce(marker)))


def set_in(*keys: str, value: object) -> Callable[[dict[str, object]], None]:
    def change(data: dict[str, object]) -> None:
        node: object = data
        for k in keys[:-1]:
            node = node[k]  # type: ignore[index]
        node[keys[-1]] = value  # type: ignore[index]
    return change


def remove(name: str) -> Callable[[Path, Path], None]:
    def apply(ckpt: Path, marker: Path) -> None:
        (ckpt / name).unlink()
    return apply


CASES: dict[str, Callable[[Path, Path], None]] = {
    "pickle model.bin beside": beside("pytorch_model.bin"),
    "pickle .pt beside": beside("weights.pt"),
    "pickle .pkl beside": beside("parser.pkl"),
    "pickle .pth beside": beside("x.pth"),
    "pickle .pickle beside": beside("x.pickle"),
    "pickle as model.safetensors": replace_weights_with_pickle,
    "safetensors lying header": lying_safetensors_header,
    "safetensors truncated": truncate("model.safetensors"),
    "safetensors empty": truncate("model.safetensors", 0.0),
    "parser.json jsonpickle py/reduce": parser_is_jsonpickle,
    "parser.json nested py/object": parser_py_object,
    "parser.json truncated": truncate("parser.json"),
    "parser.json not utf-8": lambda c, m: (c / "parser.json").write_bytes(b"\x80\x04\x95" * 20),
    "parser.json extra key": edit_json("parser.json", set_in("exec", value="rm -rf /")),
    "parser.json names not strings": edit_json("parser.json", set_in("vocab", "names", value=[1, 2])),
    "parser.json depth huge": edit_json("parser.json", set_in("config", "depth", value=10**9)),
    "parser.json bad mask regex": edit_json("parser.json", set_in("config", "masks", value=[["(", "X"]])),
    "parser.json is a list": edit_json("parser.json", lambda d: [d]),
    "parser.json NaN": lambda c, m: (c / "parser.json").write_text('{"format": NaN}'),
    "parser.json deep nesting": lambda c, m: (c / "parser.json").write_text("[" * 100_000 + "]" * 100_000),
    "logllama.json jsonpickle": meta_is_jsonpickle,
    "logllama.json truncated": truncate("logllama.json"),
    "logllama.json version 99": edit_json("logllama.json", set_in("checkpoint_version", value=99)),
    "logllama.json n_keys string": edit_json("logllama.json", set_in("n_keys", value="4")),
    "logllama.json vocab_size wrong": edit_json("logllama.json", set_in("vocab_size", value=99)),
    "logllama.json hidden wrong (shapes)": edit_json("logllama.json", set_in("model_config", "hidden", value=32)),
    "logllama.json layers wrong (missing tensors)": edit_json("logllama.json", set_in("model_config", "n_layers", value=2)),
    "logllama.json unknown arch": edit_json("logllama.json", set_in("arch", value="gpt")),
    "logllama.json model_config unknown key": edit_json("logllama.json", set_in("model_config", "py/object", value="os.system")),
    "config.json jsonpickle": config_is_jsonpickle,
    "config.json truncated": truncate("config.json"),
    "parser.json missing": remove("parser.json"),
    "model.safetensors missing": remove("model.safetensors"),
}


@pytest.fixture()
def log_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.log"
    path.write_text("\n".join(hdfs_line(i % 4, "blk_1", i) for i in range(8)) + "\n")
    return path


def tampered(tiny_ckpt: Path, tmp_path: Path, case: str) -> tuple[Path, Path]:
    ckpt = tmp_path / "model"
    shutil.copytree(tiny_ckpt, ckpt)
    marker = tmp_path / "PWNED"
    CASES[case](ckpt, marker)
    return ckpt, marker


def assert_one_error_line(code: int, stderr: str, exc: BaseException | None = None) -> str:
    assert code != 0, stderr
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, stderr
    assert errors[0] == stderr.strip().splitlines()[-1], stderr  # the last thing said
    assert len(errors[0]) < 600, errors[0]
    if exc is not None:
        assert isinstance(exc, SystemExit), repr(exc)
    return errors[0]


@pytest.mark.parametrize("case", list(CASES))
def test_tampered_checkpoint_is_refused(tiny_ckpt: Path, tmp_path: Path, log_file: Path,
                                        case: str) -> None:
    ckpt, marker = tampered(tiny_ckpt, tmp_path, case)
    result = CliRunner().invoke(cli, ["scan", str(log_file), "--model", str(ckpt), "--device", "cpu"])
    line = assert_one_error_line(result.exit_code, result.stderr, result.exception)
    assert result.exit_code == 2, line
    assert not marker.exists(), f"{case}: the payload ran"
    if "pickle" in case and "beside" in case:
        assert "pickle" in line


@pytest.mark.parametrize("case", ["pickle model.bin beside", "pickle as model.safetensors",
                                  "parser.json jsonpickle py/reduce"])
def test_tampered_checkpoint_in_a_real_process(tiny_ckpt: Path, tmp_path: Path, log_file: Path,
                                               case: str) -> None:
    ckpt, marker = tampered(tiny_ckpt, tmp_path, case)
    proc = run_cli(["scan", str(log_file), "--model", str(ckpt)], cwd=tmp_path, home=tmp_path)
    assert_one_error_line(proc.returncode, proc.stderr)
    assert proc.returncode == 2
    assert not marker.exists()


@pytest.mark.parametrize("case", ["parser.json jsonpickle py/reduce", "parser.json nested py/object",
                                  "parser.json truncated", "parser.json extra key",
                                  "parser.json not utf-8", "parser.json deep nesting"])
def test_parser_load_refuses_tampered_state(tiny_ckpt: Path, tmp_path: Path, case: str) -> None:
    ckpt, marker = tampered(tiny_ckpt, tmp_path, case)
    with pytest.raises(BadCheckpoint) as info:
        LogParser.load(ckpt / "parser.json")
    assert "\n" not in str(info.value) and len(str(info.value)) < 600
    assert not marker.exists()


def test_pristine_copy_still_loads(tiny_ckpt: Path, tmp_path: Path, log_file: Path) -> None:
    """The control: the untouched copy scans fine, so the refusals above are about the damage."""
    ckpt = tmp_path / "model"
    shutil.copytree(tiny_ckpt, ckpt)
    result = CliRunner().invoke(cli, ["scan", str(log_file), "--model", str(ckpt), "--device", "cpu"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "Error" not in result.stderr


@pytest.fixture(scope="module")
def unfinished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object, list[object]]:
    """An unfinished training run (interrupted in epoch 2), as `train --resume` finds it."""
    import dataclasses

    from logllama_tui.config import ModelConfig, TrainConfig
    from logllama_tui.records import Sequence
    from logllama_tui.train import train

    parser = LogParser()
    for i in range(4):
        parser.learn(Record("t", i + 1, f"E{i}", f"event {i}", event_id=f"E{i}"))
    seqs = [Sequence(f"s{j}", [4 + (k + j) % 4 for k in range(3 + j % 5)], []) for j in range(80)]
    model_cfg = ModelConfig(n_layers=1, n_heads=2, hidden=16, head_dim=8, intermediate=32,
                            max_positions=64)
    cfg = dataclasses.replace(TrainConfig(), epochs=3, batch_size=8, device="cpu", threads=1)
    out = tmp_path_factory.mktemp("unfinished") / "run"

    def stop(event: dict[str, object]) -> None:
        if event.get("event") == "step" and event["epoch"] == 2 and event["batch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(seqs, parser, model_cfg, cfg, out, progress=stop)
    return out, (parser, model_cfg, cfg), seqs


def _group(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def change(data: dict[str, object]) -> None:
        data["param_groups"][0][key] = value  # type: ignore[index]
    return change


STATE_CASES: dict[str, Callable[[dict[str, object]], object]] = {
    "weight_decay a string": _group("weight_decay", "abc"),
    "betas of one": _group("betas", [0.9]),
    "eps a list": _group("eps", [1e-8]),
    "lr null": _group("lr", None),
    "params foreign": _group("params", [99]),
    "progress extra key": set_in("progress", "py/object", value="os.system"),
    "progress batch a string": set_in("progress", "batch", value="2"),
    "progress epoch negative": set_in("progress", "epoch", value=-5),
    "progress history not a list": set_in("progress", "history", value={"py/reduce": []}),
    "not an object": lambda d: [d],
    "version 2": set_in("version", value=2),
}


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_tampered_train_state_is_refused_on_resume(unfinished_run: tuple[Path, object, list[object]],
                                                   tmp_path: Path, case: str) -> None:
    from logllama_tui.train import train

    src, (parser, model_cfg, cfg), seqs = unfinished_run  # type: ignore[misc]
    run = tmp_path / "run"
    shutil.copytree(src, run)
    state = json.loads((run / "train_state.json").read_text())
    new = STATE_CASES[case](state)
    (run / "train_state.json").write_text(json.dumps(state if new is None else new))
    with pytest.raises(BadCheckpoint) as info:
        train(seqs, parser, model_cfg, cfg, run, resume=True)  # type: ignore[arg-type]
    assert "train_state" in str(info.value) or "training state" in str(info.value)


def test_untampered_train_state_resumes(unfinished_run: tuple[Path, object, list[object]],
                                        tmp_path: Path) -> None:
    """The control: the same copy, untouched, resumes to the end."""
    from logllama_tui.train import train

    src, (parser, model_cfg, cfg), seqs = unfinished_run  # type: ignore[misc]
    run = tmp_path / "run"
    shutil.copytree(src, run)
    ckpt = train(seqs, parser, model_cfg, cfg, run, resume=True)  # type: ignore[arg-type]
    assert ckpt.meta["complete"] is True and ckpt.meta["metrics"]["epochs"] == 3
