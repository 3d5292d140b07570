"""The networks: shapes, causality, padding, the paper's size, and the odd head_dim guard."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from logllama_tui.config import PAD, ModelConfig
from logllama_tui.model import DeepLogLSTM, build_model, count_params

torch.set_num_threads(1)
TINY = ModelConfig(n_layers=1, n_heads=2, hidden=16, head_dim=8, intermediate=32, max_positions=64)


@pytest.mark.parametrize("arch", ["llama", "deeplog"])
def test_logits_shape_and_causality(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(TINY, arch=arch, lstm_hidden=16, embed_dim=8), 12).eval()
    ids = torch.tensor([[1, 4, 5, 6, 7], [1, 4, 5, 6, 8]])  # [B=2, T=5], differ only at the end
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (2, 5, 12)
    # a later key never changes the prediction at an earlier position
    assert torch.allclose(logits[0, :4], logits[1, :4], atol=1e-5)
    assert not torch.allclose(logits[0, 4], logits[1, 4])


@pytest.mark.parametrize("arch", ["llama", "deeplog"])
def test_right_padding_does_not_change_real_positions(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(TINY, arch=arch, lstm_hidden=16, embed_dim=8), 10).eval()
    short = torch.tensor([[1, 4, 5]])
    padded = torch.tensor([[1, 4, 5, PAD, PAD]])
    with torch.no_grad():
        a = model(input_ids=short, attention_mask=torch.ones_like(short)).logits
        b = model(input_ids=padded, attention_mask=torch.tensor([[1, 1, 1, 0, 0]])).logits
    assert torch.allclose(a[0], b[0, :3], atol=1e-5)


def test_paper_size_llama_is_about_0_9m_params() -> None:
    model = build_model(ModelConfig(), vocab_size=50)  # HDFS: ~46 templates + 4 reserved ids
    assert model.config.head_dim == 6 and model.config.num_hidden_layers == 18
    assert model.config._attn_implementation == "sdpa"
    assert 800_000 < count_params(model) < 1_000_000  # 837,660 for 50 keys


def test_deeplog_is_a_two_layer_lstm_of_64() -> None:
    model = build_model(ModelConfig(arch="deeplog"), vocab_size=32)
    assert isinstance(model, DeepLogLSTM)
    assert model.lstm.num_layers == 2 and model.lstm.hidden_size == 64
    assert model.config_dict() == {"arch": "deeplog", "vocab_size": 32, "embed_dim": 32, "hidden": 64, "layers": 2}


def test_odd_head_dim_and_unknown_arch_are_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        build_model(dataclasses.replace(TINY, head_dim=5), 10)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model(dataclasses.replace(TINY, arch="gpt"), 10)
