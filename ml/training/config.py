"""``TrainConfig``: every knob of the training loop, checked when it is built."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ml.training.errors import ConfigError, look_up_option

LOSSES = ("bce", "focal")
DEVICES = ("auto", "cpu", "cuda")
SAMPLERS = ("shuffle", "weighted")


@dataclass(frozen=True)
class TrainConfig:
    """Options of :func:`ml.training.train`.

    ``loss`` applies to binary models (C=1); multi-class models (C=4) use cross-entropy
    (``focal`` then multiplies it by ``(1 - p_true) ** focal_gamma``). The loss is
    ``view_loss_weight`` x (mean over present views, each labelled with its study's class)
    plus ``exam_loss_weight`` x (exam-level loss).  ``precise_bn_batches`` > 0 recomputes
    the BatchNorm running statistics before every validation as the plain average over that
    many training batches (the weights they were running behind have moved on; see
    :func:`ml.training.loop.recompute_batchnorm`).
    """

    epochs: int = 10
    batch_size: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    min_lr_ratio: float = 0.0
    loss: str = "bce"
    pos_weight: str | float = "auto"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    view_loss_weight: float = 1.0
    exam_loss_weight: float = 1.0
    sampler: str = "shuffle"
    grad_accum: int = 1
    grad_clip: float | None = None
    precise_bn_batches: int = 0
    early_stopping_patience: int | None = None
    seed: int = 0
    device: str = "auto"
    amp_bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    find_unused_parameters: bool = False
    num_workers: int = 0
    checkpoint_dir: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        look_up_option("loss", self.loss, LOSSES)
        look_up_option("device", self.device, DEVICES)
        look_up_option("sampler", self.sampler, SAMPLERS)
        for name in ("epochs", "batch_size", "grad_accum"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("warmup_steps", "num_workers", "precise_bn_batches"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ConfigError("lr must be > 0; weight_decay and warmup_epochs must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        if isinstance(self.pos_weight, str):
            look_up_option("pos_weight", self.pos_weight, ("auto",))
        elif self.pos_weight <= 0:
            raise ConfigError(f"pos_weight must be 'auto' or > 0, got {self.pos_weight!r}")
        if self.view_loss_weight < 0 or self.exam_loss_weight < 0:
            raise ConfigError("loss weights must be >= 0")
        if self.view_loss_weight + self.exam_loss_weight == 0:
            raise ConfigError("view_loss_weight and exam_loss_weight cannot both be 0")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError("early_stopping_patience must be >= 1 or None")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dictionary of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dictionary; unknown keys raise ConfigError with a suggestion."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            look_up_option("TrainConfig field", key, sorted(known))
        return cls(**values)
