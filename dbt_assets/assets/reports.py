"""``box_predictions``, ``evaluation_report`` and ``froc_report``.

Box predictions come from the classical blob detector (DBTex submission format) until
a trained detector exists; the reports read every partition and write JSON + PNG to
the object store under ``reports/``.
"""

import json
import re
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl

from dbt_assets.audit import audit_metadata
from dbt_assets.checks import contract_check
from dbt_assets.partitions import study_date
from dbt_assets.registry_tags import record_triage
from ml.evaluation import (
    EvaluationReport,
    GroupResult,
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
from ml.evaluation.calibration import TEMPERATURE_PRIOR_SD
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
    min_subgroup_size: int = 10  # smaller subgroups (or one-class ones) are reported as not evaluable


EXAM_GROUPS = ("vendor", "density")
VIEW_GROUPS = ("view", "laterality")


def exam_truth(exam_predictions: pl.DataFrame, exam_labels: pl.DataFrame, filepaths: pl.DataFrame) -> pl.DataFrame:
    """Exam scores with the malignant-vs-rest truth, vendor and density, one row per scored exam."""
    truth = exam_labels.group_by("StudyUID").agg(pl.col("Cancer").max().alias("cancer"))
    density = pl.col("density").max() if "density" in filepaths.columns else pl.lit(None, dtype=pl.String)
    per_study = filepaths.group_by("StudyUID").agg(pl.col("vendor").first(), density.alias("density"))  # A < B < C < D: the denser breast
    return (
        exam_predictions.join(truth, on="StudyUID", how="inner")
        .join(per_study, on="StudyUID", how="left")
        .with_columns(pl.col(*EXAM_GROUPS).fill_null("unknown"))
        .sort("StudyUID")
    )


def breast_truth(exam_labels: pl.DataFrame, boxes: pl.DataFrame) -> pl.DataFrame:
    """``StudyUID, laterality, cancer`` per labelled breast: cancer boxes decide, else the Cancer labels."""
    laterality = pl.col("View").str.slice(0, 1).str.to_uppercase().alias("laterality")
    labelled = exam_labels.group_by("StudyUID", laterality).agg(pl.col("Cancer").max().alias("label"))
    cancer_boxes = (
        boxes.filter(pl.col("Class") == "cancer").select("StudyUID", laterality).unique()
        if not boxes.is_empty() else pl.DataFrame(schema={"StudyUID": pl.String, "laterality": pl.String})
    ).with_columns(boxed=pl.lit(1, dtype=pl.Int64))  # fmt: skip
    boxed_study = pl.col("StudyUID").is_in(cancer_boxes["StudyUID"].unique().implode())
    cancer = pl.when(boxed_study).then(pl.col("boxed").fill_null(0)).otherwise(pl.col("label")).cast(pl.Int64)
    return (
        labelled.join(cancer_boxes, on=["StudyUID", "laterality"], how="left")
        .select("StudyUID", "laterality", cancer.alias("cancer"))
        .sort("StudyUID", "laterality")
    )


def view_truth(predictions: pl.DataFrame, exam_predictions: pl.DataFrame, exam_labels: pl.DataFrame, boxes: pl.DataFrame) -> pl.DataFrame:
    """View scores with their breast's truth, split, view (CC/MLO) and laterality (L/R), one row per scored view."""
    split = exam_predictions.select("StudyUID", "model_version", "split")
    return (
        predictions.join(split, on=["StudyUID", "model_version"], how="inner")
        .with_columns(laterality=pl.col("View").str.slice(0, 1).str.to_uppercase(), view=pl.col("View").str.slice(1).str.to_uppercase())
        .join(breast_truth(exam_labels, boxes), on=["StudyUID", "laterality"], how="inner")
        .sort("StudyUID", "View")
    )  # fmt: skip


def fitted_temperature(val: pl.DataFrame) -> float:
    """Temperature fitted on validation scores; 1.0 (no scaling) unless both classes are present."""
    if val.is_empty() or val["cancer"].n_unique() < 2:
        return 1.0
    return fit_temperature(logit(val["prob_malignant"].to_numpy()), val["cancer"].to_numpy())


def newest_version(exam_predictions: pl.DataFrame) -> str:
    """The newest registered model version among the exam predictions (MLflow versions are integers)."""
    return max(exam_predictions["model_version"].unique().to_list(), key=int)


def calibrated(part: pl.DataFrame, temperature: float) -> np.ndarray:
    """``part``'s probabilities after temperature scaling."""
    return sigmoid(apply_temperature(logit(part["prob_malignant"].to_numpy()), temperature))


def evaluate_split(part: pl.DataFrame, temperature: float, config: EvaluationConfig, *,
                   groups: tuple[str, ...] = EXAM_GROUPS, unit: str = "exam") -> EvaluationReport | None:  # fmt: skip
    """Calibrated metrics with patient-level bootstrap CIs, overall and per ``groups`` column (None when one class only)."""
    if part.is_empty() or part["cancer"].n_unique() < 2:
        return None
    return evaluate_scores(
        calibrated(part, temperature), part["cancer"].to_numpy(), part["PatientID"].to_numpy(),
        groups={g: part[g].to_numpy() for g in groups}, n_boot=config.n_boot, seed=config.seed,
        min_group_size=config.min_subgroup_size, unit=unit,
    )  # fmt: skip


def report_metrics(report: EvaluationReport, prefix: str) -> dict[str, float]:
    """MLflow metrics of a report: overall ROC-AUC and ECE, and each evaluable subgroup's ROC-AUC."""
    found = {f"{prefix}_{name}": report.overall.metrics[name].value for name in ("roc_auc", "ece")}
    for column, levels in report.subgroups.items():
        for level, group in levels.items():
            if isinstance(group, GroupResult):
                found[f"{prefix}_{column}_{level}_roc_auc"] = group.metrics["roc_auc"].value
    return {re.sub(r"[^A-Za-z0-9_.-]", "_", k): v for k, v in found.items() if v is not None}


@dg.asset(group_name="reports", description="Calibrated evaluation with CIs (exams by vendor and density, views by view and laterality), operating points, plots and model card.")
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    predictions: pl.DataFrame,
    exam_predictions: pl.DataFrame,
    exam_labels: pl.DataFrame,
    boxes: pl.DataFrame,
    filepaths: pl.DataFrame,
    model: pl.DataFrame,
    store: ObjectStore,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    """Test-split metrics of one model version in two units, exams and views.

    The newest model version among the exam predictions is evaluated (predictions of older
    versions are left out with a warning: re-materialize their partitions).  Its exam
    probabilities are evaluated as served when it is the model this run trained, whose
    temperature was fitted on this validation split; another version (a champion that was
    kept) gets a residual temperature fitted here.  View scores get their own temperature.
    Exams (malignant: a Cancer label on any view) overall and per vendor and breast density
    (BI-RADS A-D of the denser breast, ``unknown`` when the DICOM states none); views on their
    own scores per view (CC/MLO) and laterality (L/R), a view being malignant when its breast has
    a cancer (a cancer box on it or, in a study without cancer boxes, a Cancer label on its views).
    """
    model_row = model.row(0, named=True)
    version = newest_version(exam_predictions) if not exam_predictions.is_empty() else model_row["model_version"]
    stale = exam_predictions.filter(pl.col("model_version") != version)
    if not stale.is_empty():
        context.log.warning(f"{stale.height} exam prediction(s) of model version(s) {sorted(stale['model_version'].unique())} "
                            f"left out, version {version} is evaluated: re-materialize predictions for their partitions")  # fmt: skip
        exam_predictions = exam_predictions.filter(pl.col("model_version") == version)  # view_truth joins views on it
    scored = exam_truth(exam_predictions, exam_labels, filepaths) if not exam_predictions.is_empty() else pl.DataFrame()
    if scored.is_empty():
        raise dg.Failure("no scored exam has a label: materialize predictions and exam_labels first")
    val, test = scored.filter(pl.col("split") == "val"), scored.filter(pl.col("split") == "test")
    trained_here = version == model_row["model_version"]
    temperature = 1.0 if trained_here else fitted_temperature(val)
    report = evaluate_split(test, temperature, config)
    views = view_truth(predictions, exam_predictions, exam_labels, boxes)
    view_val, view_test = views.filter(pl.col("split") == "val"), views.filter(pl.col("split") == "test")
    view_temperature = fitted_temperature(view_val)
    view_report = evaluate_split(view_test, view_temperature, config, groups=VIEW_GROUPS, unit="view")
    val_labels = val["cancer"].to_numpy()
    points = operating_points(calibrated(val, temperature), val_labels, target_specificity=config.target_specificity) if val["cancer"].n_unique() == 2 else {}
    client = mlflow.client()
    run_id = model_row["mlflow_run_id"] if trained_here else client.get_model_version(model_row["model_name"], version).run_id
    registered_temperature = client.get_run(run_id).data.metrics.get("temperature")
    uris: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if report is not None:
            test_raw, test_cal = test["prob_malignant"].to_numpy(), calibrated(test, temperature)
            labels, patients = test["cancer"].to_numpy(), test["PatientID"].to_numpy()
            plot_roc(test_cal, labels, folder / "roc.png", patient_ids=patients, seed=config.seed)
            plot_pr(test_cal, labels, folder / "pr.png")
            plot_reliability(test_raw, labels, folder / "reliability.png", calibrated=test_cal)
            card = model_card(
                report, model_name=model_row["model_name"], version=version,
                config={"model_uri": f"models:/{model_row['model_name']}/{version}", "temperature": registered_temperature},
                data={"exams (test)": len(test), "cancers (test)": int(labels.sum()), "exams (val)": len(val),
                      "views (test)": len(view_test)},
                calibration={"registered temperature": registered_temperature, "residual exam temperature": temperature,
                             "view temperature": view_temperature, "fitted on": "validation split",
                             "method": f"maximum likelihood, log-normal prior on T (sd of log T {TEMPERATURE_PRIOR_SD})"},
                operating_points=points, view_report=view_report,
            )  # fmt: skip
            (folder / "model_card.md").write_text(card)
        payload = {
            "task": "malignant (Cancer) vs rest, exam level",
            "model_version": version,
            "registered_temperature": registered_temperature,
            "temperature": temperature,
            "test": report.to_dict() if report is not None else None,
            "view_temperature": view_temperature,
            "test_views": view_report.to_dict() if view_report is not None else None,
            "view_truth": "a view is malignant when its breast has a cancer box, or, in a study without cancer boxes, a Cancer label",
            "operating_points": points,
            "exams": {split: int((scored["split"] == split).sum()) for split in ("train", "val", "test")},
        }
        (folder / "evaluation.json").write_text(json.dumps(payload, indent=2, sort_keys=True, default=float))
        for path in sorted(folder.iterdir()):
            uris[path.name] = store.put_file(f"reports/{path.name}", path)
        record_triage(client, model_row["model_name"], version, points, temperature)
        for path in sorted(folder.iterdir()):
            client.log_artifact(run_id, str(path), artifact_path="evaluation")
        logged = {prefix: r for prefix, r in (("test", report), ("test_view", view_report)) if r is not None}
        for name, value in {k: v for prefix, r in logged.items() for k, v in report_metrics(r, prefix).items()}.items():
            client.log_metric(run_id, name, value)
    overall = report.overall.metrics if report is not None else {}
    auc = overall.get("roc_auc")
    context.log.info(f"version {version}: test ROC-AUC {auc.value if auc else 'n/a'}, residual temperature {temperature:.3f}")
    return dg.MaterializeResult(
        metadata={
            **audit_metadata(context),
            "test_auc": auc.value if auc else "n/a",
            "test_auc_ci": dg.MetadataValue.json([auc.lower, auc.upper] if auc else None),
            "test_ece": overall["ece"].value if "ece" in overall else "n/a",
            "temperature": temperature,
            "model_version": version,
            "left_out_exam_predictions": stale.height,
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
