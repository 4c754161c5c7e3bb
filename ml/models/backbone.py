"""timm backbones built offline, and weights loaded from local files only.

``create_backbone`` never downloads: ``pretrained=False`` always, and the config's
``pretrained`` path is loaded with :func:`load_local_weights`, which adapts a
3-channel stem to the model's input channels (summed for 1 channel, as timm does).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ml.models.config import ModelConfig, ModelConfigError

log = logging.getLogger(__name__)


class WeightsError(ValueError):
    """Raised when a local weights file is missing, unreadable or incompatible."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_local_weights` did: key lists for review and logging."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def create_backbone(config: ModelConfig) -> nn.Module:
    """A timm feature extractor (``num_classes=0``) for ``config.backbone``, never downloaded."""
    import timm

    if not timm.is_model(config.backbone):
        close = difflib.get_close_matches(config.backbone, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ModelConfigError(f"unknown timm backbone {config.backbone!r}.{hint}")
    return timm.create_model(
        config.backbone, pretrained=False, in_chans=config.in_chans, num_classes=0
    )


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors from a ``.safetensors`` file or a torch checkpoint (``state_dict`` unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read weights from {path}: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a mapping of names to tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def adapt_input_conv(weight: Tensor, in_chans: int) -> Tensor:
    """Adapt an ``(out, 3, k, k)`` stem to ``in_chans``: summed for 1, else tiled and rescaled."""
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise WeightsError(f"cannot adapt input conv of shape {tuple(weight.shape)}")
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // 3)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (3.0 / in_chans)


def load_local_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """Load a local checkpoint into ``model`` (non-strict) and report what happened.

    A checkpoint without ``backbone.`` keys is loaded into ``model.backbone`` when the
    model has one (a plain timm checkpoint).  A 3-channel conv weight whose target has
    a different input-channel count is adapted; other shape mismatches are skipped and
    reported, as are missing and unexpected keys (e.g. the ImageNet classifier).
    """
    state = read_state_dict(path)
    target = model
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and not any(k.startswith("backbone.") for k in state):
        target = backbone
    own = target.state_dict()
    usable: dict[str, Tensor] = {}
    adapted: list[str] = []
    mismatched: list[str] = []
    for key, value in state.items():
        if key not in own:
            continue
        expected = own[key]
        if value.shape != expected.shape:
            if value.dim() == 4 and value.shape[1] == 3 and value.shape[0] == expected.shape[0] \
                    and value.shape[2:] == expected.shape[2:]:
                value = adapt_input_conv(value, expected.shape[1])
                adapted.append(key)
            else:
                mismatched.append(key)
                continue
        usable[key] = value.to(dtype=expected.dtype)
    if not usable:
        raise WeightsError(f"no tensor in {path} matches the model's parameter names")
    result = target.load_state_dict(usable, strict=False)
    report = LoadReport(
        loaded=sorted(usable),
        adapted=adapted,
        missing=sorted(set(result.missing_keys)),
        unexpected=sorted(set(state) - set(own)),
        mismatched=mismatched,
    )
    if report.missing or report.unexpected or report.mismatched:
        log.warning(
            "loaded %d tensors from %s; missing %s, unexpected %s, shape-mismatched %s",
            len(report.loaded), path, report.missing, report.unexpected, report.mismatched,
        )
    return report
