"""Evaluation of malignancy scores: metrics with patient-level bootstrap CIs, subgroups,
temperature scaling, operating points, k-fold aggregation, plots and a model card.

Framework-free (numpy, scipy, matplotlib); matplotlib and scipy are imported lazily.
"""

from ml.evaluation._inputs import EvaluationError
from ml.evaluation.bootstrap import patient_bootstrap_indices, percentile_interval
from ml.evaluation.calibration import apply_temperature, binary_nll, fit_temperature, logit, sigmoid
from ml.evaluation.crossval import aggregate_folds, evaluate_folds
from ml.evaluation.metrics import (
    average_precision,
    binary_curve,
    brier_score,
    compute_metrics,
    expected_calibration_error,
    log_loss,
    reliability_bins,
    roc_auc,
    sensitivity_at_specificity,
)
from ml.evaluation.model_card import model_card, write_model_card
from ml.evaluation.operating_points import (
    operating_points,
    threshold_at_sensitivity,
    threshold_at_specificity,
    threshold_metrics,
    youden_threshold,
)
from ml.evaluation.plots import plot_fold_rocs, plot_pr, plot_reliability, plot_roc
from ml.evaluation.report import (
    EvaluationReport,
    GroupResult,
    MetricEstimate,
    NotEvaluable,
    evaluate_scores,
)

__all__ = [
    "EvaluationError",
    "EvaluationReport",
    "GroupResult",
    "MetricEstimate",
    "NotEvaluable",
    "aggregate_folds",
    "apply_temperature",
    "average_precision",
    "binary_curve",
    "binary_nll",
    "brier_score",
    "compute_metrics",
    "evaluate_folds",
    "evaluate_scores",
    "expected_calibration_error",
    "fit_temperature",
    "log_loss",
    "logit",
    "model_card",
    "operating_points",
    "patient_bootstrap_indices",
    "percentile_interval",
    "plot_fold_rocs",
    "plot_pr",
    "plot_reliability",
    "plot_roc",
    "reliability_bins",
    "roc_auc",
    "sensitivity_at_specificity",
    "sigmoid",
    "threshold_at_sensitivity",
    "threshold_at_specificity",
    "threshold_metrics",
    "youden_threshold",
    "write_model_card",
]
