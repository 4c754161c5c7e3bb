"""``DBTClassifier``: slices -> backbone -> slice pooling -> view embeddings -> fusion heads.

Input ``x`` is ``(B, 4, S, H, W)`` in [0, 1] (views in ``VIEW_ORDER``) with a ``(B, 4)``
bool ``view_mask``.  Only present views go through the backbone, so a masked view's
pixels cannot reach any output, not even through BatchNorm batch statistics.  Each view
is cut into ``S / in_chans`` instances of ``in_chans`` slices (one slice each by default),
the backbone's last feature map is pooled (average or max, ``spatial_pooling``) into an
instance embedding, and the instances are pooled into the view embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ml.models.backbone import LoadReport, create_backbone, load_local_weights
from ml.models.config import ModelConfig
from ml.models.fusion import VIEW_ORDER, FusionHead
from ml.models.pooling import create_pooling


@dataclass
class Encoding:
    """Intermediate results of :meth:`DBTClassifier.encode` (Grad-CAM reads ``feature_maps``)."""

    feature_maps: Tensor
    """Backbone output for the present views' instances, ``(P * K, C, h, w)`` (tokens for ViTs)."""
    view_embeddings: Tensor
    """``(B, 4, D)``, zeros for masked views."""
    slice_weights: Tensor
    """``(B, 4, K)`` pooling weights per instance, zeros for masked views."""
    view_mask: Tensor
    """``(B, 4)`` bool."""


class DBTClassifier(nn.Module):
    """Multi-view, multi-slice DBT classifier with timm-style feature/head split."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = create_backbone(config)
        self.num_features = int(self.backbone.num_features)
        self.embed_dim = config.embed_dim or self.num_features
        self.neck: nn.Module = (
            nn.Linear(self.num_features, self.embed_dim) if config.embed_dim else nn.Identity()
        )
        self.slice_pool = create_pooling(config.slice_pooling, self.embed_dim, config.hidden_dim)
        self.head = FusionHead(config, self.embed_dim)
        self.load_report: LoadReport | None = None
        if config.pretrained:
            self.load_report = load_local_weights(self, config.pretrained)

    @property
    def num_classes(self) -> int:
        """Output columns: 1 (malignant) or 4 (normal, actionable, benign, cancer)."""
        return self.config.num_classes

    def encode(self, x: Tensor, view_mask: Tensor | None = None) -> Encoding:
        """Run the present views through the backbone and pool their slices."""
        mask = self._check_input(x, view_mask)
        batch, views, slices, height, width = x.shape
        chans = self.config.in_chans
        per_view = slices // chans
        present = x[mask]
        images = ((present - self.config.mean) / self.config.std).reshape(-1, chans, height, width)
        maps = self.backbone.forward_features(images)
        if maps.dim() == 4:
            flat = maps.amax(dim=(2, 3)) if self.config.spatial_pooling == "max" else maps.mean(dim=(2, 3))
        elif maps.dim() == 3:
            if self.config.spatial_pooling != "avg":
                raise ValueError(
                    f"spatial_pooling {self.config.spatial_pooling!r} needs a convolutional backbone; "
                    f"{self.config.backbone!r} returns tokens (use 'avg', its own head pooling)"
                )
            flat = self.backbone.forward_head(maps, pre_logits=True)
        else:
            raise ValueError(
                f"backbone {self.config.backbone!r} returned features of shape {tuple(maps.shape)}"
            )
        instances = self.neck(flat).reshape(present.shape[0], per_view, self.embed_dim)
        pooled, weights = self.slice_pool(instances)
        embeddings = pooled.new_zeros(batch, views, self.embed_dim)
        embeddings[mask] = pooled
        slice_weights = weights.new_zeros(batch, views, per_view)
        slice_weights[mask] = weights
        return Encoding(maps, embeddings, slice_weights, mask)

    def forward_features(self, x: Tensor, view_mask: Tensor | None = None) -> Tensor:
        """View embeddings ``(B, 4, D)``; views absent from ``view_mask`` are skipped (zeros)."""
        return self.encode(x, view_mask).view_embeddings

    def forward_head(self, view_embeddings: Tensor, view_mask: Tensor) -> dict[str, Tensor]:
        """``{"view": (B,4,C), "breast": (B,2,C), "exam": (B,C), "breast_mask": (B,2)}`` logits."""
        return self.head(view_embeddings, view_mask)

    def forward(self, x: Tensor, view_mask: Tensor) -> dict[str, Tensor]:
        """Logits at every level plus ``slice_weights`` ``(B, 4, K)`` for explanations."""
        encoding = self.encode(x, view_mask)
        out = self.forward_head(encoding.view_embeddings, encoding.view_mask)
        out["slice_weights"] = encoding.slice_weights
        return out

    def _check_input(self, x: Tensor, view_mask: Tensor | None) -> Tensor:
        if x.dim() != 5 or x.shape[1] != len(VIEW_ORDER):
            raise ValueError(f"x must be (B, 4, S, H, W), got {tuple(x.shape)}")
        if x.shape[2] % self.config.in_chans:
            raise ValueError(
                f"slices per view ({x.shape[2]}) must be a multiple of in_chans "
                f"({self.config.in_chans})"
            )
        if view_mask is None:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if tuple(view_mask.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"view_mask must be (B, 4) = {tuple(x.shape[:2])}, got {tuple(view_mask.shape)}"
            )
        mask = view_mask.to(device=x.device, dtype=torch.bool)
        if not bool(mask.any(1).all()):
            raise ValueError("every exam needs at least one present view (all-False view_mask row)")
        return mask
