"""``cross_validation_report``: patient-level k-fold cross-validation of the configured model.

Not part of the default runs (``make demo``): run ``cv_job`` or select the asset.  The
development patients (``train`` and ``val`` splits; ``test`` stays untouched) are cut into
``folds`` patient-level folds stratified by each patient's worst class
(:func:`ml.splits.patient_folds`).  Each round holds one fold out, splits the other patients
into train/val (:func:`ml.splits.fold_splits`), trains exactly as the ``model`` asset does
(:func:`dbt_assets.assets.model.fit_classifier` with the same ``TrainingConfig``), fits a
temperature on that round's validation exams and scores the held-out exams.  The per-fold
metrics are aggregated as a mean with a t-interval (:func:`ml.evaluation.evaluate_folds`) and
the pooled out-of-fold scores get patient-level bootstrap CIs.  JSON and a per-fold ROC plot go
to ``reports/cross_validation.json`` and ``reports/cross_validation_roc.png``; MLflow gets a
parent run with one nested run per fold.  Nothing is registered.
"""

import json
import tempfile
from pathlib import Path

import dagster as dg
import polars as pl

from dbt_assets.assets.model import (
    TrainingConfig,
    calibrate_on_validation,
    fit_classifier,
    localize,
    split_tables,
)
from dbt_assets.audit import audit_metadata
from dbt_assets.k8s import GPU_STEP_TAGS
from dbt_assets.settings import git_sha
from resources.mlflow_resource import MlflowResource
from resources.object_store import ObjectStore

REPORT_JSON = "reports/cross_validation.json"
REPORT_PNG = "reports/cross_validation_roc.png"


class CrossValidationConfig(dg.Config):
    """Number of folds, the validation share inside each round, and the ``model`` asset's training settings."""

    folds: int = 5
    val_fraction: float = 0.2
    training: TrainingConfig = TrainingConfig()


def development_labels(preprocessed: pl.DataFrame, exam_labels: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    """Label rows of the ``train``/``val`` studies that have preprocessed tensors."""
    development = splits.filter(pl.col("split").is_in(["train", "val"]))["StudyUID"].implode()
    tensors = preprocessed["StudyUID"].implode()
    return exam_labels.filter(pl.col("StudyUID").is_in(development) & pl.col("StudyUID").is_in(tensors))


def run_fold(config: CrossValidationConfig, manifest: pl.DataFrame, labels: pl.DataFrame, plan: pl.DataFrame,
             workdir: Path, *, client, log) -> tuple[pl.DataFrame, dict]:  # fmt: skip
    """Train on ``plan``'s train split, calibrate on its val split, score its test (held-out) exams."""
    from ml.inference import predict_exams
    from ml.training import load_checkpoint

    result = fit_classifier(config.training, manifest, labels, plan, workdir, client=client, log=log)
    best = load_checkpoint(result.best_auc_path)
    val_m, val_l = split_tables(manifest, labels, plan, "val")
    _, temperature = calibrate_on_validation(best, val_m, val_l, n_boot=config.training.n_boot, seed=config.training.seed, log=log)
    test_m, _ = split_tables(manifest, labels, plan, "test")
    _, exams = predict_exams(best, test_m, temperature=temperature)
    counts = {f"n_{s}": int(plan.filter(pl.col("split") == s)["StudyUID"].n_unique()) for s in ("train", "val", "test")}
    return exams, {**counts, "temperature": temperature, "best_epoch": result.best_epoch, "epochs_run": len(result.history)}


def held_out_metrics(held_out: pl.DataFrame, fold: int) -> dict:
    """Metrics of one fold's held-out exams (ranking metrics ``None`` when they hold one class)."""
    from ml.evaluation import EvaluationError, compute_metrics

    try:
        return compute_metrics(held_out["prob_malignant"].to_numpy(), held_out["cancer"].to_numpy())
    except EvaluationError as error:
        raise dg.Failure(f"fold {fold}: held-out exams cannot be evaluated ({error})") from error


@dg.asset(group_name="reports", op_tags=GPU_STEP_TAGS, pool="gpu", description=__doc__)
def cross_validation_report(
    context: dg.AssetExecutionContext,
    config: CrossValidationConfig,
    preprocessed: pl.DataFrame,
    exam_labels: pl.DataFrame,
    splits: pl.DataFrame,
    store: ObjectStore,
    mlflow: MlflowResource,
) -> dg.MaterializeResult:
    from ml.evaluation import aggregate_folds, evaluate_scores, plot_fold_rocs
    from ml.splits import SplitError, fold_splits, patient_folds

    seed = config.training.seed
    labels = development_labels(preprocessed, exam_labels, splits)
    try:
        folds = patient_folds(labels, config.folds, seed=seed)
    except SplitError as error:
        raise dg.Failure(f"cannot cut {config.folds} patient-level folds: {error}") from error
    truth = labels.group_by("StudyUID").agg(pl.col("Cancer").max().alias("cancer"), pl.col("PatientID").first())
    client = mlflow.configure()
    tags = {"dagster_run_id": context.run.run_id, "git_sha": git_sha(), "cross_validation": "true"}
    rounds, scored = [], []
    with tempfile.TemporaryDirectory(prefix="tomosight-cv-") as tmp, mlflow.start_run(run_name=f"cv {context.run.run_id}", tags=tags) as parent:  # fmt: skip
        folder = Path(tmp)
        client.log_params({"folds": config.folds, "val_fraction": config.val_fraction, "patients": folds["PatientID"].n_unique(),
                           "exams": folds.height, "model_name": config.training.model_name})  # fmt: skip
        manifest = localize(store, preprocessed.filter(pl.col("StudyUID").is_in(labels["StudyUID"].implode())), folder / "tensors")
        for fold in range(config.folds):
            plan = fold_splits(labels, folds, fold, val_fraction=config.val_fraction, seed=seed)
            with client.start_run(run_name=f"fold {fold}", nested=True, tags={**tags, "cv_fold": str(fold)}) as run:
                exams, record = run_fold(config, manifest, labels, plan, folder / f"fold_{fold}", client=client, log=context.log)
                held_out = exams.join(truth, on="StudyUID", how="inner").sort("StudyUID")
                metrics = held_out_metrics(held_out, fold)
                client.log_metrics({"temperature": record["temperature"], **{f"test_{k}": v for k, v in metrics.items() if v is not None}})
            scored.append(held_out.with_columns(fold=pl.lit(fold)))
            rounds.append({"fold": fold, "mlflow_run_id": run.info.run_id, "n_test_malignant": int(held_out["cancer"].sum()),
                           "metrics": metrics, **record})  # fmt: skip
            context.log.info(f"fold {fold}: {record['n_test']} held-out exams, ROC-AUC {metrics['roc_auc']}")
        aggregate = aggregate_folds([r["metrics"] for r in rounds])
        pooled_scores = pl.concat(scored)
        pooled = None
        if pooled_scores["cancer"].n_unique() == 2:
            pooled = evaluate_scores(pooled_scores["prob_malignant"].to_numpy(), pooled_scores["cancer"].to_numpy(),
                                     pooled_scores["PatientID"].to_numpy(), n_boot=config.training.n_boot, seed=seed)  # fmt: skip
        payload = {
            "task": "malignant (Cancer) vs rest, exam level, patient-level k-fold cross-validation",
            "folds": config.folds, "val_fraction": config.val_fraction, "seed": seed, "training": config.training.model_dump(),
            "patients": folds["PatientID"].n_unique(), "exams": folds.height, "rounds": rounds, "aggregate": aggregate,
            "interval": "95% t-interval of the fold mean", "pooled": pooled.to_dict() if pooled is not None else None,
            "mlflow_parent_run_id": parent.info.run_id, "fold_of_study": dict(folds.select("StudyUID", "fold").iter_rows()),
        }  # fmt: skip
        (folder / Path(REPORT_JSON).name).write_text(json.dumps(payload, indent=2, sort_keys=True, default=float))
        auc = aggregate.get("roc_auc", {})
        ci = (auc["lower"], auc["upper"]) if auc.get("lower") is not None else None
        pairs = [(part["prob_malignant"].to_numpy(), part["cancer"].to_numpy()) for part in scored]
        plot_fold_rocs(pairs, folder / Path(REPORT_PNG).name, mean_auc=auc.get("mean"), auc_ci=ci)
        uris = {}
        for key in (REPORT_JSON, REPORT_PNG):
            uris[key] = store.put_file(key, folder / Path(key).name)
            client.log_artifact(str(folder / Path(key).name), artifact_path="cross_validation")
        client.log_metrics({f"cv_{name}_{stat}": entry[stat] for name, entry in aggregate.items()
                            for stat in ("mean", "lower", "upper") if entry[stat] is not None})  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            **audit_metadata(context),
            "folds": config.folds,
            "cv_auc_mean": auc["mean"] if auc.get("mean") is not None else "n/a",
            "cv_auc_ci": dg.MetadataValue.json(list(ci) if ci else None),
            "mlflow_parent_run_id": parent.info.run_id,
            "report": dg.MetadataValue.path(uris[REPORT_JSON]),
            "roc_plot": dg.MetadataValue.path(uris[REPORT_PNG]),
        }
    )
