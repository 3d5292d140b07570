"""A lean forward pass over a LlamaForCausalLM's weights: plain torch, no transformers at run time.

The paper-size model (18 layers, hidden 60, 12 heads of 6) is so small that transformers' per-call
machinery (mask building, cache objects, kwargs plumbing) costs more than the arithmetic. This
module runs the same layers with the same weights and the same operations in the same order
(RMSNorm in float32, RoPE with cos/sin from the same inverse frequencies, sdpa, SiLU-gated MLP),
so its logits match transformers' to rounding and the ranks are the same (tests/test_stream.py).
It also reads a checkpoint directory directly (safetensors + JSON), so `scan` need not import
transformers at all (seconds saved on every run).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

LAYER = "model.layers.{}."
"""Prefix of one decoder layer's weights in a LlamaForCausalLM state dict."""


class LeanLlama:
    """LlamaForCausalLM inference over the same weights: q/k/v and gate/up fused, KV cache in place."""

    def __init__(self, weights: dict[str, torch.Tensor], n_layers: int, n_heads: int, head_dim: int,
                 eps: float = 1e-6, rope_theta: float = 10000.0, max_positions: int = 512) -> None:
        self.n_layers, self.n_heads, self.head_dim = n_layers, n_heads, head_dim
        self.eps, self.max_positions = eps, max_positions
        w = {k: v.detach().float().contiguous() for k, v in weights.items()}
        self.embed = w["model.embed_tokens.weight"]  # [V, E]
        self.norm = w["model.norm.weight"]
        self.head = w["lm_head.weight"]  # [V, E]
        self.vocab_size, self.hidden = self.head.shape
        self.layers: list[tuple[torch.Tensor, ...]] = []
        for i in range(n_layers):
            p = LAYER.format(i)
            qkv = torch.cat([w[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])  # [3*H*D, E]
            gate_up = torch.cat([w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"]])
            self.layers.append((w[p + "input_layernorm.weight"], qkv, w[p + "self_attn.o_proj.weight"],
                                w[p + "post_attention_layernorm.weight"], gate_up,
                                w[p + "mlp.down_proj.weight"]))
        self.intermediate = self.layers[0][5].shape[1] if self.layers else 0
        # RoPE exactly as transformers computes it: float32 inverse frequencies, cat(freqs, freqs)
        inv_freq = 1.0 / (rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        freqs = torch.arange(max_positions, dtype=torch.float)[:, None] * inv_freq  # [P, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        half = head_dim // 2
        sign = torch.cat([-torch.ones(half), torch.ones(half)])  # rotate_half = roll * sign
        self.cos, self.sin = emb.cos(), emb.sin() * sign  # [P, D]

    @classmethod
    def from_hf(cls, model: Any) -> LeanLlama:
        """The lean twin of a loaded LlamaForCausalLM (shares nothing mutable with it)."""
        c = model.config
        if not supported_config(c.to_dict()):
            raise ValueError("this llama config is not supported by the lean forward")
        return cls(dict(model.state_dict()), c.num_hidden_layers, c.num_attention_heads,
                   c.head_dim, c.rms_norm_eps, _rope_theta(c.to_dict()), c.max_position_embeddings)

    def kv_buffer(self, batch: int, length: int) -> torch.Tensor:
        """An uninitialised KV cache [layers, 2 (k, v), B, H, length, D] (positions are written
        before they are read; zeroing it cost 15% of a 16-stream step)."""
        return torch.empty(self.n_layers, 2, batch, self.n_heads, length, self.head_dim)

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)  # float32 already, as transformers casts to
        return weight * (x * torch.rsqrt(variance + self.eps))

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, positions: torch.Tensor, kv: torch.Tensor | None = None,
                at: int = 0, ragged: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """Logits [B, L, V] for ids [B, L] at positions [B, L].

        kv: a cache from `kv_buffer` holding `at` earlier positions (every row alike); the new keys
        and values are written at [at, at + L) and attention covers [0, at + L). ragged: (past,
        length) per row instead of `at`: row b's past sits at [0, past) of kv, its new positions go
        right after it, and attention runs row by row over exactly its own positions (padding costs
        nothing). Without kv the pass is plain causal (right padding is harmless: real positions
        never look right).
        """
        b, n = ids.shape
        h, d = self.n_heads, self.head_dim
        x = F.embedding(ids, self.embed)  # [B, L, E]
        cos = self.cos[positions].unsqueeze(1).unsqueeze(0)  # [1, B, 1, L, D]: q and k at once
        sin = self.sin[positions].unsqueeze(1).unsqueeze(0)
        scale = 1.0 / math.sqrt(d)
        mask = _causal(at if kv is not None else 0, n)
        groups: dict[tuple[int, int], list[int]] = {}
        for r, pm in enumerate(ragged or []):
            groups.setdefault(pm, []).append(r)
        group_idx = {pm: torch.tensor(rows) for pm, rows in groups.items() if len(rows) > 1}
        row_masks = {pm: _causal(*pm) for pm in groups}
        for i, (w_in, w_qkv, w_o, w_post, w_gu, w_down) in enumerate(self.layers):
            y = self._rms(x, w_in)
            qkv = F.linear(y, w_qkv).view(b, n, 3, h, d).permute(2, 0, 3, 1, 4)  # [3, B, H, L, D]
            qk = qkv[:2]
            qk = qk * cos + qk.roll(d // 2, dims=-1) * sin  # RoPE on q and k together
            q, k, v = qk[0], qk[1], qkv[2]
            if ragged is not None and kv is not None:
                a = torch.zeros_like(q)  # [B, H, L, D]; padding rows stay zero
                for (p, m), rows in groups.items():  # rows alike in (past, length) go together
                    if len(rows) == 1:
                        r = rows[0]
                        kv[i, 0, r, :, p:p + m] = k[r, :, :m]
                        kv[i, 1, r, :, p:p + m] = v[r, :, :m]
                        a[r, :, :m] = _attend(q[r, :, :m], kv[i, 0, r, :, :p + m],
                                              kv[i, 1, r, :, :p + m], row_masks[(p, m)], scale)
                        continue
                    idx = group_idx[(p, m)]
                    kv[i, 0, idx, :, p:p + m] = k[idx, :, :m]
                    kv[i, 1, idx, :, p:p + m] = v[idx, :, :m]
                    a[idx, :, :m] = _attend(q[idx, :, :m], kv[i, 0, idx, :, :p + m],
                                            kv[i, 1, idx, :, :p + m], row_masks[(p, m)], scale)
            else:
                if kv is not None:
                    kv[i, 0, :, :, at:at + n] = k
                    kv[i, 1, :, :, at:at + n] = v
                    k, v = kv[i, 0, :, :, :at + n], kv[i, 1, :, :, :at + n]
                a = _attend(q, k, v, mask, scale)
            x = x + F.linear(a.transpose(1, 2).reshape(b, n, h * d), w_o)
            y = self._rms(x, w_post)
            gate, up = F.linear(y, w_gu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w_down)
        return F.linear(self._rms(x, self.norm), self.head)  # [B, L, V]

    __call__ = forward

    @torch.inference_mode()
    def packed(self, ids: torch.Tensor, positions: torch.Tensor, kv: torch.Tensor,
               ragged: list[tuple[int, int]]) -> torch.Tensor:
        """Logits [T, V] for rows packed end to end (ids, positions: [T]; row b has ragged[b] =
        (past, length) and its past at [0, past) of kv[:, :, b]): no padding in any matmul."""
        h, d = self.n_heads, self.head_dim
        t = ids.shape[0]
        x = F.embedding(ids, self.embed)  # [T, E]
        cos, sin = self.cos[positions][:, None, None], self.sin[positions][:, None, None]  # [T,1,1,D]
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (past, len) -> [(row, offset)]
        at = 0
        for r, (p, m) in enumerate(ragged):
            groups.setdefault((p, m), []).append((r, at))
            at += m
        plan = []
        for (p, m), rows in groups.items():
            idx = torch.tensor([[o + j for j in range(m)] for _, o in rows])  # [G, m]
            plan.append((p, m, torch.tensor([r for r, _ in rows]), idx, _causal(p, m)))
        scale = 1.0 / math.sqrt(d)
        for i, (w_in, w_qkv, w_o, w_post, w_gu, w_down) in enumerate(self.layers):
            qkv = F.linear(self._rms(x, w_in), w_qkv).view(t, 3, h, d)
            qk = qkv[:, :2]
            qk = qk * cos + qk.roll(d // 2, dims=-1) * sin  # [T, 2, H, D]
            a = torch.empty(t, h, d)
            for p, m, rows, idx, mask in plan:
                kv[i, 0, rows, :, p:p + m] = qk[idx, 1].transpose(1, 2)  # [G, H, m, D]
                kv[i, 1, rows, :, p:p + m] = qkv[idx, 2].transpose(1, 2)
                keys, values = kv[i, 0, rows, :, :p + m], kv[i, 1, rows, :, :p + m]
                a[idx] = _attend(qk[idx, 0].transpose(1, 2), keys, values, mask, scale).transpose(1, 2)
            x = x + F.linear(a.reshape(t, h * d), w_o)
            gate, up = F.linear(self._rms(x, w_post), w_gu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w_down)
        return F.linear(self._rms(x, self.norm), self.head)  # [T, V]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
            scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v: 2-3x faster than sdpa's CPU kernels at head_dim 6."""
    w = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)  # [.., L, S]
    if mask is not None:
        w += mask
    return torch.matmul(w.softmax(-1), v)


_MASKS: dict[tuple[int, int], torch.Tensor] = {}


def _causal(past: int, n: int) -> torch.Tensor | None:
    """Additive bottom-right causal mask [n, past + n] (None for a single query: it sees all)."""
    if n == 1:
        return None
    got = _MASKS.get((past, n))
    if got is None:
        allowed = torch.arange(past + n)[None, :] <= torch.arange(n)[:, None] + past
        got = torch.zeros(n, past + n).masked_fill_(~allowed, float("-inf"))
        if len(_MASKS) > 4096:
            _MASKS.clear()
        _MASKS[(past, n)] = got
    return got


def _rope_theta(config: dict[str, Any]) -> float:
    rope = config.get("rope_parameters") or {}
    return float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))


def supported_config(config: dict[str, Any]) -> bool:
    """True when the lean forward reproduces this llama config (default RoPE, MHA, no biases)."""
    rope = config.get("rope_parameters") or {}
    heads = config.get("num_attention_heads")
    return (config.get("model_type") == "llama" and rope.get("rope_type", "default") == "default"
            and config.get("num_key_value_heads", heads) == heads and not config.get("attention_bias")
            and not config.get("mlp_bias") and config.get("hidden_act", "silu") == "silu"
            and not config.get("tie_word_embeddings", False)
            and int(config.get("head_dim") or 0) % 2 == 0)


def load_lean(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(network, meta) of a checkpoint dir without transformers: LeanLlama, or the DeepLog LSTM.

    Raises ValueError when the checkpoint is a llama the lean forward does not reproduce (the caller
    then falls back to checkpoint.load_checkpoint).
    """
    from logllama_tui.checkpoint import _read_json, load_weights, model_config_of, read_meta
    from logllama_tui.errors import BadCheckpoint
    from logllama_tui.model import DeepLogLSTM

    path = Path(path)
    meta = read_meta(path)
    cfg = model_config_of(meta, path)
    config = _read_json(path / "config.json")
    vocab = meta["vocab_size"]
    if not isinstance(config, dict) or config.get("vocab_size") != vocab:
        raise BadCheckpoint(f"{path / 'config.json'}: vocab_size does not match; retrain the model")
    weights = load_weights(path / "model.safetensors")
    if cfg.arch == "deeplog":
        net = DeepLogLSTM(vocab, cfg.embed_dim, cfg.lstm_hidden, cfg.lstm_layers)
        try:
            net.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise BadCheckpoint(f"{path / 'model.safetensors'} does not fit the config ({exc})") from None
        return net.eval(), meta
    if cfg.arch != "llama" or not supported_config(config):
        raise ValueError("not a llama config the lean forward supports")
    expect = _expected_shapes(cfg.n_layers, cfg.n_heads, cfg.head_dim, cfg.hidden, cfg.intermediate,
                              vocab)
    if {k: tuple(v.shape) for k, v in weights.items()} != expect:
        raise BadCheckpoint(f"{path / 'model.safetensors'} does not fit the config; retrain the model")
    net = LeanLlama(weights, cfg.n_layers, cfg.n_heads, cfg.head_dim,
                    float(config.get("rms_norm_eps", 1e-6)), _rope_theta(config), cfg.max_positions)
    return net, meta


def _expected_shapes(layers: int, heads: int, head_dim: int, hidden: int, inter: int,
                     vocab: int) -> dict[str, tuple[int, ...]]:
    """Every tensor name of a LlamaForCausalLM state dict and its shape."""
    hd = heads * head_dim
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden),
                                       "model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = LAYER.format(i)
        out |= {p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
                p + "self_attn.q_proj.weight": (hd, hidden), p + "self_attn.k_proj.weight": (hd, hidden),
                p + "self_attn.v_proj.weight": (hd, hidden), p + "self_attn.o_proj.weight": (hidden, hd),
                p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                p + "mlp.down_proj.weight": (hidden, inter)}
    return out


__all__ = ["LeanLlama", "load_lean", "supported_config"]
