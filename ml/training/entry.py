"""One entry point for ``tomosight train`` and ``torchrun -m ml.training`` (same arguments).

``--config`` is a JSON file or inline JSON object::

    {"model": "dbt_tiny" | {ModelConfig fields}, "train": {TrainConfig fields},
     "augment": true, "horizontal_flip": false}

The model's input configuration (input_size, n_slices, slice_strategy) is taken from the
manifest, so it always matches the tensors it is trained on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ml.training.errors import ConfigError

CONFIG_KEYS = ("model", "train", "augment", "horizontal_flip")
# Default model by slices per view: a 2D model for one slice, attention MIL for several.
DEFAULT_MODELS = {True: "dbt_tiny", False: "dbt_tiny_mil"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the training arguments (cheap: imports nothing heavy)."""
    parser.add_argument("--manifest", required=True, help="preprocessed manifest Parquet")
    parser.add_argument("--labels", required=True, help="exam_labels Parquet")
    parser.add_argument("--splits", required=True, help="splits Parquet (StudyUID, split)")
    parser.add_argument("--config", help="JSON file or inline JSON object (see ml.training.entry)")
    parser.add_argument("--out", required=True, help="output folder: checkpoints, history.json")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_config(text: str | None) -> dict[str, Any]:
    """The run configuration from a JSON file path or an inline JSON object."""
    if not text:
        return {}
    raw = text if text.lstrip().startswith("{") else Path(text).read_text(encoding="utf-8")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ConfigError(f"--config is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise ConfigError("--config must be a JSON object")
    from ml.training.errors import look_up_option

    for key in config:
        look_up_option("config key", key, CONFIG_KEYS)
    return config


def run_training(
    manifest_path: str | Path,
    labels_path: str | Path,
    splits_path: str | Path,
    config: dict[str, Any],
    out_dir: str | Path,
    *,
    progress: bool = True,
):  # -> TrainResult (imported lazily)
    """Build datasets, model and TrainConfig from the tables and ``config``; train; write."""
    import polars as pl

    from ml.atomic import write_text_atomic
    from ml.models import create_model
    from ml.training.augment import default_augment
    from ml.training.config import TrainConfig
    from ml.training.dataset import ExamDataset
    from ml.training.distributed import current_context
    from ml.training.loop import seed_everything, train

    manifest = pl.read_parquet(manifest_path)
    labels = pl.read_parquet(labels_path)
    splits = pl.read_parquet(splits_path)
    out = Path(out_dir)
    train_config = TrainConfig.from_dict(
        {"checkpoint_dir": str(out), "progress": progress, **config.get("train", {})}
    )
    geometry = manifest.select("slice_strategy", "n_slices", "height", "width").unique().rows()
    if len(geometry) != 1:
        raise ConfigError(f"the manifest mixes input geometries: {geometry[:4]}")
    strategy, n_slices, height, width = geometry[0]
    model_spec = config.get("model", DEFAULT_MODELS[n_slices == 1])

    def subset(name: str) -> ExamDataset:
        studies = splits.filter(pl.col("split") == name)["StudyUID"].to_list()
        augment = None
        if name == "train" and config.get("augment", True):
            augment = default_augment(bool(config.get("horizontal_flip", False)))
        return ExamDataset(
            manifest.filter(pl.col("StudyUID").is_in(studies)),
            labels.filter(pl.col("StudyUID").is_in(studies)),
            n_slices=n_slices,
            augment=augment,
            seed=train_config.seed,
        )

    train_ds, val_ds = subset("train"), subset("val")
    seed_everything(train_config.seed)
    model = create_model(
        model_spec,
        input_size=(height, width),
        n_slices=n_slices,
        slice_strategy=strategy,
    )
    result = train(model, train_ds, val_ds, train_config)
    if current_context().is_main:
        summary = {
            "best_epoch": result.best_epoch,
            "best_auc": result.best_auc,
            "best_brier": result.best_brier,
            "best_auc_path": str(result.best_auc_path),
            "best_calibration_path": str(result.best_calibration_path),
            "stopped_early": result.stopped_early,
            "n_train": len(train_ds),
            "n_val": len(val_ds),
            "history": result.history,
        }
        write_text_atomic(out / "history.json", json.dumps(summary, indent=2) + "\n")
    return result


def run_from_args(args: argparse.Namespace) -> int:
    """Run under ``torchrun`` or plainly; print the best epoch on rank 0."""
    from ml.training.distributed import init_distributed, shutdown_distributed

    config = parse_config(args.config)
    context = init_distributed(config.get("train", {}).get("device", "auto"))
    try:
        result = run_training(
            args.manifest, args.labels, args.splits, config, args.out,
            progress=not args.no_progress,
        )
    finally:
        shutdown_distributed()
    if context.is_main:
        print(
            f"best epoch {result.best_epoch + 1}: val AUC {result.best_auc:.4f}, "
            f"best Brier {result.best_brier:.4f}; checkpoints in {args.out}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ml.training`` (also under ``torchrun``)."""
    parser = argparse.ArgumentParser(prog="python -m ml.training", description=__doc__)
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
