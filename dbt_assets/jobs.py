"""Jobs: per-study ingestion and preparation, scoring, training + reports, and cross-validation on demand."""

from __future__ import annotations

import dagster as dg

from dbt_assets.hpo import hpo_job

PER_STUDY = dg.AssetSelection.assets("filepaths", "quarantine", "exam_labels", "boxes", "preprocessed", "box_predictions")
SCORING = dg.AssetSelection.assets("predictions", "exam_predictions")
TRAINING = dg.AssetSelection.assets("splits", "model")
REPORTS = dg.AssetSelection.assets("evaluation_report", "froc_report", "unmatched_annotations", "warehouse")
CROSS_VALIDATION = dg.AssetSelection.assets("cross_validation_report")


def build_jobs() -> list[dg.UnresolvedAssetJobDefinition | dg.JobDefinition]:
    """Partitioned jobs run per study date (backfills over ranges); the others read all partitions; the HPO op job."""
    return [
        dg.define_asset_job("per_study_job", PER_STUDY,
                            description="Ingest, annotate, preprocess and detect for one study date."),
        dg.define_asset_job("scoring_job", SCORING,
                            description="Score one study date with the registered model."),
        dg.define_asset_job("training_job", TRAINING, description="Split all studies, train and register a model."),
        dg.define_asset_job("reports_job", REPORTS, description="Evaluation and FROC reports; rebuild the DuckDB views."),
        dg.define_asset_job("cv_job", CROSS_VALIDATION,
                            description="Patient-level k-fold cross-validation of the training config (k trainings; not in the demo)."),
        hpo_job,
    ]  # fmt: skip
