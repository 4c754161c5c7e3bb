"""Named model configurations and the ``create_model`` factory.

A model is added by registering a :class:`ModelConfig` under a name, not by editing an
if-chain.  ``create_model`` accepts a registered name, a ``ModelConfig`` or its dict,
plus field overrides, and validates everything before building.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from typing import Any

from ml.models.classifier import DBTClassifier
from ml.models.config import ModelConfig, ModelConfigError, look_up_option

_REGISTRY: dict[str, ModelConfig] = {}


def register_model(name: str, config: ModelConfig, *, overwrite: bool = False) -> ModelConfig:
    """Register ``config`` under ``name``; refuses to replace an entry unless ``overwrite``."""
    if not isinstance(config, ModelConfig):
        raise ModelConfigError(f"register_model needs a ModelConfig, got {type(config).__name__}")
    if name in _REGISTRY and not overwrite:
        raise ModelConfigError(f"model {name!r} is already registered")
    _REGISTRY[name] = config
    return config


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_model_config(name: str) -> ModelConfig:
    """The registered configuration for ``name`` (with a "did you mean" error)."""
    look_up_option("model name", name, list(_REGISTRY))
    return _REGISTRY[name]


ConfigLike = str | ModelConfig | Mapping[str, Any]


def resolve_config(config_or_name: ConfigLike, **overrides: Any) -> ModelConfig:
    """A validated :class:`ModelConfig` from a name, config or dict, with overrides applied."""
    if isinstance(config_or_name, str):
        config = get_model_config(config_or_name)
    elif isinstance(config_or_name, ModelConfig):
        config = config_or_name
    elif isinstance(config_or_name, Mapping):
        config = ModelConfig.from_dict(config_or_name)
    else:
        kind = type(config_or_name).__name__
        raise ModelConfigError(f"expected a model name, ModelConfig or dict, got {kind}")
    return config.replace(**overrides) if overrides else config


def create_model(config_or_name: ConfigLike, **overrides: Any) -> DBTClassifier:
    """Build a :class:`DBTClassifier` (weights only from the config's local ``pretrained`` path)."""
    return DBTClassifier(resolve_config(config_or_name, **overrides))


register_model("dbt_tiny", ModelConfig(
    backbone="test_resnet", slice_pooling="none", input_size=(64, 64), hidden_dim=32,
))
register_model("dbt_tiny_mil", ModelConfig(
    backbone="test_resnet", slice_pooling="attention", fusion="attention", input_size=(64, 64),
    n_slices=4, slice_strategy="sampled", hidden_dim=32,
))
register_model("dbt_cpu_mip", ModelConfig(  # the CPU demo: small ResNet on MIPs, lesions max-pooled
    backbone="test_resnet", slice_pooling="none", spatial_pooling="max", slice_strategy="mip",
    input_size=(128, 104), hidden_dim=32,
))
register_model("dbt_resnet10t_2d", ModelConfig(
    backbone="resnet10t", slice_pooling="none", slice_strategy="mip", input_size=(256, 208),
))
register_model("dbt_resnet18_2d", ModelConfig(
    backbone="resnet18", slice_pooling="none", slice_strategy="central", input_size=(512, 416),
))
register_model("dbt_resnet18_mil", ModelConfig(
    backbone="resnet18", slice_pooling="attention", fusion="attention", input_size=(512, 416),
    n_slices=8, slice_strategy="sampled", dropout=0.2,
))
register_model("dbt_efficientnet_b0_mil", ModelConfig(
    backbone="efficientnet_b0", slice_pooling="attention", fusion="concat", embed_dim=256,
    input_size=(512, 416), n_slices=8, slice_strategy="sampled", dropout=0.2,
))
register_model("dbt_convnext_tiny_mil", ModelConfig(
    backbone="convnext_tiny", slice_pooling="attention", fusion="attention", input_size=(512, 416),
    n_slices=8, slice_strategy="sampled", dropout=0.2,
))
