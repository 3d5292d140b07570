"""Next-key training on normal sequences, readable top to bottom (nanoGPT style).

`train` draws the seeded split, frames and de-duplicates the sequences (batching.py), then runs
AdamW with a warmup + cosine learning rate (`get_lr`) under HF accelerate, so
`accelerate launch -m logllama_tui train ...` runs DDP unchanged. After every epoch the main
process writes a checkpoint atomically: the best weights so far (by validation loss) plus the
latest weights, optimizer and RNG (train_state.py), so `resume=True` continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from logllama_tui.batching import (
    BucketBatchSampler,
    collate,
    make_examples,
    split_sequences,
    weighted_loss,
)
from logllama_tui.checkpoint import Checkpoint, load_checkpoint, read_meta, save_checkpoint
from logllama_tui.config import FIRST_KEY, DetectConfig, ModelConfig, TrainConfig, to_dict
from logllama_tui.errors import BadInput
from logllama_tui.model import build_model, count_params
from logllama_tui.records import Sequence
from logllama_tui.train_state import Progress, load_state, writers

MIN_LR_RATIO = 0.1
"""The cosine schedule ends at this fraction of the peak learning rate."""
GRAD_CLIP = 1.0

ProgressFn = Callable[[dict[str, Any]], None]


def get_lr(step: int, total_steps: int, lr: float, warmup_steps: int) -> float:
    """Linear warmup to `lr`, then cosine decay to lr * MIN_LR_RATIO at `total_steps`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return lr * MIN_LR_RATIO
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return lr * MIN_LR_RATIO + coeff * (lr - lr * MIN_LR_RATIO)


def pick_device(device: str) -> str:
    """auto -> cuda, mps or cpu; an unavailable explicit choice is BadInput."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if device == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if device == "cuda" and not cuda:
        raise BadInput("--device cuda, but this torch sees no CUDA GPU: use --device cpu (or auto)")
    if device == "mps" and not mps:
        raise BadInput("--device mps, but MPS is not available here: use --device cpu (or auto)")
    if device not in ("cpu", "cuda", "mps"):
        raise BadInput(f"unknown device {device!r}: use auto, cpu, cuda or mps")
    return device


def make_accelerator(device: str) -> Any:
    """An Accelerator on `device`: bf16 (or fp16) autocast on CUDA only, full precision elsewhere."""
    from accelerate import Accelerator  # deferred: imports a good part of transformers' stack

    dev = pick_device(device)
    precision = "no"
    if dev == "cuda":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Accelerator(cpu=dev == "cpu", mixed_precision=precision)


def set_threads(threads: int, processes: int) -> int:
    """torch intra-op threads per process: `threads`, or (0) one.

    The matrices of these models are tiny (hidden 60, LSTM 64), so intra-op threads buy nothing
    and cost a lot when the cores are busy: on the shared 2-core dev box, 2 threads trained the
    paper-size llama at ~95 keys/s against ~700-800 with 1, and the LSTM at ~1k against ~30k.
    Use more processes (`accelerate launch`) to use more cores, or --threads N to override.
    """
    n = threads or 1
    torch.set_num_threads(n)
    return n


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], device: Any) -> float:
    """Mean next-key cross-entropy over the (weighted) targets of `batches`; nan when empty."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0.0
    for batch in batches:
        b = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits  # [B,T,V]
        loss_sum, n = weighted_loss(logits, b["targets"], b["weights"])
        total, count = total + loss_sum.item(), count + n.item()
    model.train(was_training)
    return total / count if count else float("nan")


def fixed_batches(seqs: list[Sequence], cfg: TrainConfig) -> list[dict[str, torch.Tensor]]:
    """Validation batches: framed, de-duplicated, bucketed, never shuffled."""
    examples = make_examples(seqs, cfg.max_train_len, dedup=True)
    sampler = BucketBatchSampler([len(e) for e in examples], cfg.batch_size, cfg.seed, shuffle=False)
    return [collate([examples[i] for i in idx]) for idx in sampler]


def train(
    sequences: list[Sequence],
    parser: Any,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    resume: bool = False,
) -> Checkpoint:
    """Train a next-key model on the normal sequences; returns the final (best) checkpoint."""
    from torch.utils.data import DataLoader

    out = Path(out_dir)
    cfg = train_cfg
    accelerator = make_accelerator(cfg.device)
    threads = set_threads(cfg.threads, accelerator.num_processes)
    main = accelerator.is_main_process
    notify = progress if (progress is not None and main) else (lambda event: None)

    # -- data -------------------------------------------------------------------------------
    train_seqs, val_seqs, _rest = split_sequences(sequences, cfg.train_fraction, cfg.val_fraction, cfg.seed)
    if not any(s.keys for s in train_seqs):
        n_anom = sum(1 for s in sequences if s.label is True)
        raise BadInput(f"no normal sequences to train on ({len(sequences)} sequences, {n_anom} labelled "
                       "anomalous): give more data, a larger --train-fraction, or check --labels")
    if model_cfg.arch == "llama" and model_cfg.max_positions < cfg.max_train_len:
        cfg = dataclasses.replace(cfg, max_train_len=model_cfg.max_positions)  # chunks fit the context
    examples = make_examples(train_seqs, cfg.max_train_len, dedup=cfg.dedup)
    weight = sum(e.weight for e in examples)  # the chunks before de-duplication
    sampler = BucketBatchSampler([len(e) for e in examples], cfg.batch_size, cfg.seed,
                                 n_batches=math.ceil(weight / cfg.batch_size))  # steps as if repeated
    loader = DataLoader(examples, batch_sampler=sampler, collate_fn=collate)  # type: ignore[arg-type]
    val_batches = fixed_batches(val_seqs, cfg)
    n_keys_epoch = sum(len(e) for e in examples)  # positions computed per epoch (after dedup)
    split_meta = {
        "train_fraction": cfg.train_fraction, "val_fraction": cfg.val_fraction, "seed": cfg.seed,
        "train_sids": [s.sid for s in train_seqs], "val_sids": [s.sid for s in val_seqs],
        # Keys seen in training sequences; at detection every other key counts as unseen.
        "train_keys": sorted({k for s in train_seqs for k in s.keys if k >= FIRST_KEY}),
        "normal": sum(1 for s in sequences if s.label is not True),
        "anomalous": sum(1 for s in sequences if s.label is True),
        "examples": len(examples), "distinct_fraction": round(len(examples) / max(1, weight), 4),
    }

    # -- model and optimizer ----------------------------------------------------------------
    vocab_size = len(parser.vocab)
    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg, vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=(0.9, 0.95))
    state = Progress()
    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if resume:
        state, best_weights = _resume(out, model, optimizer, split_meta, vocab_size, model_cfg)
    base_meta = {
        **(meta or {}), "arch": model_cfg.arch, "model_config": to_dict(model_cfg),
        "train_config": to_dict(cfg), "vocab_size": vocab_size, "n_keys": parser.vocab.n_keys,
        "params": count_params(model), "seed": cfg.seed, "split": split_meta,
    }
    base_meta.setdefault("detect", {"k": DetectConfig().k, "target_fpr": DetectConfig().target_fpr})
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    warmup = min(cfg.warmup_steps, total_steps // 5)

    def save(complete: bool) -> None:
        """Write the checkpoint (main process only): best weights, plus the run state unless done."""
        if main:
            raw = accelerator.unwrap_model(model)
            latest = {k: v.detach().clone() for k, v in raw.state_dict().items()}
            raw.load_state_dict(best_weights)  # the checkpoint's model is the best one so far
            try:
                extra = None if complete else writers(_Weights(latest), optimizer, state)
                save_checkpoint(out, raw, parser, {**base_meta, "complete": complete,
                                                   "metrics": _metrics(state, threads, accelerator.num_processes)},
                                extra=extra)
            finally:
                raw.load_state_dict(latest)
        accelerator.wait_for_everyone()

    # -- the loop ---------------------------------------------------------------------------
    model.train()
    deferred = DeferredInterrupt()  # SIGINT/SIGTERM stop the loop between batches, never inside one
    busy = False  # inside a batch or the epoch's bookkeeping: a second signal may leave it half done
    try:
        while state.epoch < cfg.epochs and state.bad_epochs < cfg.patience:
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(state.epoch)  # accelerate re-seeds the sampler from its own counter
            sampler.set_epoch(state.epoch)  # so that resume replays this epoch's batch order
            t0, epoch_keys = time.perf_counter(), 0
            epoch_loss, epoch_count = state.epoch_loss, state.epoch_count  # non-zero after a resume
            for i, batch in enumerate(loader):
                if i < state.batch:
                    continue  # done before the interruption this run resumes
                busy = True
                lr = get_lr(state.step, total_steps, cfg.lr, warmup)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss_sum, n = weighted_loss(logits, batch["targets"], batch["weights"])  # [B,T,V] -> scalars
                loss = loss_sum / n
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), GRAD_CLIP)
                optimizer.step()
                state.step, state.batch = state.step + 1, i + 1
                keys = int(batch["attention_mask"].sum().item()) * accelerator.num_processes
                epoch_loss, epoch_count, epoch_keys = epoch_loss + loss_sum.item(), epoch_count + n.item(), epoch_keys + keys
                state.epoch_loss, state.epoch_count = epoch_loss, epoch_count
                busy = False
                elapsed = time.perf_counter() - t0
                notify({"event": "step", "epoch": state.epoch + 1, "epochs": cfg.epochs, "batch": i + 1,
                        "batches": steps_per_epoch, "loss": loss.item(), "lr": lr,
                        "keys_per_s": epoch_keys / max(elapsed, 1e-9)})
                deferred.check()
            busy, seconds = True, time.perf_counter() - t0
            val_loss = evaluate(accelerator.unwrap_model(model), val_batches, accelerator.device)
            train_loss = epoch_loss / max(epoch_count, 1e-9)
            state.epoch, state.batch = state.epoch + 1, 0
            state.epoch_loss, state.epoch_count = 0.0, 0.0
            state.seconds, state.keys = state.seconds + seconds, state.keys + epoch_keys
            watched = train_loss if math.isnan(val_loss) else val_loss  # no validation slice: train loss
            if watched < state.best_val - 1e-4:
                state.best_val, state.best_epoch, state.bad_epochs = watched, state.epoch, 0
                best_weights = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()}
            else:
                state.bad_epochs += 1
            state.history.append({"epoch": state.epoch, "train_loss": round(train_loss, 5),
                                  "val_loss": None if math.isnan(val_loss) else round(val_loss, 5),
                                  "keys_per_s": round(epoch_keys / max(seconds, 1e-9), 1),
                                  "seconds": round(seconds, 2)})
            save(complete=False)
            busy = False
            notify({"event": "epoch", **state.history[-1], "epochs": cfg.epochs,
                    "best_epoch": state.best_epoch, "examples": len(examples), "keys_per_epoch": n_keys_epoch})
            deferred.check()
    except KeyboardInterrupt:
        if not busy:  # a second signal inside a batch: keep the last consistent save on disk
            save(complete=False)  # resumable from the batch it reached
        raise
    finally:
        deferred.restore()
    return _finish(out, accelerator, model, best_weights, parser, base_meta, state, threads, val_seqs, notify)


class DeferredInterrupt:
    """While training: SIGINT/SIGTERM are noted and raised as KeyboardInterrupt at `check()`.

    A signal that struck between optimizer.step() and the progress update would make --resume
    replay a batch already applied. A second signal interrupts at once (a stuck step); when it
    lands inside a batch or an epoch's bookkeeping, train() keeps the last save on disk.
    Only the main thread can install handlers; elsewhere signals keep their default behaviour.
    """

    def __init__(self) -> None:
        import signal
        import threading

        self.hit = False
        self.old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True

    def check(self) -> None:
        if self.hit:
            raise KeyboardInterrupt

    def restore(self) -> None:
        import signal

        for sig, handler in self.old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self.old = {}


class _Weights(torch.nn.Module):
    """A stand-in whose state_dict() is a given dict (the latest weights while the model holds the best)."""

    def __init__(self, weights: dict[str, torch.Tensor]):
        super().__init__()
        self._w = weights

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self._w


def _metrics(state: Progress, threads: int, processes: int = 1) -> dict[str, Any]:
    """The figures logllama.json and `logllama models` show."""
    last = state.history[-1] if state.history else {}
    return {
        "train_loss": last.get("train_loss"), "val_loss": last.get("val_loss"),
        "best_val_loss": None if math.isinf(state.best_val) else round(state.best_val, 5),
        "best_epoch": state.best_epoch, "epochs": state.epoch, "steps": state.step,
        "seconds": round(state.seconds, 2), "keys_per_s": round(state.keys / max(state.seconds, 1e-9), 1),
        "threads": threads, "processes": processes, "history": state.history,
    }


def _resume(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, split_meta: dict[str, Any],
            vocab_size: int, model_cfg: ModelConfig) -> tuple[Progress, dict[str, torch.Tensor]]:
    """Progress and best weights of the unfinished run in `out`, after checking it is the same run."""
    from logllama_tui.checkpoint import load_weights

    if not out.is_dir():
        raise BadInput(f"--resume: {out} does not exist; start the run without --resume")
    old = read_meta(out)
    if old.get("complete", True):
        raise BadInput(f"--resume: the run in {out} already finished; train again without --resume")
    if old["vocab_size"] != vocab_size or old["model_config"] != to_dict(model_cfg):
        raise BadInput(f"--resume: {out} was trained with another model or vocabulary; use the "
                       "same data and options as the interrupted run, or drop --resume")
    if old.get("split", {}).get("train_sids") != split_meta["train_sids"]:
        raise BadInput(f"--resume: the training sequences differ from the run in {out}; use the same "
                       "data, labels, fractions and seed, or drop --resume")
    best = load_weights(out / "model.safetensors")
    return load_state(out, model, optimizer), best


def _finish(out: Path, accelerator: Any, model: Any, best_weights: dict[str, torch.Tensor], parser: Any,
            base_meta: dict[str, Any], state: Progress, threads: int, val_seqs: list[Sequence],
            notify: ProgressFn) -> Checkpoint:
    """Calibrate K on the validation slice (when asked) and write the final, complete checkpoint."""
    raw = accelerator.unwrap_model(model)
    raw.load_state_dict(best_weights)
    raw.eval()
    detect = dict(base_meta.get("detect", {}))
    detect.update(_calibrate(raw, parser, detect, val_seqs, accelerator.device))
    if accelerator.is_main_process:
        meta = {**base_meta, "detect": detect, "complete": True,
                "metrics": _metrics(state, threads, accelerator.num_processes)}
        save_checkpoint(out, raw, parser, meta)
    accelerator.wait_for_everyone()
    notify({"event": "done", "path": str(out), **_metrics(state, threads, accelerator.num_processes)})
    return load_checkpoint(out, device="cpu")


def _calibrate(model: Any, parser: Any, detect: dict[str, Any], val_seqs: list[Sequence], device: Any) -> dict[str, Any]:
    """The resolved K: scoring.calibrate_k on the validation slice for k=auto, else resolve_k."""
    from logllama_tui import scoring

    spec = str(detect.get("k", DetectConfig().k))
    n_keys = parser.vocab.n_keys
    if spec == "auto":
        default = {"k": DetectConfig().k, "k_resolved": int(scoring.resolve_k(DetectConfig().k, n_keys))}
        if not val_seqs:
            return {**default, "note": "no validation slice to calibrate K"}
        try:
            k = scoring.calibrate_k(model, val_seqs, n_keys=n_keys, target_fpr=detect.get("target_fpr", 0.01),
                                    device=str(device))
        except BadInput as exc:  # the model is trained: keep it, with the default K and the reason
            return {**default, "note": f"k=auto failed: {exc}"}
        return {"k": "auto", "k_resolved": int(k)}
    return {"k": spec, "k_resolved": int(scoring.resolve_k(spec, n_keys))}


__all__ = ["DeferredInterrupt", "evaluate", "get_lr", "make_accelerator", "pick_device", "set_threads",
           "train"]
