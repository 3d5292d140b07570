"""Resumable training state without pickle: tensors in safetensors, scalars in validated JSON.

An unfinished checkpoint carries train_state.safetensors (the latest weights "model.*", AdamW's
moments "optim.<param>.<name>", the torch RNG "rng.torch") and train_state.json (epoch, batches
done in it, step, best validation loss, patience counter, history, AdamW's param groups).
An unfinished `finetune` run has its own pair, with the helpers here (rl_state.py).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from logllama_tui.errors import BadCheckpoint

TENSORS = "train_state.safetensors"
SCALARS = "train_state.json"
STATE_VERSION = 1


@dataclass
class Progress:
    """Where a run stands: enough, with the tensors, to continue it exactly."""

    epoch: int = 0
    """Epochs completed."""
    batch: int = 0
    """Batches of epoch `epoch` already done (non-zero only after an interrupt)."""
    step: int = 0
    """Optimizer steps taken in all."""
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    """Epochs since the validation loss last improved."""
    history: list[dict[str, float]] = field(default_factory=list)
    """One {"epoch", "train_loss", "val_loss", "keys_per_s", "seconds"} per epoch."""
    seconds: float = 0.0
    """Training time so far."""
    keys: int = 0
    """Keys processed so far (after de-duplication)."""
    epoch_loss: float = 0.0
    """Summed loss of the batches done in the unfinished epoch (a resumed epoch reports it whole)."""
    epoch_count: float = 0.0
    """Weighted targets behind epoch_loss."""


def state_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Latest weights, optimizer moments and the torch RNG as a flat name -> tensor dict."""
    out = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for idx, slots in optimizer.state_dict()["state"].items():
        for name, value in slots.items():
            out[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    out["rng.torch"] = torch.get_rng_state()
    return out


def param_groups_json(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The optimizer's param groups (lr, betas, flags, param ids) as JSON-able data."""
    return [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        for g in optimizer.state_dict()["param_groups"]
    ]


def state_scalars(progress: Progress, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The JSON half of the state."""
    p = asdict(progress)
    p["best_val"] = None if math.isinf(progress.best_val) else progress.best_val
    return {"version": STATE_VERSION, "progress": p, "param_groups": param_groups_json(optimizer)}


def writers(model: torch.nn.Module, optimizer: torch.optim.Optimizer, progress: Progress) -> dict[str, Any]:
    """`extra` writers for checkpoint.save_checkpoint."""
    return state_writers(state_tensors(model, optimizer), state_scalars(progress, optimizer), TENSORS, SCALARS)


def state_writers(tensors: dict[str, torch.Tensor], scalars: dict[str, Any], tensors_name: str,
             scalars_name: str) -> dict[str, Any]:
    """name -> writer(path) for a safetensors file and a JSON file (save_checkpoint's `extra`)."""
    from safetensors.torch import save_file

    def write_tensors(path: Path) -> None:
        save_file(tensors, str(path))

    def write_scalars(path: Path) -> None:
        path.write_text(json.dumps(scalars, indent=1) + "\n", encoding="utf-8")

    return {tensors_name: write_tensors, scalars_name: write_scalars}


def is_number(v: Any, low: float = 0.0) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= low


def is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def progress_of(scalars: Any, version: int) -> Any:
    """The "progress" of a state file whose envelope (version, progress, param_groups) checks out."""
    if not isinstance(scalars, dict) or set(scalars) != {"version", "progress", "param_groups"}:
        raise ValueError("expected an object with version, progress and param_groups")
    if scalars["version"] != version or isinstance(scalars["version"], bool):
        raise ValueError(f"unsupported version {scalars['version']!r}")
    return scalars["progress"]


def _checked(scalars: Any) -> tuple[Progress, list[dict[str, Any]]]:
    """Progress and param groups of train_state.json, every field type- and range-checked."""
    p = progress_of(scalars, STATE_VERSION)
    names = {f.name for f in fields(Progress)}
    if not isinstance(p, dict) or set(p) - names:
        raise ValueError(f"progress must be an object with the keys {sorted(names)}")
    for name in ("epoch", "batch", "step", "best_epoch", "bad_epochs", "keys"):
        if name in p and not is_count(p[name]):
            raise ValueError(f"progress.{name} must be a non-negative integer")
    for name in ("seconds", "epoch_loss", "epoch_count"):
        if name in p and not is_number(p[name]):
            raise ValueError(f"progress.{name} must be a non-negative number")
    if p.get("best_val") is not None and not is_number(p["best_val"], -math.inf):
        raise ValueError("progress.best_val must be a number or null")
    if not is_history(p.get("history", [])):
        raise ValueError("progress.history must be a list of objects of numbers")
    p = {**p, "best_val": math.inf if p.get("best_val") is None else float(p["best_val"])}
    return Progress(**p), check_param_groups(scalars["param_groups"])


def is_history(history: Any) -> bool:
    """True for a list of objects whose values are numbers (or null)."""
    return isinstance(history, list) and all(
        isinstance(h, dict) and all(v is None or is_number(v, -math.inf) for v in h.values())
        for h in history)


def check_param_groups(groups: Any) -> list[dict[str, Any]]:
    """The param groups of a state file, each field type- and range-checked (ValueError if not)."""
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise ValueError("param_groups is not a list of objects")
    for g in groups:
        for name, value in g.items():
            if name == "params":
                ok = isinstance(value, list) and all(is_count(i) for i in value)
            elif name == "betas":
                ok = isinstance(value, list) and len(value) == 2 and all(is_number(b) for b in value)
            elif name in ("lr", "eps", "weight_decay"):
                ok = is_number(value)
            else:  # AdamW's flags (amsgrad, foreach, fused, ...): plain scalars only
                ok = value is None or isinstance(value, (bool, int, float))
            if not ok:
                raise ValueError(f"param_groups.{name} has a wrong type or range: {str(value)[:50]}")
    return groups


def load_state(ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Progress:
    """Restore weights, optimizer and RNG from an unfinished checkpoint; BadCheckpoint if unusable."""
    from logllama_tui.checkpoint import load_weights

    if not (ckpt_dir / TENSORS).is_file() or not (ckpt_dir / SCALARS).is_file():
        raise BadCheckpoint(f"{ckpt_dir} holds no unfinished training run to resume "
                            "(it finished, or was not written by `logllama train`)")
    try:
        scalars = json.loads((ckpt_dir / SCALARS).read_text(encoding="utf-8"))
        if scalars.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported version {scalars.get('version')!r}")
        progress, groups = _checked(scalars)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise BadCheckpoint(f"{ckpt_dir / SCALARS} is corrupt ({exc}); train again without --resume") from None
    tensors = load_weights(ckpt_dir / TENSORS)
    restore_state(tensors, groups, model, optimizer,
             f"{ckpt_dir}: the saved training state does not fit this model", "train")
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return progress


def restore_state(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]], model: torch.nn.Module,
             optimizer: torch.optim.Optimizer, misfit: str, command: str) -> None:
    """Load the weights "model.*" and the optimizer "optim.*" + groups; BadCheckpoint if they misfit."""
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, slot = name.split(".", 2)
            slots.setdefault(int(idx), {})[slot] = value
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    try:
        _check_moments(slots, optimizer, groups)
        model.load_state_dict(weights, strict=True)
        optimizer.load_state_dict({"state": slots, "param_groups": groups})
    except (RuntimeError, ValueError, KeyError) as exc:
        raise BadCheckpoint(f"{misfit} ({str(exc).splitlines()[0]}); {command} again without "
                            "--resume") from None


def _check_moments(slots: dict[int, dict[str, torch.Tensor]], optimizer: torch.optim.Optimizer,
                   groups: list[dict[str, Any]]) -> None:
    """ValueError unless every saved AdamW state is whole and shaped like its parameter.

    optimizer.load_state_dict takes a partial or misshapen state and fails only at the next step.
    """
    params = [p for g in optimizer.param_groups for p in g["params"]]
    amsgrad = any(g.get("amsgrad") for g in groups)
    need = {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if amsgrad else set())
    for idx, state in slots.items():
        if not 0 <= idx < len(params):
            raise ValueError(f"optimizer state for parameter {idx}, which this model lacks")
        if set(state) != need:
            raise ValueError(f"optimizer state {idx} holds {sorted(state)}, not {sorted(need)}")
        for name, value in state.items():
            if name != "step" and tuple(value.shape) != tuple(params[idx].shape):
                raise ValueError(f"optimizer state {idx}.{name} has shape {tuple(value.shape)}, "
                                 f"the parameter {tuple(params[idx].shape)}")


__all__ = [
    "Progress", "SCALARS", "STATE_VERSION", "TENSORS", "check_param_groups", "is_count",
    "is_history", "is_number", "load_state", "param_groups_json", "progress_of", "restore_state",
    "state_scalars", "state_tensors", "state_writers", "writers",
]
