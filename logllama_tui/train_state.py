"""Resumable training state without pickle: tensors in safetensors, scalars in validated JSON.

An unfinished checkpoint carries train_state.safetensors (the latest weights "model.*", AdamW's
moments "optim.<param>.<name>", the torch RNG "rng.torch") and train_state.json (epoch, batches
done in it, step, best validation loss, patience counter, history, AdamW's param groups).
An unfinished `finetune` run carries rl_state.safetensors (the same, plus the action sampler's
generator "rng.sample") and rl_state.json (`RLProgress` and AdamW's param groups).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from logllama_tui.config import RLConfig, to_dict
from logllama_tui.errors import BadCheckpoint, BadInput

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
    return _writers(state_tensors(model, optimizer), state_scalars(progress, optimizer), TENSORS, SCALARS)


def _writers(tensors: dict[str, torch.Tensor], scalars: dict[str, Any], tensors_name: str,
             scalars_name: str) -> dict[str, Any]:
    """name -> writer(path) for a safetensors file and a JSON file (save_checkpoint's `extra`)."""
    from safetensors.torch import save_file

    def write_tensors(path: Path) -> None:
        save_file(tensors, str(path))

    def write_scalars(path: Path) -> None:
        path.write_text(json.dumps(scalars, indent=1) + "\n", encoding="utf-8")

    return {tensors_name: write_tensors, scalars_name: write_scalars}


def _number(v: Any, low: float = 0.0) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= low


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _checked(scalars: Any) -> tuple[Progress, list[dict[str, Any]]]:
    """Progress and param groups of train_state.json, every field type- and range-checked."""
    if not isinstance(scalars, dict) or set(scalars) != {"version", "progress", "param_groups"}:
        raise ValueError("expected an object with version, progress and param_groups")
    if scalars["version"] != STATE_VERSION or isinstance(scalars["version"], bool):
        raise ValueError(f"unsupported version {scalars['version']!r}")
    p = scalars["progress"]
    names = {f.name for f in fields(Progress)}
    if not isinstance(p, dict) or set(p) - names:
        raise ValueError(f"progress must be an object with the keys {sorted(names)}")
    for name in ("epoch", "batch", "step", "best_epoch", "bad_epochs", "keys"):
        if name in p and not _count(p[name]):
            raise ValueError(f"progress.{name} must be a non-negative integer")
    for name in ("seconds", "epoch_loss", "epoch_count"):
        if name in p and not _number(p[name]):
            raise ValueError(f"progress.{name} must be a non-negative number")
    if p.get("best_val") is not None and not _number(p["best_val"], -math.inf):
        raise ValueError("progress.best_val must be a number or null")
    if not _history(p.get("history", [])):
        raise ValueError("progress.history must be a list of objects of numbers")
    p = {**p, "best_val": math.inf if p.get("best_val") is None else float(p["best_val"])}
    return Progress(**p), check_param_groups(scalars["param_groups"])


def _history(history: Any) -> bool:
    """True for a list of objects whose values are numbers (or null)."""
    return isinstance(history, list) and all(
        isinstance(h, dict) and all(v is None or _number(v, -math.inf) for v in h.values())
        for h in history)


def check_param_groups(groups: Any) -> list[dict[str, Any]]:
    """The param groups of a state file, each field type- and range-checked (ValueError if not)."""
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise ValueError("param_groups is not a list of objects")
    for g in groups:
        for name, value in g.items():
            if name == "params":
                ok = isinstance(value, list) and all(_count(i) for i in value)
            elif name == "betas":
                ok = isinstance(value, list) and len(value) == 2 and all(_number(b) for b in value)
            elif name in ("lr", "eps", "weight_decay"):
                ok = _number(value)
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
    _restore(tensors, groups, model, optimizer,
             f"{ckpt_dir}: the saved training state does not fit this model", "train")
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"])
    return progress


def _restore(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]], model: torch.nn.Module,
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


# -- finetune (REINFORCE) runs ---------------------------------------------------------------
RL_TENSORS = "rl_state.safetensors"
RL_SCALARS = "rl_state.json"
RL_STATE_VERSION = 1


@dataclass
class RLProgress:
    """Where a finetune run stands: enough, with the tensors, to continue it exactly."""

    episode: int = 0
    """Episodes completed."""
    batch: int = 0
    """Batches of episode `episode + 1` already done (non-zero only after an interrupt)."""
    totals: dict[str, float] = field(default_factory=dict)
    """rl_step's sums over those batches (the resumed episode reports them with the rest)."""
    seconds: float = 0.0
    """Time spent on those batches."""
    history: list[dict[str, float]] = field(default_factory=list)
    """One EpisodeStats (as a dict) per completed episode."""
    shuffle: list[Any] = field(default_factory=list)
    """random.Random.getstate() as JSON, taken when episode `episode + 1` started: it draws that
    episode's batch order, so a resumed episode replays the same batches."""


def random_state(value: Any) -> tuple[Any, ...]:
    """A random.Random state from its JSON form [version, [625 ints], gauss]; ValueError if bad."""
    if not isinstance(value, list) or len(value) != 3 or not isinstance(value[1], list):
        raise ValueError("progress.shuffle must be [version, [625 integers], null]")
    if not all(_count(v) and v < 2**32 for v in value[1]) or (
            value[2] is not None and not _number(value[2], -math.inf)):
        raise ValueError("progress.shuffle holds something other than 32-bit integers")
    state = (value[0], tuple(value[1]), value[2])
    try:
        random.Random().setstate(state)  # checks the version, the length and the position
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"progress.shuffle is not a random state ({exc})") from None
    return state


def _checked_rl(scalars: Any) -> tuple[RLProgress, list[dict[str, Any]]]:
    """RLProgress and param groups of rl_state.json, every field type- and range-checked."""
    if not isinstance(scalars, dict) or set(scalars) != {"version", "progress", "param_groups"}:
        raise ValueError("expected an object with version, progress and param_groups")
    if scalars["version"] != RL_STATE_VERSION or isinstance(scalars["version"], bool):
        raise ValueError(f"unsupported version {scalars['version']!r}")
    p = scalars["progress"]
    names = {f.name for f in fields(RLProgress)}
    if not isinstance(p, dict) or set(p) != names:
        raise ValueError(f"progress must be an object with the keys {sorted(names)}")
    for name in ("episode", "batch"):
        if not _count(p[name]):
            raise ValueError(f"progress.{name} must be a non-negative integer")
    if not _number(p["seconds"]):
        raise ValueError("progress.seconds must be a non-negative number")
    totals = p["totals"]
    if not isinstance(totals, dict) or not all(_number(v, -math.inf) for v in totals.values()):
        raise ValueError("progress.totals must be an object of numbers")
    if not _history(p["history"]) or len(p["history"]) != p["episode"]:
        raise ValueError("progress.history must be a list of objects of numbers, one per episode done")
    random_state(p["shuffle"])
    return RLProgress(**p), check_param_groups(scalars["param_groups"])


def rl_writers(model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
               progress: RLProgress) -> dict[str, Any]:
    """`extra` writers for checkpoint.save_checkpoint: an unfinished finetune run."""
    tensors = {**state_tensors(model, optimizer), "rng.sample": generator.get_state()}
    scalars = {"version": RL_STATE_VERSION, "progress": asdict(progress),
               "param_groups": param_groups_json(optimizer)}
    return _writers(tensors, scalars, RL_TENSORS, RL_SCALARS)


def load_rl_state(ckpt_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  generator: torch.Generator) -> RLProgress:
    """Restore weights, optimizer and both RNGs of an unfinished finetune run; BadCheckpoint if unusable."""
    from logllama_tui.checkpoint import load_weights

    if not (ckpt_dir / RL_TENSORS).is_file() or not (ckpt_dir / RL_SCALARS).is_file():
        raise BadCheckpoint(f"{ckpt_dir} holds no unfinished finetune run to resume "
                            "(it finished, or was not written by `logllama finetune`)")
    try:
        progress, groups = _checked_rl(json.loads((ckpt_dir / RL_SCALARS).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise BadCheckpoint(f"{ckpt_dir / RL_SCALARS} is corrupt ({exc}); finetune again "
                            "without --resume") from None
    tensors = load_weights(ckpt_dir / RL_TENSORS)
    misfit = f"{ckpt_dir}: the saved finetune state does not fit this model"
    _restore(tensors, groups, model, optimizer, misfit, "finetune")
    try:
        torch.set_rng_state(tensors["rng.torch"])
        generator.set_state(tensors["rng.sample"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise BadCheckpoint(f"{ckpt_dir / RL_TENSORS}: no usable random state ({exc}); finetune "
                            "again without --resume") from None
    return progress


@dataclass
class RLRun:
    """What a run of episodes carries from batch to batch; with the weights, its resumable state."""

    optimizer: torch.optim.Optimizer
    shuffle: random.Random
    """Draws each episode's batch order."""
    generator: torch.Generator
    """Draws the actions of action="sampled"."""
    progress: RLProgress


def start_run(model: torch.nn.Module, cfg: RLConfig) -> RLRun:
    """A fresh run: the seeds, AdamW over `model`'s parameters, nothing done yet."""
    torch.manual_seed(cfg.seed)
    shuffle = random.Random(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    return RLRun(optimizer, shuffle, generator, RLProgress(shuffle=state_json(shuffle.getstate())))


def state_json(state: tuple[Any, ...]) -> list[Any]:
    """random.Random.getstate() as JSON: [version, [625 ints], gauss]."""
    return [state[0], list(state[1]), state[2]]


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over a model's parameter names, dtypes, shapes and bytes: which model RL started from."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}:{tuple(tensor.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def data_sha256(sequences: list[Any], labels: list[list[bool | None]]) -> str:
    """sha256 of the RL data as the loop sees it: sids, keys and per-position labels, in order."""
    rows = [[s.sid, list(s.keys), lab] for s, lab in zip(sequences, labels, strict=True)]
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def resumable(out: Path) -> dict[str, Any]:
    """logllama.json of the unfinished finetune run in `out`; BadInput when there is none."""
    from logllama_tui.checkpoint import unfinished_meta

    meta = unfinished_meta(out, "finetune")
    if not isinstance(meta.get("rl"), dict):
        raise BadInput(f"--resume: {out} holds no unfinished finetune run (an unfinished `logllama "
                       "train` run resumes with `logllama train --resume`); drop --resume")
    if not (out / RL_SCALARS).is_file() or not (out / RL_TENSORS).is_file():
        raise BadInput(f"--resume: {out} has lost its finetune state ({RL_SCALARS} or "
                       f"{RL_TENSORS} is missing); finetune again without --resume")
    return meta


def resume_run(out: Path, model: torch.nn.Module, cfg: RLConfig, rl_meta: dict[str, Any]) -> RLRun:
    """The interrupted run in `out`, restored into `model`, after checking it is the same run.

    `rl_meta` is what the new run would record (finetune's meta["rl"]): every setting but the
    number of episodes, and the sha256 of the source weights and of the RL data, must equal the
    interrupted run's. More (or fewer) episodes than it was started with are fine: the episodes
    already done do not depend on how many follow.
    """
    old = resumable(out)["rl"]
    differ = [f"--{name.replace('_', '-')} {old.get(name)} (now {rl_meta[name]})"
              for name in to_dict(cfg) if name != "episodes" and old.get(name) != rl_meta[name]]
    if old.get("source_sha256") != rl_meta["source_sha256"]:
        differ.append(f"--model {old.get('source_model')} (now another model)")
    if old.get("data_sha256") != rl_meta["data_sha256"]:
        differ.append("other RL sequences than now (data, labels, marks or window options)")
    if differ:
        raise BadInput(f"--resume: the run in {out} was started with {'; '.join(differ)}; use the "
                       "same model, data and options as the interrupted run, or drop --resume")
    run = start_run(model, cfg)
    run.progress = load_rl_state(out, model, run.optimizer, run.generator)
    started = run.progress.episode + (1 if run.progress.batch else 0)
    if cfg.episodes < started:
        raise BadInput(f"--resume: the run in {out} has started episode {started}; give --episodes "
                       f"{started} or more")
    run.shuffle.setstate(random_state(run.progress.shuffle))
    return run


__all__ = [
    "Progress", "RLProgress", "RL_SCALARS", "RL_TENSORS", "SCALARS", "TENSORS", "check_param_groups",
    "RLRun", "data_sha256", "load_rl_state", "load_state", "param_groups_json", "random_state",
    "resumable", "resume_run", "rl_writers", "start_run", "state_json", "state_scalars",
    "state_tensors", "weights_sha256", "writers",
]
