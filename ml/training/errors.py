"""Typed errors of the training package."""

from __future__ import annotations

from collections.abc import Iterable

from ml.options import did_you_mean


class TrainingError(Exception):
    """Base class of every error raised by ``ml.training``."""


class ConfigError(TrainingError, ValueError):
    """A training option has an invalid value."""


class DatasetError(TrainingError, ValueError):
    """Manifest, labels or tensors do not fit the dataset contract."""


class CheckpointError(TrainingError):
    """A checkpoint folder is missing files or cannot be loaded."""


def look_up_option(name: str, value: object, allowed: Iterable[object]) -> object:
    """Return ``value`` if it is in ``allowed``; otherwise raise ConfigError with a suggestion."""
    choices = tuple(allowed)
    if value in choices:
        return value
    hint = did_you_mean(value, choices)
    suggestion = f"; did you mean {hint!r}?" if hint else ""
    raise ConfigError(f"{name}={value!r} is not one of {list(choices)}{suggestion}")
