"""``model``, ``predictions`` and ``exam_predictions``: train, register in MLflow, score per study date.

The model is trained on the ``train`` split of all partitions, validated on ``val``,
logged and registered in MLflow; its registry version is written into every
prediction row, so a score traces back to the model (and through MLflow to the
data hash and code version it was trained on).
"""

import json

import dagster as dg
import numpy as np
import polars as pl

from dbt_assets.audit import audit_metadata, frame_hash
from dbt_assets.checks import contract_check
from dbt_assets.k8s import GPU_STEP_TAGS
from dbt_assets.partitions import study_date
from dbt_assets.settings import git_sha
from ml.baseline_classifier import auc_or_none, exam_probabilities, fit_classifier
from ml.features import FEATURE_NAMES, view_features
from resources.mlflow_resource import MlflowResource
from resources.object_store import ObjectStore
from schemas import ExamPredictions, Predictions

REGISTERED_MODEL = "tomosight-dbt"


class ModelConfig(dg.Config):
    """Training settings, editable in the launchpad."""

    c: float = 1.0
    seed: int = 0
    registered_model_name: str = REGISTERED_MODEL


def tensor_features(store: ObjectStore, manifest: pl.DataFrame) -> np.ndarray:
    """Feature matrix of the manifest's tensors, read from the processed store."""
    rows = []
    for uri in manifest["tensor_uri"].to_list():
        with store.local_path(uri) as path:
            rows.append(view_features(np.load(path, mmap_mode="r")))
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(FEATURE_NAMES))


def training_table(preprocessed: pl.DataFrame, exam_labels: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """One row per labelled view: tensor, split and the malignant-vs-rest target."""
    return (
        preprocessed.join(exam_labels.select("StudyUID", "View", "Cancer"), on=["StudyUID", "View"], how="inner")
        .join(splits.select("StudyUID", "split"), on="StudyUID", how="inner")
        .sort("StudyUID", "View")
    )


@dg.asset(group_name="model", op_tags=GPU_STEP_TAGS, pool="gpu", description=__doc__)
def model(
    context: dg.AssetExecutionContext,
    config: ModelConfig,
    preprocessed: pl.DataFrame,
    exam_labels: pl.DataFrame,
    splits: pl.DataFrame,
    store: ObjectStore,
    mlflow: MlflowResource,
) -> pl.DataFrame:
    table = training_table(preprocessed, exam_labels, splits)
    train, val = table.filter(pl.col("split") == "train"), table.filter(pl.col("split") == "val")
    context.log.info(f"training on {len(train)} views, validating on {len(val)}")
    x_train, y_train = tensor_features(store, train), train["Cancer"].to_numpy()
    classifier = fit_classifier(x_train, y_train, c=config.c, seed=config.seed)
    val_auc = auc_or_none(val["Cancer"].to_numpy(), classifier.predict_proba(tensor_features(store, val))[:, 1]) if len(val) else None
    data_hash = frame_hash(table.select("tensor_uri", "Cancer", "split"))
    client_mlflow = mlflow.configure()
    with mlflow.start_run(run_name=context.run.run_id, tags={"dagster_run_id": context.run.run_id, "git_sha": git_sha()}) as run:
        client_mlflow.log_params({"c": config.c, "seed": config.seed, "features": ",".join(FEATURE_NAMES)})
        client_mlflow.log_params({"train_views": len(train), "val_views": len(val), "dataset_hash": data_hash})
        if val_auc is not None:
            client_mlflow.log_metric("val_auc", val_auc)
        import mlflow.sklearn

        info = mlflow.sklearn.log_model(
            classifier, name="model", registered_model_name=config.registered_model_name,
            input_example=x_train[:1],
        )  # fmt: skip
    version = str(info.registered_model_version)
    result = pl.DataFrame(
        {
            "model_name": [config.registered_model_name],
            "model_version": [version],
            "mlflow_run_id": [run.info.run_id],
            "model_uri": [f"models:/{config.registered_model_name}/{version}"],
            "val_auc": [val_auc],
            "features": [json.dumps(FEATURE_NAMES)],
        }
    )
    context.add_output_metadata(
        {
            **audit_metadata(context),
            "model_version": version,
            "mlflow_run_id": run.info.run_id,
            "val_auc": val_auc if val_auc is not None else "n/a",
            "train_views": len(train),
        }
    )
    return result


def load_classifier(mlflow: MlflowResource, model_row: dict) -> object:
    """The registered model a ``model`` row names."""
    mlflow.configure()
    import mlflow.sklearn

    return mlflow.sklearn.load_model(model_row["model_uri"])


@dg.asset(partitions_def=study_date, group_name="predictions", op_tags=GPU_STEP_TAGS, description=__doc__)
def predictions(
    context: dg.AssetExecutionContext,
    preprocessed: pl.DataFrame,
    filepaths: pl.DataFrame,
    model: pl.DataFrame,
    store: ObjectStore,
    mlflow: MlflowResource,
) -> pl.DataFrame:
    schema = {"StudyUID": pl.String, "View": pl.String, "prob_malignant": pl.Float64, "model_version": pl.String, "PatientID": pl.String}
    if model.is_empty():
        raise dg.Failure("no trained model: materialize the `model` asset first")
    model_row = model.row(0, named=True)
    if preprocessed.is_empty():
        result = pl.DataFrame(schema=schema)
    else:
        classifier = load_classifier(mlflow, model_row)
        probs = classifier.predict_proba(tensor_features(store, preprocessed))[:, 1]
        result = (
            preprocessed.select("StudyUID", "View")
            .with_columns(prob_malignant=pl.Series(probs, dtype=pl.Float64), model_version=pl.lit(model_row["model_version"]))
            .join(filepaths.select("StudyUID", "View", "PatientID"), on=["StudyUID", "View"], how="left")
            .select(list(schema))
            .sort("StudyUID", "View")
        )
    context.add_output_metadata(
        {
            **audit_metadata(context, Predictions),
            "model_version": model_row["model_version"],
            "mlflow_run_id": model_row["mlflow_run_id"],
        }
    )
    return result


@dg.asset(partitions_def=study_date, group_name="predictions", description="Exam-level score: the most suspicious view.")
def exam_predictions(
    context: dg.AssetExecutionContext, predictions: pl.DataFrame, splits: pl.DataFrame
) -> pl.DataFrame:
    schema = {"StudyUID": pl.String, "prob_malignant": pl.Float64, "model_version": pl.String, "PatientID": pl.String, "split": pl.String}
    if predictions.is_empty():
        result = pl.DataFrame(schema=schema)
    else:
        exams = exam_probabilities(predictions)
        split_of = splits.select("StudyUID", "split") if not splits.is_empty() else pl.DataFrame(schema={"StudyUID": pl.String, "split": pl.String})
        result = exams.join(split_of, on="StudyUID", how="left").select(list(schema))
    versions = sorted(set(result["model_version"].to_list())) if len(result) else []
    context.add_output_metadata({**audit_metadata(context, ExamPredictions), "model_versions": dg.MetadataValue.json(versions)})
    return result


predictions_contract = contract_check(predictions, Predictions, study_date)
exam_predictions_contract = contract_check(exam_predictions, ExamPredictions, study_date)
