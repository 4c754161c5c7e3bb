"""``hpo_job``: an Optuna study over slice strategy, input size, learning rate and fusion.

``hpo_study`` creates (or resumes) the study in RDB storage and opens the parent MLflow
run; it fans out ``n_trials`` ``hpo_trial`` steps (one Kubernetes pod with a GPU each under
``k8s_job_executor``), each of which asks the study for a trial, trains it in a nested MLflow
run (params, per-epoch metrics, best checkpoint) and tells the study its validation AUC, or
that the median pruner stopped it.  ``hpo_best`` records the study's best trial on the
parent run and in ``reports/hpo/<study>.json``, and with ``register_best`` registers that
trial's checkpoint as the ``challenger``, calibrated like the ``model`` asset's.

Trial data: the catalogued volumes (``tables/filepaths``) of the train and val splits,
preprocessed with the trial's strategy and size into ``processed/<fingerprint>/`` of the
object store (skipped when already there), labels from ``tables/exam_labels``.
"""

import json
import re
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from dbt_assets.assets.model import localize, register_challenger, split_tables
from dbt_assets.k8s import GPU_STEP_TAGS
from dbt_assets.settings import git_sha
from ml.preprocess import PreprocessConfig, preprocess_many
from resources.compute import ComputeResource
from resources.mlflow_resource import MlflowResource
from resources.object_store import ObjectStore

HPO_IO_MANAGER = "hpo_io_manager"
CHECKPOINT_ARTIFACT = "checkpoint"


class OptunaStorage(dg.ConfigurableResource):
    """Where Optuna keeps its studies: SQLite in the home folder locally, Postgres in production."""

    url: str

    def load(self, study_name: str, *, seed: int, startup_trials: int = 3, warmup_epochs: int = 1, create: bool = False):
        """The study with a seeded TPE sampler and a median pruner (neither is stored, so every process builds them)."""
        import optuna

        engine = {"connect_args": {"timeout": 60}} if self.url.startswith("sqlite") else {}
        storage = optuna.storages.RDBStorage(self.url, engine_kwargs=engine)
        options = {
            "study_name": study_name,
            "storage": storage,
            "sampler": optuna.samplers.TPESampler(seed=seed),
            "pruner": optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs),
        }
        if create:
            return optuna.create_study(direction="maximize", load_if_exists=True, **options)
        return optuna.load_study(**options)


class JsonIOManager(dg.ConfigurableIOManager):
    """Small JSON step outputs in the object store, so steps in separate pods can read them."""

    store: ObjectStore
    prefix: str = "runs"

    def _key(self, context: dg.OutputContext) -> str:
        parts = [re.sub(r"[^A-Za-z0-9_.-]", "_", str(p)) for p in context.get_identifier()]
        return f"{self.prefix}/{'/'.join(parts)}.json"

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        self.store.put_bytes(self._key(context), json.dumps(obj, sort_keys=True).encode())

    def load_input(self, context: dg.InputContext) -> Any:
        return json.loads(self.store.get_bytes(self._key(context.upstream_output)))


class HpoConfig(dg.Config):
    """The study, its search space and how each trial trains (defaults: a GPU search)."""

    study_name: str = "tomosight-hpo"
    n_trials: int = 8
    epochs: int = 10
    seed: int = 0
    model_name: str = "dbt_resnet10t_2d"
    batch_size: int = 8
    weight_decay: float = 1e-4
    device: str = "auto"
    strategies: list[str] = ["central", "slab_mip", "mip"]
    heights: list[int] = [128, 256, 512]
    lr_min: float = 1e-5
    lr_max: float = 3e-3
    fusions: list[str] = ["max", "concat", "attention"]
    pruner_startup_trials: int = 3
    pruner_warmup_epochs: int = 1


class HpoBestConfig(dg.Config):
    """Whether to register the best trial's model as ``challenger``."""

    register_best: bool = False
    registered_model_name: str = "tomosight-dbt"
    n_boot: int = 500


def read_table(store: ObjectStore, name: str) -> pl.DataFrame:
    """Every partition of the table ``tables/<name>/``; fails when it was never materialized."""
    keys = [k for k in store.list(f"tables/{name}/") if k.endswith(".parquet")]
    if not keys:
        raise dg.Failure(f"no `{name}` table in the object store: materialize it first")
    return pl.concat([store.read_parquet(k) for k in keys], how="diagonal_relaxed")


def preprocess_cached(store: ObjectStore, filepaths: pl.DataFrame, config: PreprocessConfig, *, workers: int, log: Any) -> pl.DataFrame:
    """Manifest of ``filepaths`` preprocessed with ``config`` under ``processed/<fingerprint>/`` (existing tensors kept)."""
    fingerprint = config.fingerprint()
    rows, todo = [], []
    for row in filepaths.select("StudyUID", "View", "dicom_uri").unique().sort("StudyUID", "View").rows(named=True):
        key = f"processed/{fingerprint}/{row['StudyUID']}/{row['View']}.npy"
        (rows if store.exists(key) else todo).append((row, key))
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="tomosight-hpo-") as tmp:
        items = [
            (stack.enter_context(store.local_path(r["dicom_uri"])), r["View"], Path(tmp) / f"{i}.npy")
            for i, (r, _) in enumerate(todo)
        ]
        for (row, key), result in zip(todo, preprocess_many(items, config, workers=workers) if items else []):
            if result["status"] != "ok":
                log.warning(f"{row['StudyUID']}/{row['View']} not preprocessed: {result['reason']}")
                continue
            store.put_file(key, result["tensor_path"])
            rows.append((row, key))
    return pl.DataFrame(
        [{"StudyUID": r["StudyUID"], "View": r["View"], "slice_strategy": config.strategy, "height": config.height,
          "width": config.width, "n_slices": config.channels, "tensor_uri": store.uri(key)} for r, key in rows],
        schema={"StudyUID": pl.String, "View": pl.String, "slice_strategy": pl.String, "height": pl.Int64,
                "width": pl.Int64, "n_slices": pl.Int64, "tensor_uri": pl.String},
    ).sort("StudyUID", "View")  # fmt: skip


class TrialData:
    """Train/val tables of the cohort, turned into datasets for one input geometry."""

    def __init__(self, store: ObjectStore, cache: Path, *, workers: int, seed: int, log: Any) -> None:
        splits = read_table(store, "splits").filter(pl.col("split").is_in(["train", "val"]))
        self.splits = splits
        self.labels = read_table(store, "exam_labels")
        self.filepaths = read_table(store, "filepaths").filter(pl.col("StudyUID").is_in(splits["StudyUID"].implode()))
        self.store, self.cache, self.workers, self.seed, self.log = store, cache, workers, seed, log
        self._manifests: dict[str, pl.DataFrame] = {}

    def tables(self, strategy: str, height: int, width: int, name: str) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Local manifest and labels of split ``name`` for this geometry."""
        config = PreprocessConfig(strategy=strategy, height=height, width=width)
        key = config.fingerprint()
        if key not in self._manifests:
            manifest = preprocess_cached(self.store, self.filepaths, config, workers=self.workers, log=self.log)
            self._manifests[key] = localize(self.store, manifest, self.cache / key)
        return split_tables(self._manifests[key], self.labels, self.splits, name)

    def __call__(self, strategy: str, height: int, width: int):
        """``(train_ds, val_ds)``: the ``DataProvider`` of :func:`ml.training.search.run_trial`."""
        from ml.training import ExamDataset, default_augment

        train_m, train_l = self.tables(strategy, height, width, "train")
        val_m, val_l = self.tables(strategy, height, width, "val")
        return (
            ExamDataset(train_m, train_l, n_slices=1, augment=default_augment(), seed=self.seed),
            ExamDataset(val_m, val_l, n_slices=1, seed=self.seed),
        )


def search_space(config: HpoConfig):
    """The library search space of ``config`` (a bad value fails the step with its reason)."""
    from ml.training.errors import ConfigError
    from ml.training.search import SearchSpace

    try:
        return SearchSpace(tuple(config.strategies), tuple(config.heights), (config.lr_min, config.lr_max), tuple(config.fusions))
    except ConfigError as error:
        raise dg.Failure(f"invalid search space: {error}") from error


@dg.op(out=dg.DynamicOut(dict, io_manager_key=HPO_IO_MANAGER), description="Create or resume the study; one output per trial.")
def hpo_study(context: dg.OpExecutionContext, config: HpoConfig, hpo_storage: OptunaStorage, mlflow: MlflowResource):
    if config.n_trials < 1 or config.epochs < 1:
        raise dg.Failure("n_trials and epochs must be >= 1")
    search_space(config)
    study = hpo_storage.load(config.study_name, seed=config.seed, startup_trials=config.pruner_startup_trials,
                             warmup_epochs=config.pruner_warmup_epochs, create=True)  # fmt: skip
    if study.direction.name != "MAXIMIZE":
        raise dg.Failure(f"study {config.study_name!r} exists and does not maximize: use another study_name")
    earlier = len(study.trials)
    client = mlflow.configure()
    tags = {"dagster_run_id": context.run.run_id, "git_sha": git_sha(), "optuna_study": config.study_name}
    with client.start_run(run_name=f"hpo {config.study_name}", tags=tags) as parent:
        client.log_params({**config.model_dump(), "earlier_trials": earlier})
    context.log.info(f"study {config.study_name!r}: {earlier} earlier trial(s); MLflow parent run {parent.info.run_id}")
    for index in range(config.n_trials):
        # A distinct sampler seed per trial: the steps run in separate processes, and equal
        # seeds would draw equal random start-up parameters.
        plan = {**config.model_dump(), "parent_run_id": parent.info.run_id, "sampler_seed": config.seed + earlier + index}
        yield dg.DynamicOutput(plan, mapping_key=f"trial_{index}")


def _train_config(plan: dict, checkpoint_dir: Path):
    """Training options shared by every trial of ``plan``."""
    from ml.training import TrainConfig

    return TrainConfig(  # the trial's own lr replaces lr_max
        epochs=plan["epochs"], batch_size=plan["batch_size"], lr=plan["lr_max"], weight_decay=plan["weight_decay"],
        sampler="weighted", seed=plan["seed"], device=plan["device"], checkpoint_dir=str(checkpoint_dir), progress=False,
    )  # fmt: skip


@dg.op(out=dg.Out(dict, io_manager_key=HPO_IO_MANAGER), tags=GPU_STEP_TAGS, pool="gpu",
       description="Ask the study for a trial, train it in a nested MLflow run, tell the study the result.")  # fmt: skip
def hpo_trial(
    context: dg.OpExecutionContext, plan: dict, hpo_storage: OptunaStorage, mlflow: MlflowResource,
    store: ObjectStore, compute: ComputeResource,
) -> dict:  # fmt: skip
    import numpy as np
    import optuna
    from optuna.trial import TrialState

    from ml.training.search import SearchError, run_trial, suggest, trial_reporter

    study = hpo_storage.load(plan["study_name"], seed=plan["sampler_seed"], startup_trials=plan["pruner_startup_trials"],
                             warmup_epochs=plan["pruner_warmup_epochs"])  # fmt: skip
    trial = study.ask()
    space = search_space(HpoConfig(**{k: v for k, v in plan.items() if k in HpoConfig.model_fields}))
    params = suggest(trial, space)
    client = mlflow.configure()
    tags = {"dagster_run_id": context.run.run_id, "optuna_study": plan["study_name"], "optuna_trial": str(trial.number)}
    state, value = TrialState.FAIL, None
    with tempfile.TemporaryDirectory(prefix="tomosight-trial-") as tmp:
        base = _train_config(plan, Path(tmp) / "checkpoints")
        with client.start_run(run_name=f"trial {trial.number}", tags=tags, parent_run_id=plan["parent_run_id"], nested=True) as run:
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            client.log_params({**params, "model_name": plan["model_name"], "epochs": base.epochs, "batch_size": base.batch_size})

            def on_epoch(epoch: int, metrics: dict) -> None:
                client.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)}, step=epoch)

            try:
                data = TrialData(store, Path(tmp) / "tensors", workers=compute.workers, seed=plan["seed"], log=context.log)
                outcome = run_trial(params, data, base, report=trial_reporter(trial), model_name=plan["model_name"], on_epoch=on_epoch)
            except optuna.TrialPruned as pruned:
                state = TrialState.PRUNED
                context.log.info(f"trial {trial.number}: {pruned}")
            except SearchError as error:
                context.log.warning(f"trial {trial.number} failed: {error}")
            except Exception:
                study.tell(trial, state=TrialState.FAIL)
                client.set_tag("optuna_state", TrialState.FAIL.name)
                raise
            else:
                state, value = TrialState.COMPLETE, outcome.value
                client.log_metrics({"best_val_auc": outcome.value, "best_epoch": outcome.best_epoch})
                client.log_artifacts(str(outcome.checkpoint), artifact_path=CHECKPOINT_ARTIFACT)
            client.set_tag("optuna_state", state.name)
    study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    summary = {"number": trial.number, "state": state.name, "value": value, "params": params, "mlflow_run_id": run.info.run_id}
    context.add_output_metadata({"trial": dg.MetadataValue.json(summary)})
    return {**summary, "plan": plan}


@dg.op(out=dg.Out(dict, io_manager_key=HPO_IO_MANAGER),
       description="Record the study's best trial; optionally register its model as challenger.")  # fmt: skip
def hpo_best(
    context: dg.OpExecutionContext, config: HpoBestConfig, trials: list[dict], hpo_storage: OptunaStorage,
    mlflow: MlflowResource, store: ObjectStore, compute: ComputeResource,
) -> dict:  # fmt: skip
    from optuna.trial import TrialState

    from ml.training import load_checkpoint
    from ml.training.search import complete

    plan = trials[0]["plan"]
    study = hpo_storage.load(plan["study_name"], seed=plan["seed"])
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise dg.Failure(f"study {plan['study_name']!r} has no completed trial (pruned or failed: see the trial steps)")
    best = study.best_trial
    record = {
        "study_name": plan["study_name"], "best_trial": best.number, "best_val_auc": best.value,
        "best_params": complete(best.params), "best_mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
        "parent_run_id": plan["parent_run_id"], "dagster_run_id": context.run.run_id,
        "this_run_trials": [{k: v for k, v in t.items() if k != "plan"} for t in trials],
        "states": {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState},
    }  # fmt: skip
    client = mlflow.configure()
    with client.start_run(run_id=plan["parent_run_id"]):  # tags, not params: a re-executed step may find a new best
        client.log_metric("best_val_auc", best.value)
        client.set_tags({"best_trial": str(best.number), "best_mlflow_run_id": str(record["best_mlflow_run_id"]),
                         **{f"best_{k}": str(v) for k, v in record["best_params"].items()}})  # fmt: skip
    if config.register_best:
        with tempfile.TemporaryDirectory(prefix="tomosight-best-") as tmp:
            folder = client.artifacts.download_artifacts(
                run_id=record["best_mlflow_run_id"], artifact_path=CHECKPOINT_ARTIFACT, dst_path=tmp
            )
            params = record["best_params"]
            data = TrialData(store, Path(tmp) / "tensors", workers=compute.workers, seed=plan["seed"], log=context.log)
            val_m, val_l = data.tables(params["slice_strategy"], params["height"], params["width"], "val")
            with client.start_run(run_id=record["best_mlflow_run_id"]):
                version, validation, temperature = register_challenger(
                    mlflow, load_checkpoint(folder), val_m, val_l, registered_model_name=config.registered_model_name,
                    n_boot=config.n_boot, seed=plan["seed"], log=context.log,
                )  # fmt: skip
        record.update(model_version=version, temperature=temperature, val_auc_calibrated=validation.auc if validation else None)
    store.put_bytes(f"reports/hpo/{plan['study_name']}.json", json.dumps(record, indent=2, sort_keys=True).encode())
    context.add_output_metadata({"best": dg.MetadataValue.json(record)})
    return record


@dg.job(description="Optuna search: trials as parallel (GPU) steps, each a nested MLflow run; best trial recorded, optionally registered.")
def hpo_job() -> None:
    hpo_best(hpo_study().map(hpo_trial).collect())
