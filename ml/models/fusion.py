"""View, breast and exam heads over view embeddings (the tensor contract of issue 4).

Views come in ``VIEW_ORDER``; breast 0 is left (lcc, lmlo), breast 1 is right (rcc, rmlo).

Breast fusion (CC + MLO of the same breast): ``max`` of the two view logits, ``concat``
of the two masked embeddings plus their presence flags into an MLP, or gated
``attention`` over the present views.  Exam fusion: ``max`` over the present breasts
(default) or gated ``attention`` across the present views.

Duke lists only the lesion breast's views for benign/cancer studies but all four for
normal/actionable ones, so the number of views leaks the label.  ``max`` exam fusion is
blind to it: adding a view can only raise the score by that view's own evidence.  A maximum
of view logits sits above a calibrated view logit, so ``max`` exam fusion adds one learned
offset per class (zero at first, moved by the exam-level loss only) so that the exam output
can be calibrated too; it is the same for every exam, so it cannot see the view count either.
``attention`` exam fusion is a weighted mean whose weights renormalise over whatever is
present, so it can learn the view count; use it only on data without this quirk.
Masked views and empty breasts never influence any output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ml.models.config import ModelConfig
from ml.models.pooling import GatedAttentionPooling

VIEW_ORDER: tuple[str, ...] = ("lcc", "lmlo", "rcc", "rmlo")
BREAST_VIEWS: tuple[tuple[int, int], ...] = ((0, 1), (2, 3))


def masked_max(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Max of ``x`` over ``dim`` ignoring False entries of ``mask`` (0 where all are False)."""
    while mask.dim() < x.dim():
        mask = mask.unsqueeze(-1)
    filled = x.masked_fill(~mask, float("-inf"))
    out = filled.amax(dim)
    return out.masked_fill(~mask.any(dim), 0.0)


def check_view_inputs(view_embeddings: Tensor, view_mask: Tensor) -> Tensor:
    """Validate ``(B, 4, D)`` embeddings and a ``(B, 4)`` mask; return the mask as bool."""
    if view_embeddings.dim() != 3 or view_embeddings.shape[1] != len(VIEW_ORDER):
        raise ValueError(f"view embeddings must be (B, 4, D), got {tuple(view_embeddings.shape)}")
    if tuple(view_mask.shape) != tuple(view_embeddings.shape[:2]):
        raise ValueError(
            f"view_mask must be (B, 4) = {tuple(view_embeddings.shape[:2])}, "
            f"got {tuple(view_mask.shape)}"
        )
    mask = view_mask.to(device=view_embeddings.device, dtype=torch.bool)
    if not bool(mask.any(1).all()):
        raise ValueError("every exam needs at least one present view (all-False view_mask row)")
    return mask


class FusionHead(nn.Module):
    """Per-view head, breast fusion and exam fusion: ``forward(emb, mask) -> dict``."""

    def __init__(self, config: ModelConfig, dim: int) -> None:
        super().__init__()
        classes = config.num_classes
        self.breast_fusion = config.fusion
        self.exam_fusion = config.exam_fusion
        self.dropout = nn.Dropout(config.dropout)
        self.view_head = nn.Linear(dim, classes)
        if config.fusion == "concat":
            self.breast_mlp = nn.Sequential(
                nn.Linear(2 * dim + 2, config.hidden_dim),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.hidden_dim, classes),
            )
        elif config.fusion == "attention":
            self.breast_pool = GatedAttentionPooling(dim, config.hidden_dim)
            self.breast_head = nn.Linear(dim, classes)
        if config.exam_fusion == "attention":
            self.exam_pool = GatedAttentionPooling(dim, config.hidden_dim)
            self.exam_head = nn.Linear(dim, classes)
        else:
            self.exam_offset = nn.Parameter(torch.zeros(classes))

    def forward(self, view_embeddings: Tensor, view_mask: Tensor) -> dict[str, Tensor]:
        mask = check_view_inputs(view_embeddings, view_mask)
        emb = self.dropout(view_embeddings * mask.unsqueeze(-1).to(view_embeddings.dtype))
        view_logits = self.view_head(emb)
        breast_mask = torch.stack([mask[:, list(idx)].any(1) for idx in BREAST_VIEWS], dim=1)
        breasts = [self._breast(emb, view_logits, mask, idx) for idx in BREAST_VIEWS]
        breast_logits = torch.stack(breasts, dim=1).masked_fill(~breast_mask.unsqueeze(-1), 0.0)
        if self.exam_fusion == "max":
            exam_logits = masked_max(breast_logits, breast_mask, dim=1) + self.exam_offset
        else:
            pooled, _ = self.exam_pool(emb, mask)
            exam_logits = self.exam_head(pooled)
        return {
            "view": view_logits.masked_fill(~mask.unsqueeze(-1), 0.0),
            "breast": breast_logits,
            "exam": exam_logits,
            "breast_mask": breast_mask,
        }

    def _breast(
        self, emb: Tensor, view_logits: Tensor, mask: Tensor, idx: tuple[int, int]
    ) -> Tensor:
        sel = list(idx)
        if self.breast_fusion == "max":
            return masked_max(view_logits[:, sel], mask[:, sel], dim=1)
        if self.breast_fusion == "concat":
            flags = mask[:, sel].to(emb.dtype)
            return self.breast_mlp(torch.cat([emb[:, idx[0]], emb[:, idx[1]], flags], dim=1))
        pooled, _ = self.breast_pool(emb[:, sel], mask[:, sel])
        return self.breast_head(pooled)
