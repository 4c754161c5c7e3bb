"""``model``, then ``predictions`` and ``exam_predictions`` per study date.

The model is a timm-backbone DBT classifier trained on the ``train`` split of all
partitions (early stopping on validation AUC), calibrated by temperature scaling on
``val``, logged to MLflow as a pyfunc and registered as ``challenger``; a blocking check
promotes it to ``champion`` unless its validation AUC is worse than the champion's
beyond its confidence interval.  Scoring uses the ``champion``, and every prediction row
names the model version that produced it.
"""

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import numpy as np
import polars as pl

from dbt_assets.audit import audit_metadata, frame_hash
from dbt_assets.checks import contract_check
from dbt_assets.k8s import GPU_STEP_TAGS
from dbt_assets.partitions import study_date
from dbt_assets.registry_tags import record_preprocessing
from dbt_assets.settings import git_sha
from resources.mlflow_resource import MlflowResource
from resources.model_registry import Validation
from resources.object_store import ObjectStore
from schemas import ExamPredictions, Predictions

if TYPE_CHECKING:
    from ml.training import TrainResult

REGISTERED_MODEL = "tomosight-dbt"


class TrainingConfig(dg.Config):
    """Model and training settings, editable in the launchpad (defaults: the CPU demo)."""

    model_name: str = "dbt_cpu_mip"
    pretrained: str | None = None  # a local weights file; never downloaded
    slice_pooling: str = "mean"
    epochs: int = 40
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    loss: str = "bce"
    sampler: str = "shuffle"  # "weighted" balances classes, which (like pos_weight != 1) shifts calibration
    pos_weight: float | None = 1.0  # BCE weight of positives; None: negatives / positives of the train split
    early_stopping_patience: int = 15
    precise_bn_batches: int = 16  # BatchNorm statistics re-averaged over this many train batches before validation
    device: str = "auto"
    seed: int = 0
    n_boot: int = 500
    registered_model_name: str = REGISTERED_MODEL


def localize(store: ObjectStore, manifest: pl.DataFrame, cache: Path) -> pl.DataFrame:
    """Manifest whose ``tensor_uri`` are local files (downloaded from S3 into ``cache`` when needed)."""
    if store.is_local or manifest.is_empty():
        return manifest
    local = [str(store.download(uri, cache / uri.split("/", 3)[-1])) for uri in manifest["tensor_uri"]]
    return manifest.with_columns(tensor_uri=pl.Series(local))


def split_tables(preprocessed: pl.DataFrame, exam_labels: pl.DataFrame, splits: pl.DataFrame, name: str):
    """Manifest and labels of one split."""
    studies = splits.filter(pl.col("split") == name)["StudyUID"].implode()
    return preprocessed.filter(pl.col("StudyUID").is_in(studies)), exam_labels.filter(pl.col("StudyUID").is_in(studies))


def calibrate_on_validation(best, val_m: pl.DataFrame, val_l: pl.DataFrame, *, n_boot: int, seed: int, log) -> tuple[Validation | None, float]:  # fmt: skip
    """Temperature fitted on ``best``'s validation exam scores and their AUC with a patient-bootstrap CI.

    A one-class validation split gives ``(None, 1.0)``: no scaling, no AUC (a warning on ``log``).
    """
    from ml.evaluation import evaluate_scores, fit_temperature, logit
    from ml.inference import predict_exams

    _, val_exams = predict_exams(best, val_m)
    truth = val_l.group_by("StudyUID").agg(pl.col("Cancer").max(), pl.col("PatientID").first())
    scored = val_exams.join(truth, on="StudyUID").sort("StudyUID") if not val_exams.is_empty() else truth.clear()
    if scored["Cancer"].n_unique() != 2:
        log.warning("the validation split holds one class: no temperature scaling, no validation AUC")
        return None, 1.0
    probs = scored["prob_malignant"].to_numpy().clip(1e-6, 1 - 1e-6)
    temperature = fit_temperature(logit(probs), scored["Cancer"].to_numpy())
    auc = evaluate_scores(
        probs, scored["Cancer"].to_numpy(), scored["PatientID"].to_numpy(), n_boot=n_boot, seed=seed
    ).overall.metrics["roc_auc"]
    validation = Validation(auc.value, auc.lower if auc.lower is not None else auc.value,
                            auc.upper if auc.upper is not None else auc.value)  # fmt: skip
    return validation, temperature


def fit_classifier(config: TrainingConfig, manifest: pl.DataFrame, exam_labels: pl.DataFrame, splits: pl.DataFrame,
                   checkpoint_dir: Path, *, client, log) -> "TrainResult":  # fmt: skip
    """Train ``config``'s model on the ``train`` split of ``splits`` (early stopping on ``val``).

    The one training code path of the ``model`` asset and of the cross-validation folds:
    ``manifest`` holds local tensors; params and per-epoch metrics go to the active MLflow run
    of ``client`` (the ``mlflow`` module), progress to ``log``.
    """
    from ml.models import create_model, load_local_weights
    from ml.training import ExamDataset, TrainConfig, default_augment, seed_everything, train

    geometry = manifest.select("slice_strategy", "n_slices", "height", "width").unique().rows()
    if len(geometry) != 1:
        raise dg.Failure(f"preprocessed tensors mix input geometries {geometry[:4]}: re-run `preprocessed` with one config")
    strategy, n_slices, height, width = geometry[0]
    (train_m, train_l), (val_m, val_l) = (split_tables(manifest, exam_labels, splits, s) for s in ("train", "val"))
    seed_everything(config.seed)
    train_ds = ExamDataset(train_m, train_l, n_slices=n_slices, augment=default_augment(), seed=config.seed)
    val_ds = ExamDataset(val_m, val_l, n_slices=n_slices, seed=config.seed)
    net = create_model(
        config.model_name, input_size=(height, width), n_slices=n_slices, slice_strategy=strategy,
        slice_pooling=config.slice_pooling if n_slices > 1 else "none",
    )  # fmt: skip
    if config.pretrained:
        load_local_weights(net, config.pretrained)
    train_config = TrainConfig(
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
        warmup_epochs=config.warmup_epochs, loss=config.loss, sampler=config.sampler,
        pos_weight="auto" if config.pos_weight is None else config.pos_weight, precise_bn_batches=config.precise_bn_batches,
        early_stopping_patience=config.early_stopping_patience, seed=config.seed, device=config.device,
        checkpoint_dir=str(checkpoint_dir), progress=False,
    )  # fmt: skip
    client.log_params({**train_config.to_dict(), "model_name": config.model_name, "slice_strategy": strategy,
                       "n_slices": n_slices, "input_size": f"{height}x{width}", "train_exams": len(train_ds),
                       "val_exams": len(val_ds), "dataset_hash": frame_hash(manifest.select("StudyUID", "View", "tensor_uri"))})  # fmt: skip

    def on_epoch(epoch: int, metrics: dict) -> None:
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)}
        client.log_metrics(numeric, step=epoch)
        log.info(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in numeric.items()))

    return train(net, train_ds, val_ds, train_config, on_epoch=on_epoch)


def register_challenger(mlflow: MlflowResource, best, val_m: pl.DataFrame, val_l: pl.DataFrame, *,
                        registered_model_name: str, n_boot: int, seed: int, log) -> tuple[str, Validation | None, float]:  # fmt: skip
    """Calibrate ``best`` on the validation split, log it into the active MLflow run, register it as challenger.

    Returns ``(version, Validation or None, temperature)``; a one-class validation split gets
    no temperature scaling and no validation AUC (a warning on ``log``).
    """
    from resources.model_registry import mark_challenger
    from resources.pyfunc_model import log_classifier

    validation, temperature = calibrate_on_validation(best, val_m, val_l, n_boot=n_boot, seed=seed, log=log)
    if validation is not None:
        mlflow.configure().log_metrics({"val_auc_best": validation.auc, "temperature": temperature})
    info = log_classifier(best, temperature=temperature, registered_model_name=registered_model_name,
                          extra={"git_sha": git_sha(), "val_auc": validation.auc if validation else None})  # fmt: skip
    version = str(info.registered_model_version)
    mark_challenger(mlflow.client(), registered_model_name, version, validation)
    return version, validation, temperature


@dg.asset(group_name="model", op_tags=GPU_STEP_TAGS, pool="gpu", description=__doc__)
def model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    preprocessed: pl.DataFrame,
    exam_labels: pl.DataFrame,
    splits: pl.DataFrame,
    store: ObjectStore,
    mlflow: MlflowResource,
) -> pl.DataFrame:
    from ml.training import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="tomosight-train-") as tmp:
        manifest = localize(store, preprocessed, Path(tmp) / "tensors")
        val_m, val_l = split_tables(manifest, exam_labels, splits, "val")
        client = mlflow.configure()
        tags = {"dagster_run_id": context.run.run_id, "git_sha": git_sha()}
        with mlflow.start_run(run_name=context.run.run_id, tags=tags) as run:
            result = fit_classifier(config, manifest, exam_labels, splits, Path(tmp) / "checkpoints", client=client, log=context.log)
            version, validation, temperature = register_challenger(
                mlflow, load_checkpoint(result.best_auc_path), val_m, val_l, registered_model_name=config.registered_model_name,
                n_boot=config.n_boot, seed=config.seed, log=context.log,
            )  # fmt: skip
            record_preprocessing(context, mlflow.client(), config.registered_model_name, version, preprocessed)
    context.add_output_metadata(
        {
            **audit_metadata(context),
            "model_version": version,
            "mlflow_run_id": run.info.run_id,
            "val_auc": validation.auc if validation else "n/a",
            "val_auc_ci": dg.MetadataValue.json([validation.ci_low, validation.ci_high] if validation else None),
            "temperature": temperature,
            "best_epoch": result.best_epoch,
            "epochs_run": len(result.history),
        }
    )
    return pl.DataFrame(
        {
            "model_name": [config.registered_model_name],
            "model_version": [version],
            "mlflow_run_id": [run.info.run_id],
            "model_uri": [f"models:/{config.registered_model_name}/{version}"],
            "val_auc": [validation.auc if validation else None],
            "temperature": [temperature],
        }
    )


@dg.asset_check(asset=model, blocking=True, description="Promote the challenger to champion unless it is worse (with its CI).")
def champion_gate(model: pl.DataFrame, mlflow: MlflowResource) -> dg.AssetCheckResult:
    from resources.model_registry import gate_challenger

    row = model.row(0, named=True)
    decision = gate_challenger(mlflow.client(), row["model_name"], row["model_version"])
    return dg.AssetCheckResult(
        passed=decision.promoted,
        severity=dg.AssetCheckSeverity.WARN,  # a rejected challenger keeps the old champion serving
        description=decision.reason,
        metadata={"decision": dg.MetadataValue.json(decision.to_dict())},
    )


@dg.multi_asset(
    outs={
        "predictions": dg.AssetOut(description="Per-view calibrated probability of malignancy, with model version."),
        "exam_predictions": dg.AssetOut(description="Per-exam probability (most suspicious breast), with model version and split."),
    },
    partitions_def=study_date,
    group_name="predictions",
    op_tags=GPU_STEP_TAGS,
    deps=["model"],
)
def score(
    context: dg.AssetExecutionContext,
    preprocessed: pl.DataFrame,
    filepaths: pl.DataFrame,
    splits: pl.DataFrame,
    store: ObjectStore,
    mlflow: MlflowResource,
):
    from ml.inference import predict_exams
    from resources.model_registry import CHAMPION, current_champion
    from resources.pyfunc_model import load_classifier

    client = mlflow.client()
    champion = current_champion(client, REGISTERED_MODEL)
    if champion is None:
        raise dg.Failure(f"no `{CHAMPION}` model in the registry: materialize `model` first")
    version = champion[0]
    run_id = client.get_model_version(REGISTERED_MODEL, version).run_id
    view_schema = {"StudyUID": pl.String, "View": pl.String, "prob_malignant": pl.Float64, "model_version": pl.String, "PatientID": pl.String}
    exam_schema = {"StudyUID": pl.String, "prob_malignant": pl.Float64, "model_version": pl.String, "PatientID": pl.String, "split": pl.String}
    if preprocessed.is_empty():
        views, exams = pl.DataFrame(schema=view_schema), pl.DataFrame(schema=exam_schema)
    else:
        net, temperature = load_classifier(f"models:/{REGISTERED_MODEL}@{CHAMPION}")
        with tempfile.TemporaryDirectory(prefix="tomosight-score-") as tmp:
            view_probs, exam_probs = predict_exams(net, localize(store, preprocessed, Path(tmp)), temperature=temperature)
        patients = filepaths.group_by("StudyUID").agg(pl.col("PatientID").first())
        split_of = splits.select("StudyUID", "split") if not splits.is_empty() else pl.DataFrame(schema={"StudyUID": pl.String, "split": pl.String})
        views = view_probs.join(patients, on="StudyUID", how="left").with_columns(model_version=pl.lit(version)).select(list(view_schema)).sort("StudyUID", "View")
        exams = (
            exam_probs.join(patients, on="StudyUID", how="left").join(split_of, on="StudyUID", how="left")
            .with_columns(model_version=pl.lit(version)).select(list(exam_schema)).sort("StudyUID")
        )  # fmt: skip
    lineage = {"model_version": version, "mlflow_run_id": run_id}
    yield dg.Output(views, output_name="predictions", metadata={**audit_metadata(context, Predictions, dg.AssetKey("predictions")), **lineage})
    yield dg.Output(exams, output_name="exam_predictions", metadata={**audit_metadata(context, ExamPredictions, dg.AssetKey("exam_predictions")), **lineage})


predictions_contract = contract_check("predictions", Predictions, study_date)
exam_predictions_contract = contract_check("exam_predictions", ExamPredictions, study_date)
