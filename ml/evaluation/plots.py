"""ROC, precision-recall and reliability plots as PNG files (matplotlib Agg, atomic writes)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from ml.atomic import atomic_path
from ml.evaluation._inputs import binary_inputs
from ml.evaluation.bootstrap import roc_band
from ml.evaluation.metrics import (
    DEFAULT_ECE_BINS,
    average_precision,
    binary_curve,
    expected_calibration_error,
    reliability_bins,
    roc_auc,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _figure() -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as stream:
            fig.savefig(stream, format="png")
    return Path(path)


def _ci_text(ci: tuple[float, float] | None) -> str:
    return f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci is not None else ""


def plot_roc(
    scores: ArrayLike,
    labels: ArrayLike,
    path: str | os.PathLike[str],
    *,
    auc_ci: tuple[float, float] | None = None,
    patient_ids: ArrayLike | None = None,
    n_boot: int = 200,
    seed: int = 0,
    title: str = "ROC",
) -> Path:
    """ROC curve with AUC (and its CI) in the legend; a bootstrap band given ``patient_ids``."""
    s, y = binary_inputs(scores, labels)
    curve = binary_curve(s, y)
    fig, ax = _figure()
    if patient_ids is not None:
        grid = np.linspace(0.0, 1.0, 101)
        band = roc_band(s, y, patient_ids, grid=grid, n_boot=n_boot, seed=seed)
        if band is not None:
            ax.fill_between(
                grid, band[0], band[1], color="tab:blue", alpha=0.2, label="95% bootstrap band"
            )
    label = f"AUC {roc_auc(s, y):.3f}{_ci_text(auc_ci)}"
    ax.plot(curve.fpr, curve.tpr, color="tab:blue", label=label)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr(
    scores: ArrayLike,
    labels: ArrayLike,
    path: str | os.PathLike[str],
    *,
    ap_ci: tuple[float, float] | None = None,
    title: str = "Precision-recall",
) -> Path:
    """Step precision-recall curve with average precision (and its CI) and the prevalence line."""
    s, y = binary_inputs(scores, labels)
    curve = binary_curve(s, y)
    precision = np.r_[1.0, curve.tps[1:] / (curve.tps[1:] + curve.fps[1:])]
    fig, ax = _figure()
    ax.step(curve.tpr, precision, where="post", color="tab:green",
            label=f"AP {average_precision(s, y):.3f}{_ci_text(ap_ci)}")
    prevalence = float(y.mean())
    label = f"prevalence {prevalence:.3f}"
    ax.axhline(prevalence, color="grey", linestyle=":", linewidth=0.8, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (PPV)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_reliability(
    probabilities: ArrayLike,
    labels: ArrayLike,
    path: str | os.PathLike[str],
    *,
    calibrated: ArrayLike | None = None,
    n_bins: int = DEFAULT_ECE_BINS,
    title: str = "Reliability",
) -> Path:
    """Reliability diagram (observed rate vs mean probability per bin), before/after calibration."""
    series = {"uncalibrated": probabilities}
    if calibrated is not None:
        series["temperature-scaled"] = calibrated
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8, label="perfect")
    for (name, probs), colour in zip(series.items(), ("tab:red", "tab:blue"), strict=False):
        p, y = binary_inputs(probs, labels, probabilities=True)
        counts, mean_p, mean_y = reliability_bins(p, y, n_bins)
        filled = counts > 0
        ece = expected_calibration_error(p, y, n_bins)
        label = f"{name} (ECE {ece:.3f})"
        ax.plot(mean_p[filled], mean_y[filled], marker="o", color=colour, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability")
    ax.set(ylabel="observed malignant rate",
           title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _save(fig, path)


def plot_fold_rocs(
    folds: Sequence[tuple[ArrayLike, ArrayLike]],
    path: str | os.PathLike[str],
    *,
    mean_auc: float | None = None,
    auc_ci: tuple[float, float] | None = None,
    title: str = "Cross-validation ROC",
) -> Path:
    """One ROC curve per fold's held-out ``(scores, labels)``, the mean AUC and its CI in the title.

    A fold holding one class has no curve; it is named in the legend as such.
    """
    fig, ax = _figure()
    for index, (scores, labels) in enumerate(folds):
        s, y = binary_inputs(scores, labels)
        if 0 < int(y.sum()) < y.size:
            curve = binary_curve(s, y)
            label = f"fold {index} AUC {roc_auc(s, y):.3f}"
            ax.plot(curve.fpr, curve.tpr, linewidth=1.2, label=label)
        else:
            ax.plot([], [], linestyle="none", label=f"fold {index}: one class, no curve")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    if mean_auc is not None:
        interval = f" (95% CI [{auc_ci[0]:.3f}, {auc_ci[1]:.3f}])" if auc_ci is not None else ""
        title = f"{title}\nmean AUC {mean_auc:.3f}{interval}"
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)
