"""Hyperparameter search: the search space and one trial, independent of any orchestrator.

:func:`suggest` draws a trial's parameters (slice strategy, input size, learning rate,
breast fusion) from an Optuna-style ``trial`` object; :func:`run_trial` builds the data for
them, trains with :func:`ml.training.train` and reports the validation AUC after every epoch,
stopping with ``optuna.TrialPruned`` when ``report`` says the trial is weak.  Optuna is only
used through the ``trial`` passed in (and its ``TrialPruned`` exception), so tests can use a
fake trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from torch.utils.data import Dataset

from ml.training.config import TrainConfig
from ml.training.errors import ConfigError, TrainingError, look_up_option

ASPECT = 0.8125
"""Width / height of the model input (Duke views are taller than wide; 416 / 512)."""

DataProvider = Callable[[str, int, int], tuple[Dataset, Dataset]]
"""``(slice_strategy, height, width) -> (train_ds, val_ds)``."""

Report = Callable[[int, float], bool]
"""``(epoch, val_auc) -> prune?``."""


class SearchError(TrainingError):
    """A trial cannot give an objective value (for example a one-class validation split)."""


class TrialLike(Protocol):
    """The part of ``optuna.Trial`` the search uses."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...
    def report(self, value: float, step: int) -> None: ...
    def should_prune(self) -> bool: ...


def input_width(height: int) -> int:
    """Model input width for ``height`` (the Duke aspect ratio)."""
    return round(height * ASPECT)


@dataclass(frozen=True)
class SearchSpace:
    """What a trial may choose; ``lr`` is drawn log-uniformly from ``lr_range``."""

    strategies: tuple[str, ...] = ("central", "slab_mip", "mip")
    heights: tuple[int, ...] = (128, 256, 512)
    lr_range: tuple[float, float] = (1e-5, 3e-3)
    fusions: tuple[str, ...] = ("max", "concat", "attention")

    def __post_init__(self) -> None:
        from ml.models.config import BREAST_FUSIONS

        for strategy in self.strategies:
            look_up_option("slice strategy", strategy, ("central", "slab_mip", "mip"))
        for fusion in self.fusions:
            look_up_option("fusion", fusion, BREAST_FUSIONS)
        if not self.strategies or not self.heights or not self.fusions:
            raise ConfigError("every dimension of the search space needs at least one choice")
        if any(not isinstance(h, int) or h < 8 for h in self.heights):
            raise ConfigError(f"heights must be integers >= 8, got {self.heights!r}")
        low, high = self.lr_range
        if not 0 < low <= high:
            raise ConfigError(f"lr_range must satisfy 0 < low <= high, got {self.lr_range!r}")


DEFAULT_SPACE = SearchSpace()


def complete(params: Mapping[str, Any]) -> dict[str, Any]:
    """Trial parameters plus the derived ``width`` (what Optuna records lacks it)."""
    out = {k: params[k] for k in ("slice_strategy", "height", "lr", "fusion")}
    out["height"] = int(out["height"])
    out["width"] = input_width(out["height"])
    return out


def suggest(trial: TrialLike, space: SearchSpace = DEFAULT_SPACE) -> dict[str, Any]:
    """Draw ``slice_strategy``, ``height``, ``lr`` and ``fusion`` (``width`` follows the height)."""
    return complete(
        {
            "slice_strategy": trial.suggest_categorical("slice_strategy", list(space.strategies)),
            "height": trial.suggest_categorical("height", list(space.heights)),
            "lr": trial.suggest_float("lr", *space.lr_range, log=True),
            "fusion": trial.suggest_categorical("fusion", list(space.fusions)),
        }
    )


def trial_reporter(trial: TrialLike) -> Report:
    """A ``report`` for :func:`run_trial` that feeds the trial's pruner."""

    def report(epoch: int, auc: float) -> bool:
        trial.report(auc, epoch)
        return trial.should_prune()

    return report


@dataclass
class TrialOutcome:
    """A finished trial: its best validation AUC and where that model was saved."""

    value: float
    best_epoch: int
    history: list[dict[str, float]] = field(repr=False)
    checkpoint: Path | None


def run_trial(
    params: Mapping[str, Any],
    data_provider: DataProvider,
    base_config: TrainConfig,
    *,
    report: Report,
    model_name: str = "dbt_resnet10t_2d",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> TrialOutcome:
    """Train one trial; raise ``optuna.TrialPruned`` when ``report`` asks to stop.

    ``base_config`` gives everything but the learning rate (taken from ``params``); its
    ``checkpoint_dir`` receives the best-AUC checkpoint.  Epochs whose AUC is undefined
    (one-class validation) are not reported; a trial with no defined AUC raises
    :class:`SearchError`.
    """
    from ml.models import create_model
    from ml.training.loop import seed_everything, train

    params = complete(params)
    train_ds, val_ds = data_provider(params["slice_strategy"], params["height"], params["width"])
    seed_everything(base_config.seed)  # same initial weights for the same params
    model = create_model(
        model_name,
        input_size=(params["height"], params["width"]),
        n_slices=1,
        slice_strategy=params["slice_strategy"],
        slice_pooling="none",
        fusion=params["fusion"],
    )

    def each_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        auc = float(metrics.get("val_auc", math.nan))
        if math.isfinite(auc) and report(epoch, auc):
            import optuna

            raise optuna.TrialPruned(f"pruned after epoch {epoch} (val_auc {auc:.4f})")

    result = train(model, train_ds, val_ds, replace(base_config, lr=float(params["lr"])), on_epoch=each_epoch)
    if not math.isfinite(result.best_auc):
        raise SearchError("validation AUC is undefined (the validation split holds one class)")
    return TrialOutcome(result.best_auc, result.best_epoch, result.history, result.best_auc_path)
