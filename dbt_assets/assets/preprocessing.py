"""``preprocessed`` (per study date) and ``splits`` (all partitions).

Each view becomes a memory-mappable ``.npy`` tensor in the processed store, decoded
frame by frame (only the frames the slice strategy needs) in several processes; the
manifest records the strategy, shape and tensor URI.  Splits are patient-level.
"""

import tempfile
from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import polars as pl

from dbt_assets.audit import audit_metadata
from dbt_assets.checks import contract_check
from dbt_assets.partitions import study_date
from ml.preprocess import PreprocessConfig, preprocess_many
from ml.splits import PatientLeakError, assert_patient_disjoint, patient_splits
from resources.compute import ComputeResource
from resources.object_store import ObjectStore
from schemas import Preprocessed, Splits

VIEWS_PER_WORKER = 8
"""Fewer views than this per decoder process are decoded in this process: a study date holds a
handful of views, and starting a spawned worker (its imports) costs more than decoding them."""

MANIFEST_SCHEMA = {
    "StudyUID": pl.String, "View": pl.String, "slice_strategy": pl.String, "height": pl.Int64,
    "width": pl.Int64, "n_slices": pl.Int64, "tensor_uri": pl.String,
}  # fmt: skip


class PreprocessingConfig(dg.Config):
    """How views become model input; recorded with every manifest (fingerprint)."""

    strategy: str = "mip"
    height: int = 128
    width: int = 104
    n_slices: int = 8
    slab: int = 5
    breast_mask: bool = False
    decoder: str = "auto"  # frame decoder: auto (GPU when usable), cpu or gpu; same pixels either way

    def to_library(self) -> PreprocessConfig:
        return PreprocessConfig(
            strategy=self.strategy, height=self.height, width=self.width,
            n_slices=self.n_slices, slab=self.slab, breast_mask=self.breast_mask,
        )  # fmt: skip


@dg.asset(partitions_def=study_date, group_name="preprocessing", description=__doc__)
def preprocessed(
    context: dg.AssetExecutionContext,
    config: PreprocessingConfig,
    filepaths: pl.DataFrame,
    store: ObjectStore,
    compute: ComputeResource,
) -> pl.DataFrame:
    library_config = config.to_library()
    fingerprint = library_config.fingerprint()
    rows = filepaths.select("StudyUID", "View", "dicom_uri").rows(named=True) if len(filepaths) else []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        items = []
        for row in rows:
            source = stack.enter_context(store.local_path(row["dicom_uri"]))
            items.append((source, row["View"], Path(tmp) / f"{row['StudyUID']}_{row['View']}.npy"))
        workers = min(compute.workers, max(1, len(items) // VIEWS_PER_WORKER))
        results = preprocess_many(items, library_config, workers=workers, decoder=config.decoder)
        manifest, failed = [], []
        for row, result in zip(rows, results):
            if result["status"] != "ok":
                failed.append(f"{row['StudyUID']}/{row['View']}: {result['reason']}")
                continue
            key = f"processed/{fingerprint}/{row['StudyUID']}/{row['View']}.npy"
            manifest.append(
                {
                    "StudyUID": row["StudyUID"], "View": row["View"], "slice_strategy": library_config.strategy,
                    "height": result["height"], "width": result["width"], "n_slices": result["n_slices"],
                    "tensor_uri": store.put_file(key, result["tensor_path"]),
                }  # fmt: skip
            )
    if failed:
        context.log.warning(f"{len(failed)} view(s) could not be preprocessed: {failed[:10]}")
    context.add_output_metadata(
        {
            **audit_metadata(context, Preprocessed),
            "preprocess_fingerprint": fingerprint,
            "preprocess_config": dg.MetadataValue.json(library_config.to_dict()),
            "failed_views": len(failed),
        }
    )
    return pl.DataFrame(manifest, schema=MANIFEST_SCHEMA).sort("StudyUID", "View")


preprocessed_contract = contract_check(preprocessed, Preprocessed, study_date)


class SplitsConfig(dg.Config):
    """Patient-level split fractions, number of folds and seed."""

    train: float = 0.6
    val: float = 0.2
    test: float = 0.2
    k_folds: int = 5
    seed: int = 0


@dg.asset(group_name="preprocessing", description="Patient-level stratified train/val/test split and k folds.")
def splits(context: dg.AssetExecutionContext, config: SplitsConfig, exam_labels: pl.DataFrame) -> pl.DataFrame:
    if exam_labels.is_empty():
        raise dg.Failure("no exam labels in any partition: nothing to split")
    result = patient_splits(
        exam_labels, fractions=(config.train, config.val, config.test), k_folds=config.k_folds, seed=config.seed
    )
    counts = result.group_by("split").len().sort("split").rows()
    context.add_output_metadata({**audit_metadata(context, Splits), "studies_per_split": dg.MetadataValue.json(dict(counts))})
    return result


splits_contract = contract_check(splits, Splits)


@dg.asset_check(asset=splits, blocking=True, description="No patient appears in two splits.")
def no_patient_in_two_splits(splits: pl.DataFrame) -> dg.AssetCheckResult:
    try:
        assert_patient_disjoint(splits)
    except PatientLeakError as exc:
        return dg.AssetCheckResult(passed=False, description=str(exc))
    return dg.AssetCheckResult(passed=True, metadata={"patients": splits["PatientID"].n_unique()})
