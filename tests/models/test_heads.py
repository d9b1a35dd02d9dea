"""Temporal heads: shapes, gradients, padding invariance, low-precision safety, the recurrent mask-based path."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from video_cnn_rnn.models.heads import MeanHead, RecurrentHead, TransformerHead, build_head, masked_max

IN_FEATURES = 12

HEAD_CONFIGS: dict[str, dict[str, Any]] = {
    "gru": {"kind": "gru"},
    "lstm": {"kind": "lstm"},
    "bigru": {"kind": "gru", "bidirectional": True, "rnn_hidden_sizes": [6, 4, 3], "rnn_dropout": 0.2},
    "transformer_max": {"kind": "transformer", "pooling": "max"},
    "transformer_mean": {"kind": "transformer", "pooling": "mean", "d_model": 8, "num_heads": 2},
    "transformer_cls": {"kind": "transformer", "pooling": "cls", "num_layers": 2},
    "mean": {"kind": "mean"},
    "max": {"kind": "max"},
}

# Every recurrent shape the mask-based (export) path must reproduce: cells, directions, stacks with dropout.
RECURRENT_CONFIGS: dict[str, dict[str, Any]] = {
    "gru": {"cell": "gru", "rnn_hidden_sizes": [5]},
    "lstm": {"cell": "lstm", "rnn_hidden_sizes": [5]},
    "gru_stacked": {"cell": "gru", "rnn_hidden_sizes": [16, 8], "rnn_dropout": 0.4},
    "lstm_stacked": {"cell": "lstm", "rnn_hidden_sizes": [6, 4, 3], "rnn_dropout": 0.5},
    "bigru": {"cell": "gru", "bidirectional": True, "rnn_hidden_sizes": [5]},
    "bilstm": {"cell": "lstm", "bidirectional": True, "rnn_hidden_sizes": [5]},
    "bigru_stacked": {"cell": "gru", "bidirectional": True, "rnn_hidden_sizes": [6, 4, 3], "rnn_dropout": 0.2},
    "bilstm_stacked": {"cell": "lstm", "bidirectional": True, "rnn_hidden_sizes": [16, 8], "rnn_dropout": 0.4},
}


def _head(name: str) -> nn.Module:
    torch.manual_seed(0)
    config = dict(HEAD_CONFIGS[name])
    return build_head(config.pop("kind"), IN_FEATURES, max_len=8, **config)


def _mask(lengths: list[int], steps: int) -> torch.Tensor:
    return torch.arange(steps).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


@pytest.mark.parametrize("name", list(HEAD_CONFIGS))
def test_forward_backward(name: str) -> None:
    head = _head(name).train()
    features = torch.randn(3, 6, IN_FEATURES, requires_grad=True)
    out = head(features, _mask([6, 2, 1], 6))
    assert out.shape == (3, head.out_features)
    out.square().sum().backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("name", list(HEAD_CONFIGS))
def test_padding_invariance(name: str) -> None:
    head = _head(name).eval()
    short = torch.randn(1, 3, IN_FEATURES)
    long = torch.randn(1, 7, IN_FEATURES)
    # Padding holds garbage here (the collate function writes zeros) to prove the mask alone decides.
    padded_short = torch.cat([short, 5.0 * torch.randn(1, 4, IN_FEATURES)], dim=1)
    with torch.no_grad():
        alone = head(short, torch.ones(1, 3, dtype=torch.bool))
        batched = head(torch.cat([padded_short, long]), _mask([3, 7], 7))
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)


def test_recurrent_output_is_last_real_step() -> None:
    head = RecurrentHead(IN_FEATURES, rnn_hidden_sizes=[5], cell="gru").eval()
    features = torch.randn(1, 4, IN_FEATURES)
    with torch.no_grad():
        sequence, _ = head.layers[0](features[:, :3])
        out = head(features, _mask([3], 4))
    torch.testing.assert_close(out, sequence[:, -1])


def test_bidirectional_concatenates_directions() -> None:
    head = RecurrentHead(IN_FEATURES, rnn_hidden_sizes=[16, 8], bidirectional=True)
    assert head.out_features == 16
    assert head(torch.randn(2, 5, IN_FEATURES), _mask([5, 3], 5)).shape == (2, 16)


def test_seed_transformer_keeps_feature_dim() -> None:
    head = TransformerHead(IN_FEATURES, d_model=None, num_heads=1, dense_dim=4, max_len=8)
    assert isinstance(head.proj, nn.Identity) and head.out_features == IN_FEATURES


def test_transformer_rejects_clips_longer_than_positions() -> None:
    head = TransformerHead(IN_FEATURES, max_len=4)
    with pytest.raises(ValueError, match="positional"):
        head(torch.randn(1, 5, IN_FEATURES), torch.ones(1, 5, dtype=torch.bool))


def test_transformer_positions_resize_keeping_the_first_ones() -> None:
    torch.manual_seed(0)
    head = TransformerHead(8, max_len=6)
    before = head.pos_embedding.detach().clone()
    head.resize_positions(4)
    assert head.max_len == 4 and torch.equal(head.pos_embedding, before[:, :4])
    head.resize_positions(9)  # three new ones, drawn as __init__ draws them
    assert head.pos_embedding.shape == (1, 9, 8) and torch.equal(head.pos_embedding[:, :4], before[:, :4])
    assert head.pos_embedding.requires_grad and head.pos_embedding[:, 4:].abs().sum() > 0
    assert head(torch.randn(2, 9, 8), torch.ones(2, 9, dtype=torch.bool)).shape == (2, 8)


def test_mean_head_is_masked_mean() -> None:
    features = torch.randn(2, 4, IN_FEATURES)
    out = MeanHead(IN_FEATURES)(features, _mask([4, 2], 4))
    torch.testing.assert_close(out[1], features[1, :2].mean(dim=0))


def test_max_head_ignores_padding_even_when_it_is_larger() -> None:
    features = torch.randn(2, 4, IN_FEATURES)
    features[1, 2:] = 1e4  # padding values above every real one must not win
    out = build_head("max", IN_FEATURES)(features, _mask([4, 2], 4))
    torch.testing.assert_close(out[1], features[1, :2].amax(dim=0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_masked_max_stays_finite_in_low_precision(dtype: torch.dtype) -> None:
    x = torch.full((2, 3, 4), -1000.0, dtype=dtype)
    out = masked_max(x, _mask([1, 3], 3))
    assert torch.isfinite(out).all() and (out == -1000.0).all()


@pytest.mark.parametrize("name", ["gru", "lstm", "transformer_max", "transformer_cls", "transformer_mean"])
def test_bf16_autocast_has_no_nan(name: str) -> None:
    head = _head(name).eval()
    features = torch.randn(3, 6, IN_FEATURES)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(features, _mask([6, 2, 1], 6))
    assert torch.isfinite(out.float()).all()


def test_another_heads_setting_is_dropped_with_a_warning_naming_it() -> None:
    with pytest.warns(UserWarning, match=r"head 'gru' ignores d_model \(a setting of \['transformer'\]\)"):
        head = build_head("gru", IN_FEATURES, d_model=64, rnn_hidden_sizes=[5])
    assert head.out_features == 5


def test_a_heads_own_settings_raise_no_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_head("transformer", IN_FEATURES, d_model=16, num_heads=2, rnn_hidden_sizes=None)


@pytest.mark.parametrize("name", list(RECURRENT_CONFIGS))
def test_recurrent_masked_path_equals_packed(name: str) -> None:
    torch.manual_seed(0)
    head = RecurrentHead(IN_FEATURES, **RECURRENT_CONFIGS[name]).eval()
    lengths = [7, 3, 1, 5, 7, 2]  # full rows, a single frame, unsorted
    # Padding holds garbage (the collate function writes zeros): the mask alone must decide.
    features = torch.randn(len(lengths), 7, IN_FEATURES)
    with torch.no_grad():
        packed = head(features, _mask(lengths, 7))
        masked = head(features, _mask(lengths, 7), packed=False)
    assert masked.shape == packed.shape == (len(lengths), head.out_features)
    torch.testing.assert_close(masked, packed, atol=1e-5, rtol=0)


def test_recurrent_masked_path_trains() -> None:
    torch.manual_seed(0)
    head = RecurrentHead(IN_FEATURES, **RECURRENT_CONFIGS["bilstm_stacked"]).train()
    features = torch.randn(3, 6, IN_FEATURES, requires_grad=True)
    head(features, _mask([6, 2, 1], 6), packed=False).square().sum().backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert features.grad[1, 2:].abs().max() == 0  # padding steps do not feed the result
    assert all(p.grad is not None for p in head.parameters())


def test_recurrent_masked_path_runs_in_float32_under_autocast() -> None:
    head = RecurrentHead(IN_FEATURES, **RECURRENT_CONFIGS["bigru"]).eval()
    features = torch.randn(3, 6, IN_FEATURES)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(features, _mask([6, 2, 1], 6), packed=False)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, head(features, _mask([6, 2, 1], 6)), atol=1e-5, rtol=0)
