"""``box_predictions``, ``evaluation_report`` and ``froc_report``.

Box predictions come from the classical blob detector (DBTex submission format) until
a trained detector exists; the reports read every partition and write JSON + PNG to
the object store under ``reports/``.
"""

import json
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from dbt_assets.audit import audit_metadata
from dbt_assets.checks import contract_check
from dbt_assets.partitions import study_date
from ml.evaluation import (
    EvaluationReport,
    apply_temperature,
    evaluate_scores,
    fit_temperature,
    logit,
    model_card,
    operating_points,
    plot_pr,
    plot_reliability,
    plot_roc,
    sigmoid,
)
from ml.blob_detector import PREDICTION_COLUMNS, detect_volume
from ml.froc import evaluate
from ml.froc_plot import plot_froc
from resources.mlflow_resource import MlflowResource
from resources.object_store import ObjectStore
from schemas import BoxPredictions

BOX_COLUMNS = ["PatientID", "StudyUID", "View", *PREDICTION_COLUMNS]


@dg.asset(partitions_def=study_date, group_name="predictions", description=__doc__)
def box_predictions(context: dg.AssetExecutionContext, filepaths: pl.DataFrame, store: ObjectStore) -> pl.DataFrame:
    frames = []
    for row in filepaths.iter_rows(named=True):
        with store.local_path(row["dicom_uri"]) as path:
            found = detect_volume(str(path), row["View"])
        frames.append(found.with_columns(*(pl.lit(row[k]).alias(k) for k in ("PatientID", "StudyUID", "View"))))
    schema = {c: (pl.Float64 if c == "Score" else pl.Int64 if c in PREDICTION_COLUMNS else pl.String) for c in BOX_COLUMNS}
    result = pl.concat([f.select(BOX_COLUMNS) for f in frames]) if frames else pl.DataFrame(schema=schema)
    context.add_output_metadata({**audit_metadata(context, BoxPredictions), "detector": "blob_detector (LoG)"})
    return result.sort("StudyUID", "View", "Score", descending=[False, False, True])


box_predictions_contract = contract_check(box_predictions, BoxPredictions, study_date)


def _put_json(store: ObjectStore, key: str, payload: dict) -> str:
    return store.put_bytes(key, json.dumps(payload, indent=2, sort_keys=True, default=float).encode("utf-8"))


def _put_png(store: ObjectStore, key: str, draw) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        draw(path)
        return store.put_file(key, path)


class EvaluationConfig(dg.Config):
    """Bootstrap and operating-point settings of the evaluation report."""

    n_boot: int = 1000
    seed: int = 0
    target_specificity: float = 0.90


def exam_truth(exam_predictions: pl.DataFrame, exam_labels: pl.DataFrame, filepaths: pl.DataFrame) -> pl.DataFrame:
    """Exam scores with the malignant-vs-rest truth and the vendor, one row per scored exam."""
    truth = exam_labels.group_by("StudyUID").agg(pl.col("Cancer").max().alias("cancer"))
    vendor = filepaths.group_by("StudyUID").agg(pl.col("vendor").first())
    return (
        exam_predictions.join(truth, on="StudyUID", how="inner")
        .join(vendor, on="StudyUID", how="left")
        .with_columns(pl.col("vendor").fill_null("unknown"))
        .sort("StudyUID")
    )


def evaluate_split(part: pl.DataFrame, temperature: float, config: EvaluationConfig) -> EvaluationReport | None:
    """Calibrated test metrics with patient-level bootstrap CIs (None when one class only)."""
    if part.is_empty() or part["cancer"].n_unique() < 2:
        return None
    probs = sigmoid(apply_temperature(logit(part["prob_malignant"].to_numpy()), temperature))
    return evaluate_scores(
        probs, part["cancer"].to_numpy(), part["PatientID"].to_numpy(),
        groups={"vendor": part["vendor"].to_numpy()}, n_boot=config.n_boot, seed=config.seed,
    )  # fmt: skip


@dg.asset(group_name="reports", description="Calibrated exam-level evaluation with CIs, operating points, plots and model card.")
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    exam_predictions: pl.DataFrame,
    exam_labels: pl.DataFrame,
    filepaths: pl.DataFrame,
    model: pl.DataFrame,
    store: ObjectStore,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    scored = exam_truth(exam_predictions, exam_labels, filepaths) if not exam_predictions.is_empty() else pl.DataFrame()
    if scored.is_empty():
        raise dg.Failure("no scored exam has a label: materialize predictions and exam_labels first")
    val, test = scored.filter(pl.col("split") == "val"), scored.filter(pl.col("split") == "test")
    val_logits, val_labels = logit(val["prob_malignant"].to_numpy()), val["cancer"].to_numpy()
    temperature = fit_temperature(val_logits, val_labels) if val["cancer"].n_unique() == 2 else 1.0
    report = evaluate_split(test, temperature, config)
    calibrated_val = sigmoid(apply_temperature(val_logits, temperature))
    points = operating_points(calibrated_val, val_labels, target_specificity=config.target_specificity) if val["cancer"].n_unique() == 2 else {}
    model_row = model.row(0, named=True)
    uris: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if report is not None:
            test_raw = test["prob_malignant"].to_numpy()
            test_cal = sigmoid(apply_temperature(logit(test_raw), temperature))
            labels, patients = test["cancer"].to_numpy(), test["PatientID"].to_numpy()
            plot_roc(test_cal, labels, folder / "roc.png", patient_ids=patients, seed=config.seed)
            plot_pr(test_cal, labels, folder / "pr.png")
            plot_reliability(test_raw, labels, folder / "reliability.png", calibrated=test_cal)
            card = model_card(
                report, model_name=model_row["model_name"], version=model_row["model_version"],
                config={"model_uri": model_row["model_uri"], "temperature": round(temperature, 4)},
                data={"exams (test)": len(test), "cancers (test)": int(labels.sum()), "exams (val)": len(val)},
                calibration={"temperature": temperature, "fitted on": "validation split"},
                operating_points=points,
            )  # fmt: skip
            (folder / "model_card.md").write_text(card)
        payload = {
            "task": "malignant (Cancer) vs rest, exam level",
            "model_version": model_row["model_version"],
            "temperature": temperature,
            "test": report.to_dict() if report is not None else None,
            "operating_points": points,
            "exams": {split: int((scored["split"] == split).sum()) for split in ("train", "val", "test")},
        }
        (folder / "evaluation.json").write_text(json.dumps(payload, indent=2, sort_keys=True, default=float))
        for path in sorted(folder.iterdir()):
            uris[path.name] = store.put_file(f"reports/{path.name}", path)
        client = mlflow.client()
        for path in sorted(folder.iterdir()):
            client.log_artifact(model_row["mlflow_run_id"], str(path), artifact_path="evaluation")
    overall = report.overall.metrics if report is not None else {}
    auc = overall.get("roc_auc")
    context.log.info(f"test ROC-AUC {auc.value if auc else 'n/a'}, temperature {temperature:.3f}")
    return dg.MaterializeResult(
        metadata={
            **audit_metadata(context),
            "test_auc": auc.value if auc else "n/a",
            "test_auc_ci": dg.MetadataValue.json([auc.lower, auc.upper] if auc else None),
            "test_ece": overall["ece"].value if "ece" in overall else "n/a",
            "temperature": temperature,
            "model_version": model_row["model_version"],
            **{name: dg.MetadataValue.path(uri) for name, uri in uris.items()},
        }
    )


@dg.asset(group_name="reports", description="DBTex FROC of the box predictions over all partitions, with a plot.")
def froc_report(
    context: dg.AssetExecutionContext,
    box_predictions: pl.DataFrame,
    exam_labels: pl.DataFrame,
    boxes: pl.DataFrame,
    store: ObjectStore,
) -> dg.MaterializeResult:
    if boxes.is_empty() or box_predictions.is_empty() or exam_labels.is_empty():
        context.log.warning("FROC needs labels, GT boxes and predictions; some are empty")
        return dg.MaterializeResult(metadata={**audit_metadata(context), "mean_sensitivity": "n/a"})
    result = evaluate(exam_labels, boxes, box_predictions)
    json_uri = _put_json(store, "reports/froc.json", result.to_dict())
    png_uri = _put_png(store, "reports/froc.png", lambda p: plot_froc(result, p))
    return dg.MaterializeResult(
        metadata={
            **audit_metadata(context),
            "mean_sensitivity": result.mean_sensitivity,
            "sensitivity_at_2_fps_all": result.sensitivity_at_2_fps_all,
            "report": dg.MetadataValue.path(json_uri),
            "froc_plot": dg.MetadataValue.path(png_uri),
        }
    )
