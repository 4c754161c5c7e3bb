"""``box_predictions``, ``evaluation_report`` and ``froc_report``.

Box predictions come from the classical blob detector (DBTex submission format) until
a trained detector exists; the reports read every partition and write JSON + PNG to
the object store under ``reports/``.
"""

import json
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from dbt_assets.audit import audit_metadata
from dbt_assets.checks import contract_check
from dbt_assets.partitions import study_date
from ml.baseline_classifier import auc_or_none
from ml.blob_detector import PREDICTION_COLUMNS, detect_volume
from ml.froc import evaluate
from ml.froc_plot import plot_froc
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


def roc_plot(labels: np.ndarray, scores: np.ndarray, auc: float | None, path: Path) -> None:
    """ROC curve of exam-level scores as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_curve

    fig = Figure(figsize=(5, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if auc is not None:
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="Exam-level ROC (test split)")
    if auc is not None:
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "test split has one class only: no ROC", ha="center")
    fig.savefig(path)


@dg.asset(group_name="reports", description="Exam-level ROC-AUC per split, malignant vs rest, with a ROC plot.")
def evaluation_report(
    context: dg.AssetExecutionContext,
    exam_predictions: pl.DataFrame,
    exam_labels: pl.DataFrame,
    store: ObjectStore,
) -> dg.MaterializeResult:
    truth = exam_labels.group_by("StudyUID").agg(pl.col("Cancer").max().alias("cancer"))
    scored = exam_predictions.join(truth, on="StudyUID", how="inner") if not exam_predictions.is_empty() else pl.DataFrame()
    per_split = {}
    for split in ("train", "val", "test"):
        part = scored.filter(pl.col("split") == split) if not scored.is_empty() else scored
        if part.is_empty():
            per_split[split] = {"exams": 0, "cancers": 0, "auc": None}
            continue
        labels, scores = part["cancer"].to_numpy(), part["prob_malignant"].to_numpy()
        per_split[split] = {"exams": len(part), "cancers": int(labels.sum()), "auc": auc_or_none(labels, scores)}
    versions = sorted(set(exam_predictions["model_version"].to_list())) if len(exam_predictions) else []
    report = {"task": "malignant (Cancer) vs rest, exam level", "model_versions": versions, "splits": per_split}
    json_uri = _put_json(store, "reports/evaluation.json", report)
    test = scored.filter(pl.col("split") == "test") if not scored.is_empty() else scored
    labels = test["cancer"].to_numpy() if len(test) else np.array([])
    scores = test["prob_malignant"].to_numpy() if len(test) else np.array([])
    png_uri = _put_png(store, "reports/roc.png", lambda p: roc_plot(labels, scores, per_split["test"]["auc"], p))
    context.log.info(f"evaluation: {json.dumps(per_split)}")
    return dg.MaterializeResult(
        metadata={
            **audit_metadata(context),
            "test_auc": per_split["test"]["auc"] if per_split["test"]["auc"] is not None else "n/a",
            "report": dg.MetadataValue.path(json_uri),
            "roc_plot": dg.MetadataValue.path(png_uri),
            "model_versions": dg.MetadataValue.json(versions),
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
