"""The next-key networks: LogLLaMA (a small LlamaForCausalLM) and the DeepLog LSTM baseline.

Both are called the same way, `model(input_ids=[B,T], attention_mask=[B,T]).logits -> [B,T,V]`,
so the trainer and the scorer never ask which one they hold. `transformers` is imported only in
the llama branch: `from transformers import LlamaForCausalLM` alone costs several seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from logllama_tui.config import BOS, EOS, PAD, ModelConfig

ARCHS = ("llama", "deeplog")


@dataclass
class NextKeyOutput:
    """What DeepLogLSTM returns: the same `.logits` attribute as a HF CausalLMOutput."""

    logits: torch.Tensor
    """[B, T, V] unnormalised scores for the next key at every position."""


class DeepLogLSTM(nn.Module):
    """DeepLog (Du et al., CCS 2017): key embedding -> stacked LSTM -> linear over the keys."""

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden: int = 64, layers: int = 2):
        super().__init__()
        self.vocab_size = vocab_size
        self.embed_dim, self.hidden, self.layers = embed_dim, hidden, layers
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> NextKeyOutput:
        """Logits for the next key after each position; padding sits at the end, so it is harmless."""
        x = self.embed(input_ids)  # [B, T, E]
        h, _ = self.lstm(x)  # [B, T, H]: causal by construction, padding only follows real keys
        return NextKeyOutput(logits=self.head(h))  # [B, T, V]

    def config_dict(self) -> dict[str, Any]:
        """What config.json records for this network."""
        return {
            "arch": "deeplog", "vocab_size": self.vocab_size, "embed_dim": self.embed_dim,
            "hidden": self.hidden, "layers": self.layers,
        }


def llama_config(cfg: ModelConfig, vocab_size: int) -> Any:
    """The transformers LlamaConfig for `cfg` (head_dim is explicit: 60/12 = 5 is odd, RoPE needs even)."""
    from transformers import LlamaConfig  # deferred: importing transformers costs seconds

    if cfg.head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {cfg.head_dim}")
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,  # plain multi-head attention, as in the paper
        head_dim=cfg.head_dim,
        intermediate_size=cfg.intermediate,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
        tie_word_embeddings=False,  # input and output key tables learn separately (tiny vocab)
        attn_implementation="sdpa",
        use_cache=False,  # training and whole-sequence scoring do not need the KV cache
    )


def build_model(cfg: ModelConfig, vocab_size: int) -> nn.Module:
    """A freshly initialised network for `vocab_size` keys (reserved ids included)."""
    if vocab_size <= 0:
        raise ValueError("vocab_size must be positive")
    if cfg.arch == "llama":
        from transformers import LlamaForCausalLM  # deferred, see the module docstring

        return LlamaForCausalLM(llama_config(cfg, vocab_size))
    if cfg.arch == "deeplog":
        return DeepLogLSTM(vocab_size, cfg.embed_dim, cfg.lstm_hidden, cfg.lstm_layers)
    raise ValueError(f"unknown architecture {cfg.arch!r}; expected one of {', '.join(ARCHS)}")


def model_config_json(model: nn.Module) -> dict[str, Any]:
    """The config.json content of a built network (HF's own for llama, ours for deeplog)."""
    if isinstance(model, DeepLogLSTM):
        return model.config_dict()
    return model.config.to_dict()  # type: ignore[union-attr, operator]


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "ARCHS", "DeepLogLSTM", "NextKeyOutput", "build_model", "count_params", "llama_config",
    "model_config_json",
]
