"""Small blocks shared by the recall and ranking models.

Scope: input checking for batches of tensors, hashed ID embeddings, MLPs and masked
attention pooling over padded behaviour sequences. Nothing here knows about recall or
ranking; `recall.py` and `ranking.py` compose these blocks.

References:
- Weinberger et al., "Feature Hashing for Large Scale Multitask Learning", ICML 2009
  (the hashing trick behind `HashEmbedding`).
- Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018
  (`TargetAttention`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, Self

import torch
from torch import Tensor, nn


@dataclasses.dataclass
class TensorBatch:
    """Base for the model input dataclasses: every field is a tensor (or None) whose first
    dimension is the batch. Subclasses only declare fields."""

    def map(self, fn: Callable[[Tensor], Tensor]) -> Self:
        """A copy with `fn` applied to every tensor field (None fields stay None)."""
        changes = {
            f.name: fn(value)
            for f in dataclasses.fields(self)
            if (value := getattr(self, f.name)) is not None
        }
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> Self:
        """A copy with every tensor on `device`."""
        return self.map(lambda t: t.to(device))

    def take(self, rows: Tensor | slice) -> Self:
        """A copy holding only `rows` (an index tensor or a slice) of every tensor."""
        return self.map(lambda t: t[rows])

    @property
    def batch_size(self) -> int:
        """Rows in the batch: the first dimension of the first field."""
        first = getattr(self, dataclasses.fields(self)[0].name)
        return int(first.shape[0])


def check_tensor(
    name: str,
    value: Tensor | None,
    shape: Sequence[int | None],
    *,
    kind: Literal["float", "int", "bool"] | None = None,
) -> Tensor:
    """Raise ValueError unless `value` is a tensor of `shape` (None = any size there).

    Args:
        name: the field name used in the message, e.g. "items.text_emb".
        value: the tensor to check; None raises (the caller asked for a required field).
        shape: expected sizes, one per dimension.
        kind: "float", "int" (ids and indices) or "bool" requires that dtype family; None any.
    Returns:
        `value`, so checks can be chained into assignments.
    """
    if value is None:
        raise ValueError(f"{name} is required by this model config but is None")
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() != len(shape) or any(
        want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
    ):
        want_str = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {want_str}, got {tuple(value.shape)}")
    kinds = {
        "float": ("a float tensor", value.is_floating_point()),
        "int": (
            "an integer tensor (ids, indices)",
            not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool),
        ),
        "bool": ("a bool tensor", value.dtype == torch.bool),
    }
    if kind is not None and not kinds[kind][1]:
        raise ValueError(f"{name} must be {kinds[kind][0]}, got {value.dtype}")
    return value


def check_index_range(name: str, value: Tensor, size: int) -> None:
    """Raise ValueError unless every entry of the integer tensor `value` is in [0, size)."""
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= size):
        raise ValueError(
            f"{name} must hold indices in [0, {size}), got values in "
            f"[{int(value.min())}, {int(value.max())}]"
        )


class HashEmbedding(nn.Module):
    """An ID embedding over a fixed number of buckets: id -> table[id mod n_buckets].

    IDs are non-negative int64 keys (builders turn string keys into int64 with a stable
    hash); unseen IDs therefore still get a row, shared with whatever collides with them.
    """

    def __init__(self, n_buckets: int, dim: int) -> None:
        super().__init__()
        if n_buckets < 1 or dim < 1:
            raise ValueError(f"n_buckets and dim must be >= 1, got {n_buckets} and {dim}")
        self.n_buckets = n_buckets
        self.table = nn.Embedding(n_buckets, dim)
        nn.init.normal_(self.table.weight, std=0.05)

    def forward(self, ids: Tensor) -> Tensor:
        """(...) int64 -> (..., dim)"""
        return self.table(torch.remainder(ids, self.n_buckets))


def projection(in_dim: int, out_dim: int) -> nn.Sequential:
    """Linear + LayerNorm: puts modalities of very different scales on one footing."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim))


class MLP(nn.Sequential):
    """Linear -> ReLU (-> Dropout) per hidden width, then an optional linear output layer."""

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        if in_dim < 1 or any(h < 1 for h in hidden_dims) or (out_dim is not None and out_dim < 1):
            raise ValueError(
                f"MLP widths must be >= 1, got in_dim={in_dim}, hidden_dims={tuple(hidden_dims)}, "
                f"out_dim={out_dim}"
            )
        layers: list[nn.Module] = []
        width = in_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        super().__init__(*layers)
        self.out_dim = width


def masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last dim that gives padded positions weight 0.

    A row with no valid position gets all-zero weights (an empty history pools to zeros)
    and finite gradients, unlike a softmax over -inf.

    Args:
        scores: (..., L) float.
        mask: (..., L) bool, True = real position; broadcastable to `scores`.
    """
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * mask.to(scores.dtype)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` (B, L, d) over the valid positions of `mask` (B, L); zeros if none."""
    weights = mask.to(values.dtype).unsqueeze(-1)  # (B, L, 1)
    return (values * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class TargetAttention(nn.Module):
    """DIN-style attention of a target vector over a padded sequence.

    The score of position l is a small MLP over [q, k_l, q - k_l, q * k_l] as in DIN. The
    first layer is linear, so it is computed as A q + B k_l + C (q * k_l) (the q - k_l
    block folds into A and B): the key term is computed once per sequence and broadcast
    over targets, which is what lets one user's sequence serve N candidates without copying.
    Weights are a masked softmax (DIN leaves them unnormalised; normalised weights keep the
    pooled vector on the scale of the keys whatever the history length).

    Shapes: query (N, d); keys (B, L, d) and mask (B, L) with B == N or B == 1 (one
    sequence broadcast to every target). Returns (N, d).
    """

    def __init__(self, dim: int, hidden: int = 32) -> None:
        super().__init__()
        self.query_proj = nn.Linear(dim, hidden)
        self.key_proj = nn.Linear(dim, hidden, bias=False)
        self.product_proj = nn.Linear(dim, hidden, bias=False)
        # no output bias: softmax ignores a shift, so a bias would never get a gradient
        self.score = nn.Sequential(nn.ReLU(), nn.Linear(hidden, 1, bias=False))

    def forward(self, query: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
        q = query.unsqueeze(1)  # (N, 1, d)
        hidden = self.query_proj(q) + self.key_proj(keys) + self.product_proj(q * keys)
        scores = self.score(hidden).squeeze(-1)  # (N, L)
        weights = masked_softmax(scores, mask)  # (N, L)
        return torch.matmul(weights.unsqueeze(1), keys).squeeze(
            1
        )  # (N, 1, L) @ (B, L, d) -> (N, d)


@contextmanager
def inference(model: nn.Module) -> Iterator[None]:
    """Run a block in eval mode without autograd, then restore the model's training flag."""
    was_training = model.training
    if was_training:  # train()/eval() walk every submodule: ~1.5 ms a call on the ranker
        model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        if was_training:
            model.train()
