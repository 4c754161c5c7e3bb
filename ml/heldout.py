"""Score a held-out Duke-layout cohort (CSV labels + DICOM) with a trained classifier.

The cohort is catalogued (:func:`ml.catalog.catalog_cohort`), preprocessed like the
training data (:func:`ml.preprocess.preprocess_many`), scored through the one inference
path (:func:`ml.inference.predict_exams`, with the validation temperature) and evaluated
malignant-vs-rest at exam level with patient-level bootstrap CIs.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from ml.catalog import catalog_cohort, find_duke_csvs
from ml.evaluation import EvaluationReport, evaluate_scores
from ml.inference import predict_exams
from ml.preprocess import PreprocessConfig, preprocess_many


class HeldoutError(ValueError):
    """The held-out cohort cannot be scored (no labels, one class only, geometry mismatch)."""


@dataclass(frozen=True)
class HeldoutResult:
    """Exam-level metrics and the calibrated scores behind them."""

    report: EvaluationReport
    scores: pl.DataFrame  # StudyUID, PatientID, prob_malignant, cancer
    temperature: float
    failed_views: int
    quarantined_views: int

    def summary(self) -> dict[str, Any]:
        """The headline figures: AUC with its CI, ECE, Brier and the cohort size."""
        overall = self.report.overall
        return {
            "n_exams": overall.n_exams,
            "n_patients": overall.n_patients,
            "n_malignant": overall.n_positive,
            "temperature": self.temperature,
            **{name: overall.metrics[name].to_dict() for name in ("roc_auc", "ece", "brier")},
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary, the full report and the per-exam scores."""
        return {
            "summary": self.summary(),
            "failed_views": self.failed_views,
            "quarantined_views": self.quarantined_views,
            "report": self.report.to_dict(),
            "scores": self.scores.to_dicts(),
        }


def check_geometry(model: torch.nn.Module, config: PreprocessConfig) -> None:
    """Refuse a preprocessing config whose tensors the model was not trained on."""
    model_config = getattr(model, "config", None)
    if model_config is None:
        return
    expected = (model_config.slice_strategy, tuple(model_config.input_size), model_config.n_slices)
    channels = config.n_slices if config.strategy == "sampled" else 1
    got = (config.strategy, (config.height, config.width), channels)
    if expected[:2] != got[:2] or (expected[0] == "sampled" and expected[2] != got[2]):
        raise HeldoutError(f"model expects (strategy, size, slices) {expected}, preprocessing gives {got}")


def exam_truth(labels_csv: str | os.PathLike[str]) -> pl.DataFrame:
    """One row per study from a Duke labels CSV: StudyUID, PatientID, cancer (0/1)."""
    labels = pl.read_csv(labels_csv, infer_schema=False)
    missing = {"PatientID", "StudyUID", "Cancer"} - set(labels.columns)
    if missing:
        raise HeldoutError(f"{labels_csv}: labels lack columns {sorted(missing)}")
    return labels.group_by("StudyUID").agg(
        pl.col("PatientID").first(), pl.col("Cancer").cast(pl.Int64).max().alias("cancer")
    )


def evaluate_heldout(
    cohort_dir: str | os.PathLike[str],
    model: torch.nn.Module,
    temperature: float,
    preprocess_config: PreprocessConfig,
    *,
    workers: int = 1,
    n_boot: int = 1000,
    seed: int = 0,
    decoder: str | None = None,
) -> HeldoutResult:
    """Preprocess, score and evaluate every labelled exam of the cohort in ``cohort_dir``.

    ``decoder`` picks the frame decoder (see :func:`ml.preprocess.preprocess_many`).
    """
    check_geometry(model, preprocess_config)
    csvs = find_duke_csvs(cohort_dir)
    if csvs.labels is None:
        raise HeldoutError(f"{cohort_dir}: no labels CSV, nothing to evaluate against")
    catalogued, quarantined = catalog_cohort(cohort_dir, csvs.filepaths)
    with tempfile.TemporaryDirectory(prefix="tomosight-heldout-") as tmp:
        items = [
            (row["dicom_uri"], row["View"], Path(tmp) / f"{i:06d}.npy")
            for i, row in enumerate(catalogued.iter_rows(named=True))
        ]
        rows = preprocess_many(items, preprocess_config, workers=workers, decoder=decoder)
        ok = [(item, row) for item, row in zip(catalogued.iter_rows(named=True), rows) if row["status"] == "ok"]
        manifest = pl.DataFrame(
            {
                "StudyUID": [item["StudyUID"] for item, _ in ok],
                "View": [item["View"] for item, _ in ok],
                "tensor_uri": [str(row["tensor_path"]) for _, row in ok],
            },
            schema={"StudyUID": pl.String, "View": pl.String, "tensor_uri": pl.String},
        )
        _, exams = predict_exams(model, manifest, temperature=temperature)
    scores = exams.join(exam_truth(csvs.labels), on="StudyUID", how="inner").sort("StudyUID")
    if scores.is_empty() or scores["cancer"].n_unique() < 2:
        raise HeldoutError(f"{cohort_dir}: need scored exams of both classes, got {len(scores)} exam(s)")
    report = evaluate_scores(
        scores["prob_malignant"].to_numpy(), scores["cancer"].to_numpy(), scores["PatientID"].to_numpy(),
        n_boot=n_boot, seed=seed,
    )  # fmt: skip
    return HeldoutResult(
        report=report,
        scores=scores.select("StudyUID", "PatientID", "prob_malignant", "cancer"),
        temperature=float(temperature),
        failed_views=len(rows) - len(ok),
        quarantined_views=len(quarantined),
    )
