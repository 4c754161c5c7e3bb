"""Losses: pos-weighted BCE and focal loss (binary), cross-entropy and focal (multi-class)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def bce_loss(logits: torch.Tensor, targets: torch.Tensor, pos_weight: float = 1.0) -> torch.Tensor:
    """Mean binary cross-entropy on logits, positives weighted by ``pos_weight``."""
    weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), pos_weight=weight)


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Mean binary focal loss (Lin et al. 2017): ``-a_t (1 - p_t)^gamma log p_t``.

    ``alpha`` weighs positives and ``1 - alpha`` negatives; ``alpha < 0`` disables weighting.
    """
    targets = targets.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.mean()


def multiclass_loss(
    logits: torch.Tensor, targets: torch.Tensor, gamma: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy over classes; ``gamma > 0`` makes it the multi-class focal loss."""
    ce = F.cross_entropy(logits, targets, reduction="none")
    if gamma > 0:
        ce = ce * (1 - torch.exp(-ce)) ** gamma
    return ce.mean()


def auto_pos_weight(malignant: np.ndarray) -> float:
    """negatives / positives of the training labels (1.0 when either is absent)."""
    malignant = np.asarray(malignant)
    positives = float(malignant.sum())
    negatives = float(malignant.size - positives)
    return negatives / positives if positives > 0 and negatives > 0 else 1.0
