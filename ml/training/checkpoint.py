"""Checkpoints: ``model.safetensors`` (weights) + ``config.json`` (model config + metadata)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from ml.atomic import atomic_path, write_text_atomic
from ml.training.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

ModelFactory = Callable[[dict[str, Any]], nn.Module]


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    model: nn.Module, path_dir: str | Path, metadata: dict[str, Any] | None = None
) -> Path:
    """Write the weights and ``{"model": model.config.to_dict(), "training": metadata}``."""
    from safetensors.torch import save_model

    plain = unwrap(model)
    config = getattr(plain, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        raise CheckpointError("the model has no `config` with to_dict(); cannot checkpoint it")
    folder = Path(path_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_FILE) as tmp:
        save_model(plain, str(tmp))
    document = {"model": config.to_dict(), "training": metadata or {}}
    write_text_atomic(folder / CONFIG_FILE, json.dumps(document, indent=2, sort_keys=True) + "\n")
    return folder


def read_checkpoint_config(path_dir: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder."""
    path = Path(path_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"missing {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def _default_factory(config: dict[str, Any]) -> nn.Module:
    from ml.models import create_model

    return create_model(config)


def load_checkpoint(
    path_dir: str | Path, factory: ModelFactory | None = None, device: str = "cpu"
) -> nn.Module:
    """Rebuild the model from ``config.json`` (via ``ml.models``), load weights, eval mode."""
    from safetensors.torch import load_model

    folder = Path(path_dir)
    document = read_checkpoint_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"missing {weights}")
    model = (factory or _default_factory)(document["model"])
    try:
        load_model(model, str(weights), strict=True, device=device)
    except RuntimeError as error:
        message = f"{weights} does not fit the model of {CONFIG_FILE}: {error}"
        raise CheckpointError(message) from error
    return model.to(device).eval()
