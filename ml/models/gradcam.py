"""Grad-CAM per view from the backbone's last feature stage, and PNG overlays.

For a view with several slices (instances) the map is the Grad-CAM of the slice-pooled
embedding: per-instance gradient-weighted maps are summed before the ReLU.  The gradient
reaching each slice already carries its pooling weight (its attention weight, 1/K for
mean pooling, the share of features it won for max pooling), so slices count in
proportion to their contribution; all slices share the view's pixel grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ml.atomic import atomic_path
from ml.models.classifier import DBTClassifier
from ml.models.config import look_up_option

CAM_OUTPUTS: tuple[str, ...] = ("exam", "breast", "view")


class CamError(ValueError):
    """Raised when Grad-CAM cannot be computed for a model or input."""


def _as_exam(value: Tensor | np.ndarray, dims: int, name: str) -> Tensor:
    tensor = torch.as_tensor(value)
    if tensor.dim() == dims - 1:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() != dims or tensor.shape[0] != 1:
        raise CamError(f"{name} must describe one exam, got shape {tuple(tensor.shape)}")
    return tensor


def _target(out: dict[str, Tensor], mask: Tensor, output: str, class_index: int) -> Tensor:
    if output == "exam":
        return out["exam"][:, class_index].sum()
    if output == "breast":
        return out["breast"][..., class_index][out["breast_mask"]].sum()
    return out["view"][..., class_index][mask].sum()


def grad_cam(
    model: DBTClassifier,
    x: Tensor | np.ndarray,
    view_mask: Tensor | np.ndarray,
    output: str = "exam",
    class_index: int = 0,
) -> np.ndarray:
    """Grad-CAM maps ``(4, H, W)`` in [0, 1] for one exam (zeros for masked views).

    ``x`` is ``(4, S, H, W)`` or ``(1, 4, S, H, W)``; ``output`` picks the logit explained
    ("exam", the sum of present "breast" logits, or each view's own "view" logit).  The
    model runs in eval mode for the call and its mode is restored afterwards.
    """
    look_up_option("output", output, CAM_OUTPUTS)
    if not 0 <= class_index < model.num_classes:
        raise CamError(f"class_index {class_index} out of range for {model.num_classes} classes")
    device = next(model.parameters()).device
    images = _as_exam(x, 5, "x").to(device=device, dtype=torch.float32)
    mask = _as_exam(view_mask, 2, "view_mask").to(device=device, dtype=torch.bool)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            encoding = model.encode(images.requires_grad_(True), mask)
            maps = encoding.feature_maps
            if maps.dim() != 4:
                raise CamError(
                    f"backbone {model.config.backbone!r} returns tokens, not a feature map; "
                    "Grad-CAM supports CNN backbones only"
                )
            out = model.forward_head(encoding.view_embeddings, encoding.view_mask)
            target = _target(out, encoding.view_mask, output, class_index)
            (grads,) = torch.autograd.grad(target, maps)
    finally:
        model.train(was_training)
    return _assemble(maps.detach(), grads, mask[0], images.shape[-2:])


def _assemble(maps: Tensor, grads: Tensor, mask: Tensor, size: torch.Size) -> np.ndarray:
    weights = grads.mean(dim=(2, 3), keepdim=True)
    per_instance = (weights * maps).sum(dim=1)
    present = int(mask.sum())
    cams = per_instance.reshape(present, -1, *per_instance.shape[-2:]).sum(dim=1).relu()
    cams = nn.functional.interpolate(cams.unsqueeze(1).float(), size=tuple(size), mode="bilinear",
                                     align_corners=False).squeeze(1)
    low = cams.amin(dim=(1, 2), keepdim=True)
    span = cams.amax(dim=(1, 2), keepdim=True) - low
    cams = torch.where(span > 1e-12, (cams - low) / span.clamp_min(1e-12), torch.zeros_like(cams))
    result = np.zeros((mask.shape[0], *size), dtype=np.float32)
    result[mask.cpu().numpy()] = cams.cpu().numpy()
    return result


def save_cam_overlay(
    image: np.ndarray, cam: np.ndarray, path: str | Path, *, alpha: float = 0.4, cmap: str = "jet"
) -> Path:
    """Write ``image`` (H, W) in [0, 1] in grey under ``cam`` (H, W) in [0, 1] in colour, as PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    image = np.asarray(image, dtype=np.float32)
    cam = np.asarray(cam, dtype=np.float32)
    if image.ndim != 2 or cam.shape != image.shape:
        raise CamError(
            f"image and cam must be (H, W) of one shape, got {image.shape} and {cam.shape}"
        )
    height, width = image.shape
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(np.clip(image, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.imshow(
        np.clip(cam, 0.0, 1.0), cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="bilinear"
    )
    ax.set_axis_off()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return target
