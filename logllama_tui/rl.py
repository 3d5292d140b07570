"""REINFORCE finetuning with the Top-K reward (LogLLaMA's third stage), readable top to bottom.

At every position t of a labelled sequence the policy pi(.|s_t) is the model's softmax over the
candidates (real keys + EOS). The reward says whether the Top-K verdict on the true key y_t was
right, adjusted by the label:

    r_t = +1                      y_t in the Top-K, normal line
    r_t = anomalous_hit_reward    y_t in the Top-K, anomalous line (paper: +1; default -1)
    r_t = +1                      y_t missed, anomalous line
    r_t = -1                      y_t missed, normal line
    r_t <- clip(r_t + entropy_coef * H(pi(.|s_t)), -reward_clip, reward_clip)
    R_t  = sum_{t' >= t} gamma^(t'-t) r_t'
    A_t  = R_t - b_t, by default b_t = the return of a sequence whose every reward is the batch's
           mean reward rbar, i.e. A_t = sum gamma^(t'-t) (r_t' - rbar) (see `advantages`)

The action (see docs/rl.md for why): with `action="true_key"` (shipped) the action is the verdict
on the true key, whose log-likelihood is +log pi(y_t) for "in the Top-K" and -log pi(y_t) for
"missed", so loss = -mean_t d_t A_t log pi(y_t), d_t = +1 hit / -1 miss; a normal miss (r=-1)
then pulls y_t back into the Top-K and an anomalous miss (r=+1) pushes it further out. With
`action="sampled"` (the paper read literally) a_t is drawn from the softmax restricted to the
Top-K and loss = -mean_t A_t log pi_K(a_t); the reward does not depend on a_t, so its expected
gradient is zero and only the entropy term acts. Both add -entropy_coef * mean H to the loss.
With `anomalous_focus="worst"` (default) only the least expected position of each anomalous
sequence carries a reward: one missed key flags a sequence, and the rest of an anomalous session
is mostly ordinary keys that normal sessions share.
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from logllama_tui.config import BOS, EOS, FIRST_KEY, PAD, UNK, RLConfig, to_dict
from logllama_tui.errors import BadCheckpoint, BadInput
from logllama_tui.records import Sequence
from logllama_tui.rl_state import (
    RLRun,
    data_sha256,
    resume_run,
    rl_writers,
    start_run,
    state_json,
    weights_sha256,
)

Labels = list[bool | None]
"""One label per target (keys + EOS): True anomalous, False normal, None no reward there."""


# -- the math: pure functions of tensors -----------------------------------------------------
def candidate_logits(logits: torch.Tensor, n_keys: int) -> torch.Tensor:
    """[B,T,V] logits with PAD, BOS, UNK and ids past the real keys set to -inf (never candidates)."""
    keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    keep[FIRST_KEY: FIRST_KEY + n_keys] = True
    keep[EOS] = True
    return logits.masked_fill(~keep, float("-inf"))


def true_key_ranks(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B,T] rank of each target: how many candidates score strictly higher (as scoring.py)."""
    true = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1))  # [B,T,1]
    return (logits > true).sum(-1)


def topk_rewards(hits: torch.Tensor, anomalous: torch.Tensor, anomalous_hit: float = 1.0) -> torch.Tensor:
    """The paper's Top-K reward per position: hit +1 (anomalous: `anomalous_hit`), miss +1 if anomalous else -1."""
    one = torch.ones_like(hits, dtype=torch.float)
    on_hit = torch.where(anomalous, one * anomalous_hit, one)
    on_miss = torch.where(anomalous, one, -one)
    return torch.where(hits, on_hit, on_miss)


def entropy(log_probs: torch.Tensor) -> torch.Tensor:
    """[B,T] entropy (nats) of distributions given as log-probabilities [B,T,V] (-inf = 0 mass)."""
    finite = torch.where(torch.isfinite(log_probs), log_probs, torch.zeros_like(log_probs))
    return -(log_probs.exp() * finite).sum(-1)  # masking before the product keeps gradients finite


def shaped_rewards(base: torch.Tensor, ent: torch.Tensor, entropy_coef: float, clip: float) -> torch.Tensor:
    """r_t = clip(base_t + entropy_coef * H_t, -clip, clip)."""
    return (base + entropy_coef * ent).clamp(-clip, clip)


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """[B,T] R_t = r_t + gamma * R_{t+1} (padding must carry reward 0)."""
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        returns[:, t] = running
    return returns


def advantages(returns: torch.Tensor, valid: torch.Tensor, kind: str,
               rewards: torch.Tensor | None = None, gamma: float = 0.0) -> torch.Tensor:
    """A_t = R_t - b_t, b_t by `kind`: "reward", "position", "batch" or "none" (b = 0).

    reward: b_t = rbar * sum_{j < m_t} gamma^j (m_t positions left), i.e. A_t is the discounted sum
    of r - rbar, rbar the batch's mean reward: what a sequence that scored as usual would get, so
    a return does not grow with the length still to go. position: the mean valid return at t;
    batch: the mean valid return. `valid` may be a float weight (a merged row counts as its copies).
    """
    w = valid.float()
    if kind == "reward":
        if rewards is None:
            raise ValueError('baseline "reward" needs the rewards')
        rbar = (rewards * w).sum() / w.sum().clamp(min=1.0)
        return discounted_returns((rewards - rbar) * (w > 0), gamma)
    if kind == "none":
        return returns
    if kind == "batch":
        b = (returns * w).sum() / w.sum().clamp(min=1.0)
        return returns - b
    if kind == "position":
        b = (returns * w).sum(0) / w.sum(0).clamp(min=1.0)  # [T]
        return returns - b.unsqueeze(0)
    raise ValueError(f"unknown baseline {kind!r}: position, batch or none")


def worst_positions(ranks: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B,T] True at each row's highest-ranked (least expected) position among `mask`, if any."""
    masked = torch.where(mask, ranks, torch.full_like(ranks, -1))
    out = torch.zeros_like(mask)
    rows = mask.any(1).nonzero(as_tuple=True)[0]
    out[rows, masked[rows].argmax(1)] = True
    return out


def topk_log_policy(logits: torch.Tensor, k: int) -> torch.Tensor:
    """[B,T,V] log pi_K: the softmax restricted to the K highest logits (-inf elsewhere)."""
    kth = logits.topk(k, dim=-1).values[..., -1:]  # [B,T,1]
    return torch.log_softmax(logits.masked_fill(logits < kth, float("-inf")), dim=-1)


def sample_actions(log_policy: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B,T] one key per position drawn from pi (given as log-probabilities [B,T,V]).

    The draw happens on the generator's device (a CPU generator for a model on CUDA: the same
    draws on either, and multinomial refuses a generator from another device)."""
    probs = log_policy.exp().reshape(-1, log_policy.shape[-1])
    if generator is not None and generator.device != probs.device:
        drawn = torch.multinomial(probs.to(generator.device), 1, generator=generator)
        return drawn.to(log_policy.device).reshape(log_policy.shape[:-1])
    return torch.multinomial(probs, 1, generator=generator).reshape(log_policy.shape[:-1])


def reinforce_loss(logp_action: torch.Tensor, adv: torch.Tensor, valid: torch.Tensor,
                   ent: torch.Tensor, entropy_coef: float) -> torch.Tensor:
    """-mean_valid(A_t log pi(a_t|s_t)) - entropy_coef * mean_valid(H_t); A_t is not differentiated.

    `valid` may be a float weight per position (a de-duplicated row counts as many rows).
    """
    w = valid.float()
    n = w.sum().clamp(min=1.0)
    pg = -(adv.detach() * logp_action * w).sum() / n
    return pg - entropy_coef * (ent * w).sum() / n


# -- labels and the RL split -----------------------------------------------------------------
def position_labels(seq: Sequence) -> Labels:
    """Per target: the line's inline label when it has one, else the sequence's; EOS the sequence's."""
    labels: Labels = []
    for record in seq.records[: len(seq.keys)]:
        labels.append(record.is_alert if record.label is not None else seq.label)
    labels += [seq.label] * (len(seq.keys) - len(labels))
    return labels + [seq.label]


def excluded_sids(meta: dict[str, Any]) -> set[str]:
    """Sids the checkpoint already used (training, validation, earlier RL): never RL or test data."""
    out: set[str] = set()
    for key in ("train_sids", "val_sids", "rl_sids"):
        value = meta.get(key)
        if isinstance(value, list):
            out.update(str(s) for s in value)
    split = meta.get("split")
    if isinstance(split, dict):
        for key in ("train_sids", "val_sids", "train", "val"):
            if isinstance(split.get(key), list):
                out.update(str(s) for s in split[key])
    return out


def select_rl_sequences(seqs: Iterable[Sequence], meta: dict[str, Any], fraction: float,
                        seed: int) -> list[Sequence]:
    """A seeded `fraction` of the labelled sequences the model has not seen, drawn per class."""
    if not 0.0 < fraction <= 1.0:
        raise BadInput(f"--rl-fraction {fraction} is out of range: use a value in (0, 1]")
    seen = excluded_sids(meta)
    pool = [s for s in seqs if s.label is not None and s.sid not in seen and len(s) > 0]
    rng = random.Random(seed)
    chosen: list[Sequence] = []
    for label in (False, True):
        group = sorted((s for s in pool if s.label is label), key=lambda s: s.sid)
        rng.shuffle(group)
        n = round(fraction * len(group))
        chosen += group[: max(1, n) if group else 0]
    return sorted(chosen, key=lambda s: s.sid)


@dataclass(frozen=True)
class FeedbackMatch:
    """How feedback marks met the data: labelled sequences and what did not match."""

    sequences: list[Sequence]
    labels: list[Labels]
    matched: int
    unmatched: int
    """Marks whose (file, line) is not in the data or whose text differs there."""


def feedback_labels(seqs: Iterable[Sequence], marks: Iterable[Any]) -> FeedbackMatch:
    """Per-position labels from people's marks: a marked line gets its verdict, others no reward."""
    by_line = {(os.path.realpath(m.file), m.line): m for m in marks}
    used: set[tuple[str, int]] = set()
    out_seqs: list[Sequence] = []
    out_labels: list[Labels] = []
    for seq in seqs:
        labels: Labels = [None] * (len(seq.keys) + 1)
        for i, record in enumerate(seq.records[: len(seq.keys)]):
            where = (os.path.realpath(record.source), record.lineno)
            mark = by_line.get(where)
            if mark is not None and mark.text == record.text:
                labels[i] = mark.is_anomaly
                used.add(where)
        if any(lab is not None for lab in labels):
            out_seqs.append(seq)
            out_labels.append(labels)
    return FeedbackMatch(out_seqs, out_labels, len(used), len(by_line) - len(used))


# -- the training loop -----------------------------------------------------------------------
@dataclass
class EpisodeStats:
    """What one pass over the RL sequences did (the progress report)."""

    episode: int
    episodes: int
    mean_reward: float
    hit_normal: float
    """Share of normal positions whose true key was in the Top-K."""
    hit_anomalous: float
    """Share of anomalous positions whose true key was in the Top-K (lower is better)."""
    entropy: float
    loss: float
    positions: int
    seconds: float


Piece = tuple[tuple[int, ...], tuple[int, ...], tuple[bool | None, ...], int]
"""(inputs, targets, labels, how many identical copies the data holds)."""


def _batches(seqs: list[Sequence], labels: list[Labels], size: int, context: int,
             rng: random.Random) -> list[list[Piece]]:
    """Framed pieces cut at the context, identical ones merged (weighted), batched by length."""
    counts: dict[tuple[Any, ...], int] = {}
    for seq, lab in zip(seqs, labels, strict=True):
        inputs, targets = (BOS, *seq.keys), (*seq.keys, EOS)
        for start in range(0, len(inputs), context):
            piece = (inputs[start:start + context], targets[start:start + context],
                     tuple(lab[start:start + context]))
            counts[piece] = counts.get(piece, 0) + 1  # logs repeat: one forward per distinct piece
    pieces: list[Piece] = [(*piece, n) for piece, n in counts.items()]
    rng.shuffle(pieces)
    pieces.sort(key=lambda p: len(p[0]))  # stable: equal lengths stay shuffled
    groups = [pieces[i:i + size] for i in range(0, len(pieces), size)]
    rng.shuffle(groups)
    return groups


def _tensors(batch: list[Piece], device: torch.device) -> list[torch.Tensor]:
    """ids, attention mask, targets, label mask (valid), anomalous flags, row weights: all [B,T]."""
    width = max(len(p[0]) for p in batch)
    ids = torch.full((len(batch), width), PAD, dtype=torch.long)
    tgt = torch.full((len(batch), width), PAD, dtype=torch.long)
    valid = torch.zeros((len(batch), width), dtype=torch.bool)
    anom = torch.zeros((len(batch), width), dtype=torch.bool)
    weight = torch.tensor([[float(p[3])] for p in batch]).expand(len(batch), width)
    for row, (inputs, targets, labs, _n) in enumerate(batch):
        ids[row, : len(inputs)] = torch.tensor(inputs)
        tgt[row, : len(targets)] = torch.tensor(targets)
        for col, lab in enumerate(labs):
            valid[row, col] = lab is not None and targets[col] != UNK
            anom[row, col] = bool(lab)
    mask = (ids != PAD).long()
    return [t.to(device) for t in (ids, mask, tgt, valid, anom, weight)]


def rl_step(model: Any, optimizer: torch.optim.Optimizer, batch: list[Piece], n_keys: int, k: int,
            cfg: RLConfig, generator: torch.Generator | None = None) -> dict[str, float]:
    """One policy-gradient update on one batch of pieces; returns sums for the episode's report."""
    device = next(model.parameters()).device
    ids, mask, tgt, valid, anom, weight = _tensors(batch, device)
    logits = candidate_logits(model(input_ids=ids, attention_mask=mask).logits.float(), n_keys)
    valid = valid & torch.isfinite(logits.gather(-1, tgt.unsqueeze(-1))[..., 0])
    with torch.no_grad():
        ranks = true_key_ranks(logits, tgt)
        hits = ranks < k  # [B,T]: the Top-K verdict on the true key
        if cfg.anomalous_focus == "worst":
            valid = valid & (~anom | worst_positions(ranks, valid & anom))
    if cfg.action == "sampled":
        log_pi = topk_log_policy(logits, k)  # [B,T,V]
        actions = sample_actions(log_pi.detach(), generator)
        logp = log_pi.gather(-1, actions.unsqueeze(-1))[..., 0]
    elif cfg.action == "true_key":
        log_pi = torch.log_softmax(logits, dim=-1)
        direction = hits.float() * 2 - 1  # +1: "in the Top-K", -1: "missed"
        logp = direction * log_pi.gather(-1, tgt.unsqueeze(-1))[..., 0]
    else:
        raise BadInput(f"unknown RL action {cfg.action!r}: true_key or sampled")
    logp = torch.where(valid, logp, torch.zeros_like(logp))  # padding/UNK targets: log 0 = -inf
    ent = entropy(log_pi)  # [B,T]
    with torch.no_grad():
        base = topk_rewards(hits, anom, cfg.anomalous_hit_reward)
        rewards = shaped_rewards(base, ent, cfg.entropy_coef, cfg.reward_clip) * valid
        w = valid * weight  # [B,T]: each distinct piece counts as often as it occurs
        adv = advantages(discounted_returns(rewards, cfg.gamma), w, cfg.baseline, rewards, cfg.gamma)
    loss = reinforce_loss(logp, adv, w, ent, cfg.entropy_coef)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    normal, anomalous = w * ~anom, w * anom
    return {
        "reward": float((rewards * weight).sum()), "positions": float(w.sum()),
        "hit_normal": float((hits * normal).sum()), "normal": float(normal.sum()),
        "hit_anom": float((hits * anomalous).sum()), "anom": float(anomalous.sum()),
        "entropy": float((ent.detach() * w).sum()), "loss": float(loss.detach()) * float(w.sum()),
    }


def run_episodes(model: Any, seqs: list[Sequence], labels: list[Labels], n_keys: int, k: int,
                 cfg: RLConfig, progress: Callable[[EpisodeStats], None] | None = None,
                 context: int = 512, run: RLRun | None = None,
                 on_interrupt: Callable[[RLRun], None] | None = None) -> list[EpisodeStats]:
    """cfg.episodes seeded passes of REINFORCE over `seqs`; the model is updated in place.

    `run` continues an interrupted run (default: `start_run`). SIGINT/SIGTERM stop the loop
    between two batches, never inside one: `on_interrupt(run)` then sees a consistent state (the
    caller saves it) and KeyboardInterrupt goes on up, as it does when `progress` raises it. A
    second signal stops at once; inside a batch, which may then be half applied, nothing is
    handed to `on_interrupt`.
    """
    from logllama_tui.train import DeferredInterrupt

    if cfg.episodes <= 0:
        raise BadInput(f"--episodes {cfg.episodes}: RL needs at least 1 episode")
    run = run if run is not None else start_run(model, cfg)
    p = run.progress
    model.train()
    deferred = DeferredInterrupt()
    started, busy = time.monotonic(), False
    try:
        while p.episode < cfg.episodes:
            started = time.monotonic() - p.seconds
            batches = _batches(seqs, labels, cfg.batch_size, context, run.shuffle)
            for i in range(p.batch, len(batches)):  # an interrupted episode goes on where it stopped
                busy = True
                for name, value in rl_step(model, run.optimizer, batches[i], n_keys, k, cfg,
                                           run.generator).items():
                    p.totals[name] = p.totals.get(name, 0.0) + value
                p.batch, busy = i + 1, False
                deferred.check()
            busy, t = True, p.totals
            n = max(t.get("positions", 0.0), 1.0)
            stats = EpisodeStats(
                p.episode + 1, cfg.episodes, t.get("reward", 0.0) / n,
                t.get("hit_normal", 0.0) / max(t.get("normal", 0.0), 1.0),
                t.get("hit_anom", 0.0) / max(t.get("anom", 0.0), 1.0),
                t.get("entropy", 0.0) / n, t.get("loss", 0.0) / n,
                int(t.get("positions", 0.0)), time.monotonic() - started,
            )
            p.history.append(vars(stats))
            p.episode, p.batch, p.totals, p.seconds = p.episode + 1, 0, {}, 0.0
            p.shuffle = state_json(run.shuffle.getstate())  # the next episode's batch order
            busy = False
            if progress is not None:
                progress(stats)
            deferred.check()
    except KeyboardInterrupt:
        if busy:  # a second signal: a batch or its bookkeeping may be half done, save nothing
            raise
        p.seconds = time.monotonic() - started if p.batch else 0.0
        if on_interrupt is not None:
            on_interrupt(run)
        raise
    finally:
        deferred.restore()
    model.eval()
    return [EpisodeStats(**h) for h in p.history]


def finetune(checkpoint: Any, sequences: list[Sequence], rl_cfg: RLConfig, out_dir: Any,
             progress: Callable[[EpisodeStats], None] | None = None,
             labels: list[Labels] | None = None, resume: bool = False,
             on_interrupt: Callable[[Path], None] | None = None) -> Any:
    """REINFORCE-finetune a copy of `checkpoint`'s model on `sequences`; save it as a NEW checkpoint.

    `sequences` are the RL data as chosen (see `select_rl_sequences`); `labels` gives per-position
    labels (default: `position_labels`). The input checkpoint, on disk and in memory, is untouched.
    SIGINT/SIGTERM save the run so far to `out_dir` (unfinished: "complete": false plus
    rl_state.*), call `on_interrupt(out_dir)` and raise KeyboardInterrupt; `resume=True`
    continues such a run, which must have the same source model, data and settings.
    """
    from logllama_tui.checkpoint import Checkpoint, read_meta, save_checkpoint
    from logllama_tui.scoring import model_context, resolve_k

    out = Path(out_dir)
    if out.exists() and out.resolve() == Path(checkpoint.path).resolve():
        raise BadInput(f"--out {out} is the input model: finetuning never overwrites it; pick a new name")
    labels = labels if labels is not None else [position_labels(s) for s in sequences]
    if not any(lab is not None for labs in labels for lab in labs):
        raise BadInput("no labelled sequences to finetune on: RL's reward needs labels "
                       "(--labels CSV, inline BGL/Thunderbird labels, or --feedback marks)")
    n_keys = int(checkpoint.meta["n_keys"])
    k = resolve_k(rl_cfg.k, n_keys)
    model = copy.deepcopy(checkpoint.model)
    meta = {key: value for key, value in checkpoint.meta.items()
            if key not in ("format", "format_version", "logllama_version", "created")}
    previous = meta.get("rl_sids") if isinstance(meta.get("rl_sids"), list) else []
    meta["rl_sids"] = sorted(set(map(str, previous)) | {s.sid for s in sequences})
    rl_meta = {
        **to_dict(rl_cfg), "k_resolved": k, "sequences": len(sequences),
        "anomalous_sequences": sum(1 for s in sequences if s.label),
        "source_model": str(checkpoint.path), "source_created": checkpoint.meta.get("created"),
        "source_sha256": weights_sha256(checkpoint.model),
        "data_sha256": data_sha256(sequences, labels),
    }
    run = resume_run(out, model, rl_cfg, rl_meta) if resume else start_run(model, rl_cfg)
    for h in run.progress.history:  # the episodes a resumed run did before its interruption
        if set(h) != {f.name for f in fields(EpisodeStats)}:
            raise BadCheckpoint(f"{out}: the saved finetune history is not a list of episodes; "
                                "finetune again without --resume")
        h["episodes"] = rl_cfg.episodes  # "of how many", as this run counts them

    def save(complete: bool) -> Path:
        rl = {**rl_meta, "history": run.progress.history, "previous": checkpoint.meta.get("rl")}
        extra = None if complete else rl_writers(model, run.optimizer, run.generator, run.progress)
        return save_checkpoint(out, model, checkpoint.parser, {**meta, "rl": rl, "complete": complete},
                               extra=extra)

    def interrupted(_run: RLRun) -> None:
        save(complete=False)
        if on_interrupt is not None:
            on_interrupt(out)

    run_episodes(model, sequences, labels, n_keys, k, rl_cfg, progress,
                 context=model_context(model) or 512, run=run, on_interrupt=interrupted)
    path = save(complete=True)
    return Checkpoint(path=path, model=model, parser=checkpoint.parser, meta=read_meta(path))


__all__ = [
    "EpisodeStats", "FeedbackMatch", "advantages", "candidate_logits", "discounted_returns",
    "entropy", "excluded_sids", "feedback_labels", "finetune", "position_labels",
    "reinforce_loss", "rl_step", "run_episodes", "sample_actions", "select_rl_sequences",
    "shaped_rewards", "topk_log_policy", "topk_rewards", "true_key_ranks",
]
