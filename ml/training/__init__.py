"""Training: exam dataset over memory-mapped tensors, augmentations, losses, loop, checkpoints.

Names are imported lazily so that ``import ml.training`` (and the CLI) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ExamDataset": "dataset",
    "VIEW_ORDER": "dataset",
    "class_weights": "dataset",
    "canonical_view": "dataset",
    "Compose": "augment",
    "RandomAffine": "augment",
    "RandomFlip": "augment",
    "RandomIntensity": "augment",
    "default_augment": "augment",
    "bce_loss": "losses",
    "focal_loss": "losses",
    "multiclass_loss": "losses",
    "TrainConfig": "config",
    "TrainResult": "loop",
    "evaluate": "loop",
    "seed_everything": "loop",
    "train": "loop",
    "ShardedSampler": "sampling",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "init_distributed": "distributed",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "DatasetError": "errors",
    "TrainingError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ml.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"ml.training.{_EXPORTS[name]}"), name)
