"""The baseline view classifier: standardised hand-made features + logistic regression.

A placeholder a model that learns from pixels (the CNN of the model issue) replaces;
it exists so the asset graph trains, registers and scores a real model end to end.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def fit_classifier(features: np.ndarray, labels: np.ndarray, *, c: float = 1.0, seed: int = 0) -> Pipeline:
    """Fit a class-balanced logistic regression on standardised features."""
    if len(np.unique(labels)) < 2:
        raise ValueError(f"training needs both classes; got only {np.unique(labels).tolist()}")
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=1000, random_state=seed)
    )
    return model.fit(features, labels)


def auc_or_none(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC, or None when only one class is present."""
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None


def exam_probabilities(view_predictions: pl.DataFrame) -> pl.DataFrame:
    """Exam-level probability: the most suspicious view of the study (max over views)."""
    keys = [c for c in ("StudyUID", "PatientID", "model_version") if c in view_predictions.columns]
    return view_predictions.group_by(keys).agg(pl.col("prob_malignant").max()).sort(keys)
