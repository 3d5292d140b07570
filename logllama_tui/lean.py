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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

LAYER = "model.layers.{}."
"""Prefix of one decoder layer's weights in a LlamaForCausalLM state dict."""
SDPA_CELLS = 1024
"""Query x key cells of one attention matrix from which sdpa's fused CPU kernel beats two matmuls
and a softmax (measured at head_dim 6: 0.6 vs 1.8 ms at 100 x 200, 1.9 vs 5.6 ms for 16 x 16 x 206;
below, two matmuls win on many tiny matrices: 16 x 21 x 21, 0.5 vs 0.66 ms)."""
QUERY_BLOCK = 64
"""Queries per block of a long causal attention (one 250-key streaming step: ~2,000 keys/s in
blocks of 32, 64 or 128 against ~1,500 in one masked rectangle)."""


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
                at: int = 0) -> torch.Tensor:
        """Logits [B, L, V] for ids [B, L] at positions [B, L].

        kv: a cache from `kv_buffer` holding `at` earlier positions (every row alike); the new keys
        and values are written at [at, at + L) and attention covers [0, at + L). Without kv the
        pass is plain causal (right padding is harmless: real positions never look right).
        """
        b, n = ids.shape
        h, d = self.n_heads, self.head_dim
        x = F.embedding(ids, self.embed)  # [B, L, E]
        cos = self.cos[positions].unsqueeze(1).unsqueeze(0)  # [1, B, 1, L, D]: q and k at once
        sin = self.sin[positions].unsqueeze(1).unsqueeze(0)
        scale = 1.0 / math.sqrt(d)
        for i, (w_in, w_qkv, w_o, w_post, w_gu, w_down) in enumerate(self.layers):
            y = self._rms(x, w_in)
            qkv = F.linear(y, w_qkv).view(b, n, 3, h, d).permute(2, 0, 3, 1, 4)  # [3, B, H, L, D]
            qk = qkv[:2]
            qk = qk * cos + qk.roll(d // 2, dims=-1) * sin  # RoPE on q and k together
            q, k, v = qk[0], qk[1], qkv[2]
            if kv is not None:
                kv[i, 0, :, :, at:at + n] = k
                kv[i, 1, :, :, at:at + n] = v
                k, v = kv[i, 0, :, :, :at + n], kv[i, 1, :, :, :at + n]
            a = _attend_causal(q, k, v, at if kv is not None else 0, scale)
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
        plan: list[tuple[int, int, Any, Any]] = []
        for (p, m), rows in groups.items():
            if len(rows) == 1:  # one row: slices, so every read and write below is a view
                r, o = rows[0]
                plan.append((p, m, slice(r, r + 1), slice(o, o + m)))
                continue
            idx = torch.tensor([[o + j for j in range(m)] for _, o in rows])  # [G, m]
            plan.append((p, m, torch.tensor([r for r, _ in rows]), idx))
        scale = 1.0 / math.sqrt(d)
        for i, (w_in, w_qkv, w_o, w_post, w_gu, w_down) in enumerate(self.layers):
            qkv = F.linear(self._rms(x, w_in), w_qkv).view(t, 3, h, d)
            qk = qkv[:, :2]
            qk = qk * cos + qk.roll(d // 2, dims=-1) * sin  # [T, 2, H, D]
            a = torch.empty(t, h, d)
            for p, m, rows, idx in plan:
                q_g, v_g = (qk[idx], qkv[idx]) if isinstance(idx, torch.Tensor) else (
                    qk[idx].unsqueeze(0), qkv[idx].unsqueeze(0))  # [G, m, 2|3, H, D]
                kv[i, 0, rows, :, p:p + m] = q_g[:, :, 1].transpose(1, 2)  # [G, H, m, D]
                kv[i, 1, rows, :, p:p + m] = v_g[:, :, 2].transpose(1, 2)
                keys, values = kv[i, 0, rows, :, :p + m], kv[i, 1, rows, :, :p + m]
                out = _attend_causal(q_g[:, :, 0].transpose(1, 2), keys, values, p, scale)
                a[idx] = out.transpose(1, 2) if isinstance(idx, torch.Tensor) else out[0].transpose(0, 1)
            x = x + F.linear(a.reshape(t, h * d), w_o)
            gate, up = F.linear(self._rms(x, w_post), w_gu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w_down)
        return F.linear(self._rms(x, self.norm), self.head)  # [T, V]

    @torch.inference_mode()
    def tree(self, ids: torch.Tensor, positions: torch.Tensor, pool: torch.Tensor, at: int,
             buckets: list[Bucket]) -> torch.Tensor:
        """Logits [T, V] of T new nodes of a prefix trie whose K/V live in `pool`.

        pool: [layers, 2, capacity, H, D], one slot per trie node (node-major: gathering a path
        copies 72-float runs, 50x faster than gathering 6-float runs from a head-major pool); the
        new nodes own slots [at, at + T). Each layer writes the new nodes' K/V before any row
        reads, so a row may extend a node made in this same call. A row is a chain of new nodes
        (parent, child, grandchild...) attending over its path from the root; rows of similar
        shape are padded together (Bucket).
        """
        h, d = self.n_heads, self.head_dim
        t = ids.shape[0]
        x = F.embedding(ids, self.embed)  # [T, E]
        cos, sin = self.cos[positions][:, None, None], self.sin[positions][:, None, None]  # [T,1,1,D]
        scale = 1.0 / math.sqrt(d)
        for i, (w_in, w_qkv, w_o, w_post, w_gu, w_down) in enumerate(self.layers):
            qkv = F.linear(self._rms(x, w_in), w_qkv).view(t, 3, h, d)
            qk = qkv[:, :2]
            qk = qk * cos + qk.roll(d // 2, dims=-1) * sin  # [T, 2, H, D]
            keys, values = pool[i, 0], pool[i, 1]  # [capacity, H, D]
            keys[at:at + t] = qk[:, 1]
            values[at:at + t] = qkv[:, 2]
            q = qk[:, 0]  # [T, H, D]
            a = torch.empty(t, h, d)
            for b in buckets:
                n, width = b.path.shape
                flat = b.path.view(-1)
                out = _attend(q[b.queries].transpose(1, 2),  # [N, H, m, D]
                              keys.index_select(0, flat).view(n, width, h, d).transpose(1, 2),
                              values.index_select(0, flat).view(n, width, h, d).transpose(1, 2),
                              b.mask, scale)  # [N, H, m, D]
                a[b.dest] = out.transpose(1, 2)[b.valid]
            x = x + F.linear(a.reshape(t, h * d), w_o)
            gate, up = F.linear(self._rms(x, w_post), w_gu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w_down)
        return F.linear(self._rms(x, self.norm), self.head)  # [T, V]


@dataclass(slots=True)
class Bucket:
    """N rows of a `LeanLlama.tree` call padded to m queries over L path positions."""

    queries: torch.Tensor
    """[N, m] indices into the call's T new nodes, right-aligned (padding repeats a real one)."""
    path: torch.Tensor
    """[N, L] pool slots of each row's path from the root, right-aligned (padding: any slot)."""
    mask: torch.Tensor
    """[N, 1, m, L] additive: 0 where a query may look (its ancestors and itself), else -inf."""
    valid: torch.Tensor
    """[N, m] bool: the real queries."""
    dest: torch.Tensor
    """[n_valid] where the real queries' outputs go among the T new nodes."""


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
            scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v: sdpa's fused CPU kernel from SDPA_CELLS query x key cells
    up (3x faster at 100 x 200), two matmuls below (faster for many tiny matrices)."""
    if q.shape[-2] * k.shape[-2] >= SDPA_CELLS:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    w = torch.matmul(q, k.transpose(-1, -2)).mul_(scale)  # [.., L, S]
    if mask is not None:
        w += mask
    return torch.matmul(w.softmax(-1), v)


def _attend_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int,
                   scale: float) -> torch.Tensor:
    """Attention of n queries over `past` earlier positions and themselves (causal), in blocks of
    QUERY_BLOCK queries that each stop at their own last key: the masked half is not computed
    (a 494-query restart: 4.6 ms instead of 7.7 with one masked square)."""
    n = q.shape[-2]
    if n <= QUERY_BLOCK:
        return _attend(q, k, v, _causal(past, n), scale)
    out = torch.empty_like(q)
    for a in range(0, n, QUERY_BLOCK):
        b = min(n, a + QUERY_BLOCK)
        out[..., a:b, :] = _attend(q[..., a:b, :], k[..., :past + b, :], v[..., :past + b, :],
                                   _causal(past + a, b - a), scale)
    return out


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


__all__ = ["Bucket", "LeanLlama", "load_lean", "supported_config"]
