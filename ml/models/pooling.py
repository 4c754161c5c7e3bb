"""Pooling of instance embeddings: slices of a view, views of a breast or exam.

Every pooling maps ``(N, K, D)`` embeddings plus an optional ``(N, K)`` bool mask to
``(N, D)`` and returns the per-instance weights ``(N, K)`` it used (uniform for mean,
one-hot argmax share for max, softmax attention for gated attention) for explanations.
Masked instances get weight 0 and never influence the output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ml.models.config import SLICE_POOLINGS, look_up_option


def _full_mask(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not match instances {tuple(x.shape[:2])}"
        )
    return mask.to(device=x.device, dtype=torch.bool)


class NoPooling(nn.Module):
    """Single instance: ``(N, 1, D) -> (N, D)``; refuses ``K > 1``."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if x.shape[1] != 1:
            raise ValueError(f"slice_pooling 'none' needs one slice per view, got {x.shape[1]}")
        weights = _full_mask(x, mask).to(x.dtype)
        return x[:, 0] * weights, weights


class MeanPooling(nn.Module):
    """Mean over the unmasked instances."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep = _full_mask(x, mask).to(x.dtype)
        weights = keep / keep.sum(1, keepdim=True).clamp_min(1.0)
        return (x * weights.unsqueeze(-1)).sum(1), weights


class MaxPooling(nn.Module):
    """Feature-wise max over the unmasked instances; weight = share of features won."""

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep = _full_mask(x, mask)
        filled = x.masked_fill(~keep.unsqueeze(-1), float("-inf"))
        pooled, winner = filled.max(1)
        empty = ~keep.any(1, keepdim=True)
        pooled = pooled.masked_fill(empty, 0.0)
        share = nn.functional.one_hot(winner, x.shape[1]).to(x.dtype).mean(1)
        return pooled, share * keep.to(x.dtype)


class GatedAttentionPooling(nn.Module):
    """Gated attention MIL pooling (Ilse et al. 2018).

    ``a = softmax_k(w^T (tanh(V h_k) * sigmoid(U h_k)))`` over unmasked instances and the
    output is ``sum_k a_k h_k``.
    """

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.attention_v = nn.Linear(dim, hidden_dim)
        self.attention_u = nn.Linear(dim, hidden_dim)
        self.attention_w = nn.Linear(hidden_dim, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        keep = _full_mask(x, mask)
        gate = torch.tanh(self.attention_v(x)) * torch.sigmoid(self.attention_u(x))
        scores = self.attention_w(gate).squeeze(-1)
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1) * keep.to(scores.dtype)
        return (x * weights.unsqueeze(-1)).sum(1), weights


def create_pooling(kind: str, dim: int, hidden_dim: int) -> nn.Module:
    """Pooling module by name: ``none``, ``mean``, ``max`` or ``attention``."""
    look_up_option("pooling", kind, SLICE_POOLINGS)
    if kind == "none":
        return NoPooling()
    if kind == "mean":
        return MeanPooling()
    if kind == "max":
        return MaxPooling()
    return GatedAttentionPooling(dim, hidden_dim)
