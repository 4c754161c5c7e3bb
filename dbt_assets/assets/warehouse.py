"""``warehouse``: DuckDB views over the Parquet assets, rebuilt atomically for analysts.

The views read the same Parquet files the IO manager writes (an S3 store is mirrored
locally first); the database file is built aside and swapped in, so analysts'
read-only connections never block a run.
"""

import dagster as dg

from dbt_assets.audit import audit_metadata
from resources.object_store import ObjectStore
from resources.parquet_io import TABLES_PREFIX
from resources.warehouse import Warehouse
from schemas import BoxPredictions

VIEWS = (
    "filepaths", "quarantine", "exam_labels", "boxes", "splits", "predictions", "exam_predictions", "box_predictions",
    "unmatched_annotations",
)
QUARANTINE_COLUMNS = {"source_uri": "VARCHAR", "stage": "VARCHAR", "reason": "VARCHAR", "detail": "VARCHAR"}
UNMATCHED_COLUMNS = {c: "VARCHAR" for c in ("PatientID", "StudyUID", "View", "table", "reason")}


@dg.asset(group_name="reports", deps=list(VIEWS), description=__doc__)
def warehouse(context: dg.AssetExecutionContext, warehouse_db: Warehouse, store: ObjectStore) -> dg.MaterializeResult:
    prefixes = {name: f"{TABLES_PREFIX}/{name}" for name in VIEWS}
    views = warehouse_db.refresh_from_store(
        store, prefixes, schemas={"box_predictions": BoxPredictions, "quarantine": QUARANTINE_COLUMNS, "unmatched_annotations": UNMATCHED_COLUMNS},
    )
    files = {name: len(info.files) for name, info in views.items()}
    context.log.info(f"warehouse views refreshed: {files}")
    return dg.MaterializeResult(
        metadata={**audit_metadata(context), "path": dg.MetadataValue.path(warehouse_db.path), "files_per_view": dg.MetadataValue.json(files)}
    )
