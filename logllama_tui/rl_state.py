"""Resumable finetune (REINFORCE) runs without pickle: rl_state.safetensors + rl_state.json.

rl_state.safetensors holds what train_state.safetensors holds (the latest weights, AdamW's moments,
the torch RNG) plus the action sampler's generator "rng.sample"; rl_state.json holds `RLProgress`
(episode, batches done in it, running totals, history, the shuffle's random state) and AdamW's
param groups. Validation and the optimizer's restore are shared with train_state.py.
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
from logllama_tui.train_state import (
    check_param_groups,
    is_count,
    is_history,
    is_number,
    param_groups_json,
    progress_of,
    restore_state,
    state_tensors,
    state_writers,
)

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
    if not all(is_count(v) and v < 2**32 for v in value[1]) or (
            value[2] is not None and not is_number(value[2], -math.inf)):
        raise ValueError("progress.shuffle holds something other than 32-bit integers")
    state = (value[0], tuple(value[1]), value[2])
    try:
        random.Random().setstate(state)  # checks the version, the length and the position
    except (ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"progress.shuffle is not a random state ({exc})") from None
    return state


def _checked_rl(scalars: Any) -> tuple[RLProgress, list[dict[str, Any]]]:
    """RLProgress and param groups of rl_state.json, every field type- and range-checked."""
    p = progress_of(scalars, RL_STATE_VERSION)
    names = {f.name for f in fields(RLProgress)}
    if not isinstance(p, dict) or set(p) != names:
        raise ValueError(f"progress must be an object with the keys {sorted(names)}")
    for name in ("episode", "batch"):
        if not is_count(p[name]):
            raise ValueError(f"progress.{name} must be a non-negative integer")
    if not is_number(p["seconds"]):
        raise ValueError("progress.seconds must be a non-negative number")
    totals = p["totals"]
    if not isinstance(totals, dict) or not all(is_number(v, -math.inf) for v in totals.values()):
        raise ValueError("progress.totals must be an object of numbers")
    if not is_history(p["history"]) or len(p["history"]) != p["episode"]:
        raise ValueError("progress.history must be a list of objects of numbers, one per episode done")
    random_state(p["shuffle"])
    return RLProgress(**p), check_param_groups(scalars["param_groups"])


def rl_writers(model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator,
               progress: RLProgress) -> dict[str, Any]:
    """`extra` writers for checkpoint.save_checkpoint: an unfinished finetune run."""
    tensors = {**state_tensors(model, optimizer), "rng.sample": generator.get_state()}
    scalars = {"version": RL_STATE_VERSION, "progress": asdict(progress),
               "param_groups": param_groups_json(optimizer)}
    return state_writers(tensors, scalars, RL_TENSORS, RL_SCALARS)


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
    restore_state(tensors, groups, model, optimizer, misfit, "finetune")
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
    "RLProgress", "RLRun", "RL_SCALARS", "RL_STATE_VERSION", "RL_TENSORS", "data_sha256",
    "load_rl_state", "random_state", "resumable", "resume_run", "rl_writers", "start_run",
    "state_json", "weights_sha256",
]
