"""``ModelConfig``: the architecture and the input configuration a model carries.

The model owns its input contract (size, slice strategy, slices per view, intensity
normalisation), so preprocessing, training and serving read it from one place.  Every
string option is checked when the config is built, with a "did you mean" hint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ml.options import check_choice, check_positive_int
from ml.preprocess import STRATEGIES

SLICE_POOLINGS: tuple[str, ...] = ("none", "mean", "max", "attention")
SPATIAL_POOLINGS: tuple[str, ...] = ("avg", "max")
BREAST_FUSIONS: tuple[str, ...] = ("max", "concat", "attention")
EXAM_FUSIONS: tuple[str, ...] = ("max", "attention")
NUM_CLASSES: tuple[int, ...] = (1, 4)
CLASS_NAMES: dict[int, tuple[str, ...]] = {
    1: ("malignant",),
    4: ("normal", "actionable", "benign", "cancer"),
}


class ModelConfigError(ValueError):
    """Raised for an invalid model configuration (bad option, value or key)."""


def look_up_option(field: str, value: object, options: Sequence[object]) -> None:
    """Raise :class:`ModelConfigError` unless ``value`` is one of ``options``, with a hint."""
    check_choice(field, value, options, ModelConfigError)


def _positive_int(field: str, value: object) -> None:
    check_positive_int(field, value, ModelConfigError)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture plus input configuration of a :class:`~ml.models.DBTClassifier`.

    ``fusion`` fuses the CC and MLO views of one breast; ``exam_fusion`` combines the
    present breasts ("max", the default, is blind to how many views exist) or attends
    across the present views ("attention", which can learn the view count; see
    :mod:`ml.models.fusion`).  ``spatial_pooling`` turns a convolutional backbone's last
    feature map into an instance embedding: ``avg`` (global average) or ``max`` (each
    feature at its strongest position, so a small lesion is not averaged away by a large
    image).  ``embed_dim`` projects backbone features (``None`` keeps the backbone's
    ``num_features``); ``hidden_dim`` sizes attention and MLP layers.
    Inputs in [0, 1] are normalised inside the model as ``(x - mean) / std``.
    """

    backbone: str = "resnet18"
    pretrained: str | None = None
    in_chans: int = 1
    slice_pooling: str = "mean"
    spatial_pooling: str = "avg"
    fusion: str = "max"
    exam_fusion: str = "max"
    num_classes: int = 1
    embed_dim: int | None = None
    hidden_dim: int = 128
    dropout: float = 0.0
    input_size: tuple[int, int] = (256, 208)
    n_slices: int = 1
    slice_strategy: str = "central"
    mean: float = 0.5
    std: float = 0.25

    def __post_init__(self) -> None:
        if not isinstance(self.backbone, str) or not self.backbone:
            raise ModelConfigError(f"backbone must be a timm model name, got {self.backbone!r}")
        if self.pretrained is not None and not isinstance(self.pretrained, str):
            raise ModelConfigError(
                f"pretrained must be a local file path or None, got {self.pretrained!r}"
            )
        look_up_option("slice_pooling", self.slice_pooling, SLICE_POOLINGS)
        look_up_option("spatial_pooling", self.spatial_pooling, SPATIAL_POOLINGS)
        look_up_option("fusion", self.fusion, BREAST_FUSIONS)
        look_up_option("exam_fusion", self.exam_fusion, EXAM_FUSIONS)
        look_up_option("num_classes", self.num_classes, NUM_CLASSES)
        look_up_option("slice_strategy", self.slice_strategy, STRATEGIES)
        for name in ("in_chans", "hidden_dim", "n_slices"):
            _positive_int(name, getattr(self, name))
        if self.embed_dim is not None:
            _positive_int("embed_dim", self.embed_dim)
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ModelConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not float(self.std) > 0.0:
            raise ModelConfigError(f"std must be > 0, got {self.std!r}")
        size = tuple(self.input_size)
        if len(size) != 2:
            raise ModelConfigError(f"input_size must be (height, width), got {self.input_size!r}")
        for value in size:
            _positive_int("input_size", value)
        object.__setattr__(self, "input_size", size)
        if self.slice_strategy != "sampled" and self.n_slices != 1:
            raise ModelConfigError(
                f"slice_strategy {self.slice_strategy!r} gives one slice per view; "
                "n_slices must be 1, "
                f"got {self.n_slices} (use slice_strategy='sampled' for several)"
            )
        if self.slice_pooling == "none" and self.n_slices != 1:
            raise ModelConfigError(f"slice_pooling 'none' needs n_slices == 1, got {self.n_slices}")

    @property
    def class_names(self) -> tuple[str, ...]:
        """Names of the output columns: ``("malignant",)`` or the four Duke classes."""
        return CLASS_NAMES[self.num_classes]

    def replace(self, **overrides: Any) -> ModelConfig:
        """A copy with ``overrides`` applied; unknown keys raise with a hint."""
        check_keys(overrides)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``input_size`` as a list)."""
        data = dataclasses.asdict(self)
        data["input_size"] = list(self.input_size)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise with a hint."""
        check_keys(data)
        values = dict(data)
        if "input_size" in values:
            values["input_size"] = tuple(values["input_size"])
        return cls(**values)


def check_keys(data: Mapping[str, Any]) -> None:
    """Raise :class:`ModelConfigError` for keys that are not :class:`ModelConfig` fields."""
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    for key in data:
        look_up_option("ModelConfig field", key, fields)
