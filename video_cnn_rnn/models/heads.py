"""Temporal heads: turn per-frame features [B, T, D] plus a validity mask [B, T] into one vector per clip.

Every head takes ``mask`` with True = real frame, real frames first and at least one per row, and returns
``[B, out_features]`` that does not depend on how much padding follows the real frames.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

HeadKind = Literal["gru", "lstm", "transformer", "mean", "max"]
Pooling = Literal["max", "mean", "cls"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of the real steps only: [B, T, D], [B, T] -> [B, D]."""
    weights = mask.to(x.dtype).unsqueeze(-1)  # [B, T] -> [B, T, 1]
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over time of the real steps only: [B, T, D], [B, T] -> [B, D].

    Padding is filled with the dtype's most negative finite value rather than -inf so fp16/bf16 stay
    finite; every row has a real step, so the fill value never wins.
    """
    fill = torch.finfo(x.dtype).min
    return torch.where(mask.unsqueeze(-1), x, torch.full_like(x, fill)).amax(dim=1)


def _gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-row time steps: x [B, T, F], index int64 [B, S] -> [B, S, F] with out[b, s] = x[b, index[b, s]]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _masked_layer(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """One GRU/LSTM layer over a padded batch: [B, T, D], lengths [B] -> [B, T, directions * H].

    Outputs at each row's real steps equal those of the packed sequence; the rest is garbage. Forward in time
    this holds as is, since a step never sees later ones. The reverse direction must start at each row's last
    real step, so it reads a copy whose rows are rolled to end with their real steps (padding first), and its
    outputs are rolled back; one call runs both copies.
    """
    if not rnn.bidirectional:
        return rnn(x)[0]
    batch, steps = x.shape[:2]
    positions = torch.arange(steps, device=x.device).unsqueeze(0)  # [1, T]
    shift = lengths.unsqueeze(1)  # [B, 1]
    right_aligned = _gather_steps(x, (positions + shift) % steps)  # row b: padding, then its L_b real steps
    both = rnn(torch.cat([x, right_aligned]))[0]  # [2B, T, 2H]
    hidden = rnn.hidden_size
    forward = both[:batch, :, :hidden]
    reverse = _gather_steps(both[batch:, :, hidden:], (positions + steps - shift) % steps)  # rolled back
    return torch.cat([forward, reverse], dim=-1)


class MeanHead(nn.Module):
    """Order-blind baseline: masked mean of the frame features."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.out_features = in_features

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, D], [B, T] -> [B, D]."""
        return masked_mean(features, mask)


class MaxHead(nn.Module):
    """Order-blind peak detector: masked max over time of each feature.

    On small real datasets the moment that tells actions apart (a raised leg, an embrace) fills a few frames;
    a mean dilutes it and a recurrent head memorises the few clips (cross-validated: docs/models.md).
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.out_features = in_features

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, D], [B, T] -> [B, D]."""
        return masked_max(features, mask)


class RecurrentHead(nn.Module):
    """Stacked GRU/LSTM layers over packed sequences; returns the hidden state at the last real step.

    ``forward(..., packed=False)`` gives the same result from the padded batch and the mask, without packing,
    whose shapes depend on the mask's values: the path ``video_cnn_rnn.export`` traces.

    ``rnn_hidden_sizes=[16, 8]`` reproduces the Keras CNN-RNN example (GRU 16 -> GRU 8). Separate single-layer
    RNNs are stacked (instead of ``num_layers``) so each layer can have its own width.
    """

    def __init__(
        self,
        in_features: int,
        rnn_hidden_sizes: list[int] | None = None,
        cell: Literal["gru", "lstm"] = "gru",
        bidirectional: bool = False,
        rnn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        hidden_sizes = list(rnn_hidden_sizes) if rnn_hidden_sizes is not None else [16, 8]
        if not hidden_sizes:
            raise ValueError("rnn_hidden_sizes must name at least one layer")
        rnn_cls = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        directions = 2 if bidirectional else 1
        layers = []
        size = in_features
        for hidden in hidden_sizes:
            layers.append(rnn_cls(size, hidden, batch_first=True, bidirectional=bidirectional))
            size = hidden * directions
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(rnn_dropout)
        self.bidirectional = bidirectional
        self.out_features = size

    def forward(self, features: torch.Tensor, mask: torch.Tensor, packed: bool = True) -> torch.Tensor:
        """[B, T, D], [B, T] -> [B, rnn_hidden_sizes[-1] * directions].

        ``packed=False`` runs the padded sequence instead and picks each row's last real step: the same result
        (to float rounding), with no shape that depends on the mask's values, so it traces and exports.
        """
        # Autocast is disabled here: packed RNN kernels lack fp16/bf16 support on some backends (CPU
        # LSTM/GRU in half precision), and the recurrence accumulates rounding error over time steps.
        # These layers are tiny, so float32 costs next to nothing.
        with torch.autocast(device_type=features.device.type, enabled=False):
            if packed:
                return self._forward_packed(features.float(), mask)
            return self._forward_masked(features.float(), mask)

    def _forward_packed(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # pack_padded_sequence wants CPU int64 lengths; real frames come first, so the count is the length.
        lengths = mask.sum(dim=1).to(device="cpu", dtype=torch.int64)
        packed = pack_padded_sequence(features, lengths, batch_first=True, enforce_sorted=False)
        hidden = None
        for index, rnn in enumerate(self.layers):
            if index > 0:
                packed = PackedSequence(
                    self.dropout(packed.data),
                    packed.batch_sizes,
                    packed.sorted_indices,
                    packed.unsorted_indices,
                )
            packed, hidden = rnn(packed)
        if isinstance(hidden, tuple):  # LSTM returns (h_n, c_n)
            hidden = hidden[0]
        # h_n is already back in batch order: [directions, B, H] -> [B, directions * H]
        return hidden.transpose(0, 1).reshape(features.shape[0], -1)

    def _forward_masked(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(dim=1)  # [B, T] -> [B], int64
        x = features
        for index, rnn in enumerate(self.layers):
            if index > 0:
                x = self.dropout(x)
            x = _masked_layer(rnn, x, lengths)  # [B, T, directions * H], valid at the real steps
        last = _gather_steps(x, (lengths - 1).clamp_min(0).unsqueeze(1)).squeeze(1)  # [B, T, F] -> [B, F]
        if not self.bidirectional:
            return last
        # The reverse direction ends at each row's first step: [B, 2H] = (forward at L - 1, reverse at 0).
        hidden = self.layers[-1].hidden_size
        return torch.cat([last[:, :hidden], x[:, 0, hidden:]], dim=-1)


class TransformerHead(nn.Module):
    """Transformer encoder over frames with a learned positional embedding and masked pooling.

    The Keras Transformer example is ``d_model=None`` (embed dim = feature dim), ``num_heads=1``, ``dense_dim=4``,
    ``pooling="max"`` (GlobalMaxPooling1D), GELU feed-forward and post-norm layers.
    """

    def __init__(
        self,
        in_features: int,
        d_model: int | None = None,
        num_heads: int = 1,
        dense_dim: int = 4,
        num_layers: int = 1,
        attention_dropout: float = 0.1,
        pooling: Pooling = "max",
        max_len: int = 64,
    ) -> None:
        super().__init__()
        if pooling not in ("max", "mean", "cls"):
            raise ValueError(f"Unknown pooling '{pooling}'; expected 'max', 'mean' or 'cls'")
        d_model = d_model or in_features
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be divisible by num_heads={num_heads}")
        self.proj = nn.Linear(in_features, d_model) if d_model != in_features else nn.Identity()
        self.pos_embedding = nn.Parameter(torch.zeros(1, max_len, d_model))
        # std 0.2, not the usual 0.02: frozen CNN features change little from frame to frame, and a near-zero
        # positional signal is drowned by them, so the head learns to ignore order (measured on the synthetic
        # time-reversed pairs: 48-60% test accuracy with 0.02, 100% with 0.2).
        nn.init.trunc_normal_(self.pos_embedding, std=0.2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model)) if pooling == "cls" else None
        layer = nn.TransformerEncoderLayer(
            d_model,
            num_heads,
            dim_feedforward=dense_dim,
            dropout=attention_dropout,
            activation="gelu",
            batch_first=True,
        )
        # The nested-tensor fast path only warns for odd head counts (the Keras example's single head) and would
        # change numerics between batched and single-clip inference; dense masking is cheap at T ~ 20.
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.pooling = pooling
        self.max_len = max_len
        self.out_features = d_model

    def resize_positions(self, max_len: int) -> None:
        """Positional embeddings for ``max_len`` frames, for a head built before the clip length was known: the
        first ones kept, any new ones drawn as ``__init__`` draws them. Before the optimiser is built."""
        kept = self.pos_embedding.data[:, :max_len]
        extra = nn.init.trunc_normal_(kept.new_empty(1, max(max_len - kept.shape[1], 0), kept.shape[2]), std=0.2)
        self.pos_embedding = nn.Parameter(torch.cat([kept, extra], dim=1))
        self.max_len = max_len

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, T, D], [B, T] -> [B, d_model]."""
        steps = features.shape[1]
        if steps > self.max_len:
            raise ValueError(f"Clip has {steps} frames but the positional embedding covers {self.max_len}")
        x = self.proj(features) + self.pos_embedding[:, :steps]
        if self.cls_token is not None:
            # The CLS slot is always valid, so no row is ever fully masked.
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
            mask = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1)  # [B, T] -> [B, 1 + T]
        x = self.encoder(x, src_key_padding_mask=~mask)
        if self.pooling == "cls":
            return x[:, 0]
        if self.pooling == "mean":
            return masked_mean(x, mask)
        return masked_max(x, mask)


# The classifier's settings each head takes (same names as the heads' arguments). A setting given to a head that
# does not take it is reported (``foreign_settings``), never silently ignored.
HEAD_SETTINGS: dict[str, tuple[str, ...]] = {
    "gru": ("rnn_hidden_sizes", "bidirectional", "rnn_dropout"),
    "lstm": ("rnn_hidden_sizes", "bidirectional", "rnn_dropout"),
    "transformer": ("d_model", "num_heads", "dense_dim", "num_layers", "pooling", "attention_dropout"),
    "mean": (),
    "max": (),
}


def foreign_settings(kind: str, settings: dict[str, Any]) -> list[str]:
    """Names of the settings given (not None) that head ``kind`` does not take, each with the heads that do."""
    given = [name for name, value in settings.items() if value is not None and name not in HEAD_SETTINGS[kind]]
    return [f"{name} (a setting of {[h for h, names in HEAD_SETTINGS.items() if name in names]})" for name in given]


def build_head(kind: HeadKind, in_features: int, max_len: int = 64, **settings: Any) -> nn.Module:
    """Build a temporal head by name; every head exposes ``out_features``.

    ``settings`` are head settings by name, ``None`` meaning "the head's default"; those the head does not take
    are dropped with a warning naming them and the heads that do take them.
    """
    if kind not in HEAD_SETTINGS:
        raise ValueError(f"Unknown head '{kind}'; expected one of {list(HEAD_SETTINGS)}")
    foreign = foreign_settings(kind, settings)
    if foreign:
        # A warning, not an error: configs are layered (a recipe over a base config, a head switched on the
        # command line), and the base's settings for another head are expected there.
        warnings.warn(
            f"head '{kind}' ignores {', '.join(foreign)}; set them to null to silence this "
            f"(head '{kind}' takes {list(HEAD_SETTINGS[kind]) or 'no settings'})",
            stacklevel=2,
        )
    given = {name: value for name, value in settings.items() if value is not None and name in HEAD_SETTINGS[kind]}
    if kind in ("gru", "lstm"):
        return RecurrentHead(in_features, cell=kind, **given)
    if kind == "transformer":
        return TransformerHead(in_features, max_len=max_len, **given)
    return MeanHead(in_features) if kind == "mean" else MaxHead(in_features)
