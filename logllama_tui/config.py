"""Every default of logllama lives here: one frozen dataclass per stage.

The CLI reads its option defaults from these classes, checkpoints record them as JSON, and the
README's settings table is written from their field docstrings. Nothing in this module imports
torch, transformers or textual: `logllama --help` must stay fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# Reserved log keys. Real templates are numbered from FIRST_KEY upwards.
PAD = 0
"""Padding: never predicted, never scored."""
BOS = 1
"""Start of a sequence: the context for predicting its first key."""
EOS = 2
"""End of a sequence: predicting it turns "the session stopped early" into an ordinary miss."""
UNK = 3
"""A template never seen in training: always anomalous."""
FIRST_KEY = 4
RESERVED_NAMES = ("<pad>", "<s>", "</s>", "<unseen>")


@dataclass(frozen=True)
class ReaderConfig:
    """How raw bytes become lines."""

    max_line_bytes: int = 64 * 1024
    """A longer line is cut to this many bytes (and counted), never dropped."""
    encoding: str = "utf-8"
    """Decoding; invalid bytes are replaced, never fatal."""


DEFAULT_MASKS: tuple[tuple[str, str], ...] = (
    # (regex, mask name). Order matters: the first masks run first.
    (r"blk_-?\d+", "BLK"),
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "UUID"),
    (r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})(:\d{1,5})?((?=[^A-Za-z0-9])|$)", "IP"),
    (r"((?<=[^A-Za-z0-9])|^)(/[\w.\-]+)+/?((?=[^A-Za-z0-9])|$)", "PATH"),
    (r"((?<=[^A-Za-z0-9])|^)(0x[a-fA-F0-9]+)((?=[^A-Za-z0-9])|$)", "HEX"),
    (r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+(\.\d+)?)((?=[^A-Za-z0-9])|$)", "NUM"),
)


@dataclass(frozen=True)
class ParserConfig:
    """Drain settings and the masks applied before it (see drain3.TemplateMinerConfig)."""

    sim_th: float = 0.4
    """Similarity threshold for a line to join an existing template."""
    depth: int = 4
    """Depth of Drain's prefix tree (at least 3)."""
    max_children: int = 100
    """Most children of one tree node."""
    max_clusters: int | None = None
    """Cap on the number of templates (None: unbounded)."""
    extra_delimiters: tuple[str, ...] = ()
    """Characters that split tokens besides whitespace."""
    parametrize_numeric_tokens: bool = True
    """Treat tokens that contain digits as parameters."""
    masks: tuple[tuple[str, str], ...] = DEFAULT_MASKS
    """(regex, name) pairs; a match becomes <name> before Drain sees the line."""
    mask_prefix: str = "<"
    mask_suffix: str = ">"


@dataclass(frozen=True)
class WindowConfig:
    """How keys are grouped into sequences."""

    mode: str = "auto"
    """session | time | count | auto (session when the session regex matches, else the format's default)."""
    session_regex: str = r"blk_-?\d+"
    """A line joins every session whose id this regex finds in it."""
    session_timeout: float = 86400.0
    """Seconds (of log time, or of wall time when tailing) after which an idle session is closed."""
    max_open_sessions: int = 100_000
    """Past this many open sessions the least recently seen is closed (bounded memory)."""
    window_seconds: float = 60.0
    """Length of a time window (BGL/Thunderbird: 60 s)."""
    step_seconds: float = 60.0
    """Hop between time windows (= window_seconds: tumbling)."""
    window_size: int = 20
    """Keys in a count window."""
    step: int = 20
    """Hop between count windows (= window_size: tumbling)."""


@dataclass(frozen=True)
class ModelConfig:
    """The next-key model. Defaults are the LogLLaMA paper's."""

    arch: str = "llama"
    """llama (LogLLaMA) or deeplog (the 2-layer LSTM baseline)."""
    n_layers: int = 18
    """Decoder layers (paper: 18)."""
    n_heads: int = 12
    """Attention heads (paper: 12)."""
    hidden: int = 60
    """Hidden size (paper: 60)."""
    head_dim: int = 6
    """Per-head size. 60/12 = 5 is odd, and RoPE needs an even rotary dimension, so it is set to 6."""
    intermediate: int = 160
    """Width of the MLP inside each decoder layer."""
    max_positions: int = 512
    """Context length; longer sequences are scored with a stride, never truncated."""
    lstm_hidden: int = 64
    """DeepLog baseline: LSTM hidden size."""
    lstm_layers: int = 2
    """DeepLog baseline: LSTM layers."""
    embed_dim: int = 32
    """DeepLog baseline: key embedding size."""


@dataclass(frozen=True)
class TrainConfig:
    """Next-key training on normal sequences."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    train_fraction: float | None = None
    """Fraction of normal sequences to train on (paper: 0.1). None: all but the validation slice."""
    val_fraction: float = 0.1
    """Share of the training draw held back for validation, early stopping and --k auto."""
    patience: int = 3
    """Epochs without validation improvement before stopping early."""
    seed: int = 0
    device: str = "auto"
    """auto | cpu | cuda | mps."""
    max_train_len: int = 512
    """Longer training sequences are cut into chunks of this many keys."""
    dedup: bool = True
    """Train on each distinct key sequence once, weighted by its count (the same loss, less work)."""
    threads: int = 0
    """torch CPU threads per process; 0: one (tiny matrices: more threads only add contention; see train.set_threads)."""


@dataclass(frozen=True)
class DetectConfig:
    """Top-K detection."""

    k: str = "0.5"
    """A count (e.g. 9), a fraction of the training keys (0.5, the paper's), or auto."""
    target_fpr: float = 0.01
    """For k=auto: the false-positive rate aimed at on held-back normal sequences."""
    batch_size: int = 128
    """Sequences per forward pass when scoring."""
    candidates: int = 5
    """Candidates shown for a flagged key."""


@dataclass(frozen=True)
class RLConfig:
    """REINFORCE finetuning with the Top-K reward."""

    episodes: int = 10
    """Passes over the RL sequences."""
    k: str = "0.5"
    """Top-K during RL: a count or a fraction of the keys (as DetectConfig.k)."""
    entropy_coef: float = 0.001
    """Weight of the entropy bonus H(pi(.|s_t)) in the reward and the loss."""
    reward_clip: float = 1.0
    """Per-position rewards are clipped to [-reward_clip, reward_clip]."""
    gamma: float = 0.9
    """Discount of the return R_t = sum gamma^(t'-t) r_t'."""
    lr: float = 3e-5
    """AdamW learning rate (1e-4 with entropy 0.01 drifted HDFS F1 from 0.74 to 0.26: docs/rl.md)."""
    seed: int = 0
    rl_fraction: float = 0.1
    """Seeded share of the labelled data used for RL; eval excludes it."""
    action: str = "true_key"
    """true_key (log pi of the true key, signed by the verdict; see docs/rl.md) or sampled (a key drawn from the Top-K)."""
    baseline: str = "reward"
    """reward (mean reward subtracted before discounting), position (mean return at each position), batch (mean return) or none."""
    anomalous_hit_reward: float = -1.0
    """Reward when the true key is in the Top-K on an anomalous line (paper: +1; -1 measured better, docs/rl.md)."""
    batch_size: int = 32
    """Sequences per policy-gradient step."""
    anomalous_focus: str = "worst"
    """all: every position of an anomalous line/sequence is rewarded; worst: only the least expected one per sequence."""


@dataclass(frozen=True)
class TailConfig:
    """Live following."""

    from_start: bool = False
    poll_interval: float = 0.25
    ring_size: int = 10_000
    """Recent lines kept on screen; anomalies are kept up to max_anomalies."""
    max_anomalies: int = 100_000
    """Anomalous lines kept on screen (and for export); past it the oldest go, with a notice.
    Bounds memory when nearly every line is flagged (a model trained on another format)."""
    batch_ms: int = 50
    """Lines landing within this many ms are parsed and scored together."""


def to_dict(obj: Any) -> dict[str, Any]:
    """A config dataclass as plain JSON-able data."""
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from `to_dict` output; unknown keys are an error."""
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} settings: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        default = getattr(cls(), name) if name in names else None
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[name] = value
    return cls(**kwargs)


__all__ = [
    "PAD", "BOS", "EOS", "UNK", "FIRST_KEY", "RESERVED_NAMES", "DEFAULT_MASKS",
    "ReaderConfig", "ParserConfig", "WindowConfig", "ModelConfig", "TrainConfig",
    "DetectConfig", "RLConfig", "TailConfig", "to_dict", "from_dict", "field",
]
