"""Checkpoint directories: safetensors weights plus validated JSON, written atomically, never pickled.

A checkpoint is a directory holding
  config.json        the network's config (transformers' LlamaConfig, or ours for deeplog)
  model.safetensors  the weights (for llama, loadable by LlamaForCausalLM.from_pretrained too)
  parser.json        the parser state and vocabulary (LogParser.to_json)
  logllama.json      our metadata: versions, settings, split, data fingerprints, metrics
and, while a training run is unfinished, train_state.safetensors + train_state.json (see train.py).
It is written to a temporary sibling directory, fsynced, then renamed into place; the previous
checkpoint is kept until the new one is complete, and recovered if a crash hits between renames.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logllama_tui import __version__
from logllama_tui.config import ModelConfig, from_dict
from logllama_tui.errors import BadCheckpoint, BadInput

FORMAT_NAME = "logllama-checkpoint"
"""logllama.json["checkpoint"]; its "format"/"log_format" keys name the LOG format trained on."""
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
REQUIRED_FILES = ("config.json", "model.safetensors", "parser.json", "logllama.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
REQUIRED_META: dict[str, type | tuple[type, ...]] = {
    "checkpoint": str, "checkpoint_version": int, "arch": str, "model_config": dict,
    "train_config": dict, "vocab_size": int, "n_keys": int,
}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network in eval mode on its device, the parser, the metadata."""

    path: Path
    model: Any
    parser: Any
    meta: dict[str, Any]


@dataclass
class ModelInfo:
    """One row of `logllama models`."""

    name: str
    path: Path
    arch: str = "?"
    keys: int = 0
    size: int = 0
    """Bytes on disk."""
    trained_on: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    k: int | None = None
    """The resolved Top-K stored at training time."""
    created: str = ""
    complete: bool = True
    error: str | None = None
    """Why the directory is not a usable checkpoint, when it is not."""


# -- where models live ----------------------------------------------------------------------
def models_dir() -> Path:
    """Named checkpoints: $LOGLLAMA_HOME/models, else the platform's user data dir/models."""
    base = os.environ.get("LOGLLAMA_HOME")
    if not base:
        from platformdirs import user_data_dir

        base = user_data_dir("logllama", appauthor=False)
    return Path(base) / "models"


def is_name(name_or_path: str) -> bool:
    """True for a bare model name ("hdfs"), False for anything that looks like a path."""
    return bool(name_or_path) and os.sep not in name_or_path and "/" not in name_or_path \
        and not name_or_path.startswith((".", "~"))


def out_path(name_or_path: str) -> Path:
    """Where `--out NAME_OR_DIR` writes: a name goes under models_dir(), a path stays a path."""
    if not name_or_path.strip():
        raise BadInput("--out is empty: give a model name (e.g. --out mysys) or a directory")
    if is_name(name_or_path):
        return models_dir() / name_or_path
    return Path(name_or_path).expanduser()


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory for a path or a name under models_dir(); BadCheckpoint if none."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if not (path.exists() or _recover(path)) and is_name(text):
        path = models_dir() / text
        _recover(path)
    if not path.exists():
        raise BadCheckpoint(
            f"no model {text!r}: not a directory, nor a name in {models_dir()} "
            "(see `logllama models`, or train one with `logllama train`)"
        )
    if not path.is_dir():
        raise BadCheckpoint(f"{path} is a file; a checkpoint is a directory (from `logllama train`)")
    return path


# -- saving ---------------------------------------------------------------------------------
def save_checkpoint(
    out_dir: str | os.PathLike[str],
    model: Any,
    parser: Any,
    meta: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint to `out_dir` atomically; `extra` maps file name -> writer(path)."""
    from safetensors.torch import save_file

    from logllama_tui.model import model_config_json

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _sibling(out, "tmp"), _sibling(out, "old")
    _recover(out)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", model_config_json(model))
        parser_state = parser.to_json()
        _write_json(tmp / "parser.json", json.loads(parser_state) if isinstance(parser_state, str) else parser_state)
        full_meta = {  # ours last: a meta copied from another checkpoint cannot keep stale ones
            **meta, "checkpoint": FORMAT_NAME, "checkpoint_version": FORMAT_VERSION,
            "logllama_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _write_json(tmp / "logllama.json", full_meta)
        for name, writer in (extra or {}).items():
            writer(tmp / name)
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)  # the previous checkpoint stays whole until the new one is in place
    os.replace(tmp, out)
    _fsync(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _sibling(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.{kind}"


def _recover(path: Path) -> bool:
    """Put back a previous checkpoint when a crash struck between the two renames of a save."""
    old = _sibling(path, "old")
    if not path.exists() and old.is_dir():
        try:
            os.replace(old, path)
        except OSError:
            return False
        return True
    return path.exists()


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, ensure_ascii=False)
        fh.write("\n")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


# -- loading --------------------------------------------------------------------------------
def read_meta(path: Path) -> dict[str, Any]:
    """logllama.json of checkpoint `path`, checked for the keys and types we rely on."""
    refuse_pickles(path)
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise BadCheckpoint(f"{path} is not a logllama checkpoint: {name} is missing "
                                "(retrain it with `logllama train`)")
    meta = _read_json(path / "logllama.json")
    if not isinstance(meta, dict):
        raise BadCheckpoint(f"{path / 'logllama.json'} is not a JSON object")
    for key, kind in REQUIRED_META.items():
        if key not in meta:
            raise BadCheckpoint(f"{path / 'logllama.json'} lacks {key!r}; retrain the model")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise BadCheckpoint(f"{path / 'logllama.json'}: {key!r} has the wrong type")
    if meta["checkpoint"] != FORMAT_NAME:
        raise BadCheckpoint(f"{path} is not a logllama checkpoint ({meta['checkpoint']!r})")
    if meta["checkpoint_version"] not in SUPPORTED_VERSIONS:
        raise BadCheckpoint(
            f"{path} has checkpoint format version {meta['checkpoint_version']}; this logllama "
            f"({__version__}) reads {', '.join(map(str, SUPPORTED_VERSIONS))}: retrain or upgrade"
        )
    return meta


def refuse_pickles(path: Path) -> None:
    """BadCheckpoint if any file in the directory could be a pickle: we never unpickle."""
    for f in sorted(path.iterdir()):
        if f.suffix.lower() in PICKLE_SUFFIXES:
            raise BadCheckpoint(f"refusing to load pickle file {f} (logllama reads only "
                                "safetensors and JSON); delete it or retrain")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON or UTF-8
        raise BadCheckpoint(f"{path} is unreadable or not valid JSON "
                            f"({str(exc)[:200]}); retrain the model") from None


def model_config_of(meta: dict[str, Any], path: Path) -> ModelConfig:
    """The ModelConfig recorded in the metadata."""
    try:
        cfg = from_dict(ModelConfig, meta["model_config"])
    except (TypeError, ValueError) as exc:
        raise BadCheckpoint(f"{path / 'logllama.json'}: bad model_config ({exc})") from None
    if cfg.arch != meta["arch"]:
        raise BadCheckpoint(f"{path / 'logllama.json'}: arch {meta['arch']!r} != model_config.arch")
    return cfg


def load_weights(file: Path) -> dict[str, Any]:
    """Tensors of a safetensors file; a truncated or corrupt file is BadCheckpoint."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise BadCheckpoint(f"{file} is truncated or corrupt ({exc}); retrain the model") from None


def load_checkpoint(name_or_path: str | os.PathLike[str], device: str = "cpu") -> Checkpoint:
    """Load and validate a checkpoint directory (or model name) onto `device`, eval mode."""
    import torch

    from logllama_tui.model import build_model

    path = resolve_model(name_or_path)
    meta = read_meta(path)
    cfg = model_config_of(meta, path)
    parser = load_parser(path, meta)
    vocab_size = len(parser.vocab)
    config_json = _read_json(path / "config.json")
    if not isinstance(config_json, dict) or config_json.get("vocab_size") != vocab_size:
        raise BadCheckpoint(f"{path / 'config.json'}: vocab_size does not match the parser's "
                            f"{vocab_size}; retrain the model")
    try:
        model = build_model(cfg, vocab_size)
    except ValueError as exc:
        raise BadCheckpoint(f"{path}: cannot build the model ({exc})") from None
    weights = load_weights(path / "model.safetensors")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise BadCheckpoint(f"{path / 'model.safetensors'} does not fit the config: missing "
                            f"{missing[:3]}, unexpected {unexpected[:3]}; retrain the model")
    for name, tensor in expected.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise BadCheckpoint(f"{path / 'model.safetensors'}: {name} has shape "
                                f"{tuple(weights[name].shape)}, the config says {tuple(tensor.shape)}")
    with torch.no_grad():
        model.load_state_dict(weights, strict=True)
    model.to(device).eval()
    return Checkpoint(path=path, model=model, parser=parser, meta=meta)


def unfinished_meta(out: Path, again: str) -> dict[str, Any]:
    """logllama.json of the unfinished run in `out` for --resume; BadInput when there is none
    (`again` names the command to run afresh: "train", "finetune")."""
    if not out.is_dir():
        raise BadInput(f"--resume: nothing to resume in {out}; start the run without --resume")
    try:
        meta = read_meta(out)
    except BadCheckpoint as exc:
        raise BadInput(f"--resume: {exc}") from None
    if meta.get("complete", True):
        raise BadInput(f"--resume: the run in {out} already finished; {again} again without --resume")
    return meta


def load_parser(path: Path, meta: dict[str, Any]) -> Any:
    """The checkpoint's validated parser, as every engine must see it (torch-free: the two-core
    scan's parent and tail's lean load call it too): its vocabulary matches the model's, and keys
    that never occurred in a training sequence are unseen (UNK)."""
    from logllama_tui.parser import LogParser

    parser = LogParser.from_json(_read_json(path / "parser.json"))
    size = len(parser.vocab)
    if size != meta["vocab_size"]:
        raise BadCheckpoint(f"{path}: the parser has {size} keys but the model "
                            f"{meta['vocab_size']}; the checkpoint is inconsistent, retrain it")
    trained = (meta.get("split") or {}).get("train_keys")
    if trained is None:
        return parser
    if not isinstance(trained, list) or not all(
            isinstance(k, int) and not isinstance(k, bool) and 0 <= k < size for k in trained):
        raise BadCheckpoint(f"{path / 'logllama.json'}: split.train_keys must be a list of "
                            f"keys below {size}; the file was edited or is corrupt, retrain")
    parser.restrict_to(trained)
    return parser


# -- the model list -------------------------------------------------------------------------
def dir_size(path: Path) -> int:
    """Bytes of the files directly in `path`."""
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def model_info(path: Path) -> ModelInfo:
    """What `logllama models` shows for one directory (never raises)."""
    info = ModelInfo(name=path.name, path=path)
    try:
        info.size = dir_size(path)
        meta = read_meta(path)
    except (OSError, BadCheckpoint) as exc:
        info.error = str(exc)
        return info
    info.arch = meta["arch"]
    info.keys = meta["n_keys"]
    info.trained_on = [str(f.get("path", "?")) for f in meta.get("data_files", []) if isinstance(f, dict)]
    info.metrics = meta.get("metrics", {}) if isinstance(meta.get("metrics"), dict) else {}
    info.created = str(meta.get("created", ""))
    detect = meta.get("detect")
    k = detect.get("k_resolved") if isinstance(detect, dict) else None
    info.k = k if isinstance(k, int) and not isinstance(k, bool) else None
    info.complete = bool(meta.get("complete", True))
    return info


def list_models() -> list[ModelInfo]:
    """Every directory under models_dir(), sorted by name (broken ones carry `.error`)."""
    base = models_dir()
    if not base.is_dir():
        return []
    return [model_info(p) for p in sorted(base.iterdir()) if p.is_dir() and not p.name.startswith(".")]


def remove_model(name: str) -> Path:
    """Delete the named checkpoint under models_dir(); only a checkpoint directory is removed."""
    if not is_name(name):
        raise BadInput(f"{name!r} is not a model name; `models rm` only removes models in {models_dir()}")
    path = models_dir() / name
    if not path.is_dir():
        raise BadInput(f"no model named {name!r} in {models_dir()} (see `logllama models`)")
    if not (path / "logllama.json").is_file():
        raise BadInput(f"{path} does not look like a logllama checkpoint; not removing it")
    if path.is_symlink():
        path.unlink()  # the name goes; the directory it points to is not ours to delete
        return path
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise BadInput(f"cannot remove {path}: {exc.strerror or exc}") from None
    return path


# -- data fingerprints ----------------------------------------------------------------------
FINGERPRINT_BYTES = 1 << 20


def fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Path, size, mtime and sha256 of the first and last MiB: enough to notice changed data."""
    p = Path(path)
    if str(path) == "-" or not p.is_file():
        return {"path": str(path), "size": None, "mtime": None, "sha256": None}
    st = p.stat()
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        h.update(fh.read(FINGERPRINT_BYTES))
        if st.st_size > FINGERPRINT_BYTES:
            fh.seek(max(FINGERPRINT_BYTES, st.st_size - FINGERPRINT_BYTES))
            h.update(fh.read(FINGERPRINT_BYTES))
    return {"path": str(p.resolve()), "size": st.st_size, "mtime": st.st_mtime, "sha256": h.hexdigest()}


__all__ = [
    "Checkpoint", "ModelInfo", "FORMAT_NAME", "FORMAT_VERSION", "fingerprint", "is_name",
    "list_models", "load_checkpoint", "load_weights", "model_info", "models_dir", "out_path",
    "read_meta", "remove_model", "resolve_model", "save_checkpoint",
]
