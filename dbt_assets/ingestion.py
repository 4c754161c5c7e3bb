"""Ingestion logic shared by the sensor and the ``filepaths``/``quarantine`` assets.

Two stages, both idempotent:

1. :func:`scan_source` lists the source and reads the header of every item it has
   not seen in this version, deciding its partition (the de-identified, i.e.
   shifted, study date) or rejecting it.  The result is the *inventory*, kept in the
   private part of the object store; it holds source URIs and pseudonyms only.
2. :func:`ingest_partition` takes the inventory rows of one partition: QC (one frame
   must decode), de-identification, content-addressed storage, and one ``filepaths``
   row per accepted file; everything else becomes a ``quarantine`` row with a reason.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ml.catalog import find_duke_csvs, resolve_volume_path
from ml.density import breast_composition
from ml.deid import deidentify_file, pseudonym_uid
from ml.dicomio import DicomError, DbtHeader, read_header
from ml.qc import qc_file
from resources.object_store import ObjectStore
from resources.pseudonymizer import Pseudonymizer
from resources.sources_base import DicomSource, SourceItem

INVENTORY_KEY = "private/inventory.parquet"
INVENTORY_SCHEMA = {
    "uri": pl.String, "version": pl.String, "size": pl.Int64, "partition": pl.String, "status": pl.String,
    "reason": pl.String, "detail": pl.String, "PatientID": pl.String, "StudyUID": pl.String, "View": pl.String,
}  # fmt: skip
QUARANTINE_SCHEMA = {"source_uri": pl.String, "stage": pl.String, "reason": pl.String, "detail": pl.String}
FILEPATHS_SCHEMA = {
    "PatientID": pl.String, "StudyUID": pl.String, "View": pl.String, "dicom_uri": pl.String, "StudyDate": pl.Date,
    "vendor": pl.String, "rows": pl.Int64, "columns": pl.Int64, "frames": pl.Int64, "sha256": pl.String,
    "SOPInstanceUID": pl.String, "density": pl.String,
}  # fmt: skip


@dataclass(frozen=True)
class OriginalKeys:
    """A file's original patient/study keys and view, from a Duke CSV or from its tags."""

    patient_id: str | None
    study_id: str | None
    view: str | None


def duke_keys(root: str | Path | None) -> dict[str, OriginalKeys]:
    """Map each volume listed in a Duke file-paths CSV under ``root`` to its CSV keys."""
    if root is None or not Path(root).is_dir():
        return {}
    try:
        csvs = find_duke_csvs(root)
    except FileNotFoundError:
        return {}
    mapping: dict[str, OriginalKeys] = {}
    for row in pl.read_csv(csvs.filepaths, infer_schema=False).iter_rows(named=True):
        try:
            path = resolve_volume_path(root, row["descriptive_path"], row.get("classic_path"))
        except FileNotFoundError:
            continue
        mapping[str(path.resolve())] = OriginalKeys(row["PatientID"], row["StudyUID"], row["View"])
    return mapping


def keys_from_header(header: DbtHeader) -> OriginalKeys:
    """Keys of a file that no CSV describes: PatientID, StudyInstanceUID, laterality + view."""
    view = None
    if header.laterality and header.view:
        view = f"{header.laterality}{header.view}".lower()
    return OriginalKeys(header.patient_id, header.study_instance_uid, view)


def _inventory_row(item: SourceItem, **fields: object) -> dict[str, object]:
    row: dict[str, object] = {k: None for k in INVENTORY_SCHEMA}
    row.update(uri=item.uri, version=item.version, size=item.size)
    row.update(fields)
    return row


def classify_item(
    item: SourceItem, path: Path, known: OriginalKeys | None, pseudonymizer: Pseudonymizer, today: dt.date
) -> dict[str, object]:
    """Inventory row for one fetched item: its partition and pseudonyms, or why it is rejected."""
    try:
        header = read_header(path)
    except DicomError as exc:
        return _inventory_row(item, partition=today.isoformat(), status="rejected", reason=exc.reason, detail=exc.detail)
    keys = known or keys_from_header(header)
    problem = None
    if not keys.patient_id:
        problem = ("no_patient_id", "no PatientID in the file and no CSV row for it")
    elif not keys.study_id:
        problem = ("no_study_id", "no StudyInstanceUID in the file and no CSV row for it")
    elif not keys.view:
        problem = ("unknown_view", "neither a CSV view nor laterality + ViewCodeSequence in the file")
    elif header.study_date is None:
        problem = ("no_study_date", "StudyDate is missing or not a valid DA value")
    if problem:
        return _inventory_row(item, partition=today.isoformat(), status="rejected", reason=problem[0], detail=problem[1])
    shifted = pseudonymizer.shifted_date(keys.patient_id, header.study_date)  # type: ignore[arg-type]
    return _inventory_row(
        item,
        partition=shifted.isoformat(),
        status="pending",
        PatientID=pseudonymizer.patient(keys.patient_id),  # type: ignore[arg-type]
        StudyUID=pseudonymizer.study(keys.study_id),  # type: ignore[arg-type]
        View=keys.view,
    )


def read_inventory(store: ObjectStore) -> pl.DataFrame:
    """The inventory so far (empty when nothing was scanned yet)."""
    if not store.exists(INVENTORY_KEY):
        return pl.DataFrame(schema=INVENTORY_SCHEMA)
    return store.read_parquet(INVENTORY_KEY)


def scan_source(
    source: DicomSource,
    store: ObjectStore,
    pseudonymizer: Pseudonymizer,
    *,
    dataset_root: str | Path | None = None,
    today: dt.date | None = None,
    listing: list[SourceItem] | None = None,
) -> pl.DataFrame:
    """Add every new or changed source item to the inventory; return the rows added.

    ``listing`` reuses a ``source.list_items()`` the caller already made.
    """
    today = today or dt.datetime.now(dt.UTC).date()
    inventory = read_inventory(store)
    seen = set(zip(inventory["uri"].to_list(), inventory["version"].to_list()))
    items = source.list_items() if listing is None else listing
    new_items = [item for item in items if (item.uri, item.version) not in seen]
    if not new_items:
        return pl.DataFrame(schema=INVENTORY_SCHEMA)
    known = duke_keys(dataset_root)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tomosight-scan-") as tmp:
        for item in new_items:
            path = source.fetch(item, tmp)
            rows.append(classify_item(item, path, known.get(str(Path(path).resolve())), pseudonymizer, today))
            if not Path(item.uri).exists():  # downloaded copy: drop it now
                Path(path).unlink(missing_ok=True)
    added = pl.DataFrame(rows, schema=INVENTORY_SCHEMA)
    replaced = set(added["uri"].to_list())
    updated = pl.concat([inventory.filter(~pl.col("uri").is_in(list(replaced))), added]).sort("uri")
    store.write_parquet(INVENTORY_KEY, updated)
    return added


def _quarantine(uri: str, stage: str, reason: str, detail: str | None) -> dict[str, object]:
    return {"source_uri": uri, "stage": stage, "reason": reason, "detail": detail}


def ingest_partition(
    partition: str,
    source: DicomSource,
    store: ObjectStore,
    pseudonymizer: Pseudonymizer,
    *,
    dataset_root: str | Path | None = None,
    listing: list[SourceItem] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Ingest the inventory rows of ``partition``: ``(filepaths, quarantine, seen)``."""
    inventory = read_inventory(store).filter(pl.col("partition") == partition)
    items = {row["uri"]: row for row in inventory.iter_rows(named=True)}
    listed = {item.uri: item for item in (source.list_items() if listing is None else listing)}
    known = duke_keys(dataset_root)
    accepted: list[dict[str, object]] = []
    quarantined: list[dict[str, object]] = []
    seen_sop: set[str] = set()
    seen_views: set[tuple[str, str]] = set()
    with tempfile.TemporaryDirectory(prefix="tomosight-ingest-") as tmp:
        for uri, row in sorted(items.items()):
            if row["status"] == "rejected":
                quarantined.append(_quarantine(uri, "scan", row["reason"], row["detail"]))
                continue
            item = listed.get(uri)
            if item is None:
                quarantined.append(_quarantine(uri, "fetch", "gone_from_source", "listed earlier, missing now"))
                continue
            path = source.fetch(item, tmp)
            qc = qc_file(path)
            if not qc.passed:
                quarantined.append(_quarantine(uri, "qc", qc.reason or "qc_failed", qc.detail))
                continue
            keys = known.get(str(Path(path).resolve())) or keys_from_header(qc.header)
            sop = pseudonym_uid(pseudonymizer.key, qc.header.sop_instance_uid or uri)
            if sop in seen_sop:
                quarantined.append(_quarantine(uri, "dedup", "duplicate_sop_instance", "SOP Instance UID seen earlier in this partition"))
                continue
            if (row["StudyUID"], row["View"]) in seen_views:
                quarantined.append(_quarantine(uri, "dedup", "duplicate_view", f"a second volume for view {row['View']} of the study"))
                continue
            deid_path = Path(tmp) / "deid.dcm"
            deidentify_file(path, deid_path, pseudonymizer.key, patient_id=keys.patient_id, study_id=keys.study_id)
            key, digest = store.put_content_addressed(deid_path, "raw", "dcm")
            seen_sop.add(sop)
            seen_views.add((row["StudyUID"], row["View"]))
            header = qc.header
            accepted.append(
                {
                    "PatientID": row["PatientID"], "StudyUID": row["StudyUID"], "View": row["View"],
                    "dicom_uri": store.uri(key), "StudyDate": dt.date.fromisoformat(partition),
                    "vendor": header.manufacturer, "rows": header.rows, "columns": header.columns,
                    "frames": header.frames, "sha256": digest, "SOPInstanceUID": sop,
                    "density": breast_composition(header.dataset),  # read before de-identification empties it
                }  # fmt: skip
            )
            if not Path(item.uri).exists():
                Path(path).unlink(missing_ok=True)
    filepaths = pl.DataFrame(accepted, schema=FILEPATHS_SCHEMA).sort("StudyUID", "View")
    quarantine = pl.DataFrame(quarantined, schema=QUARANTINE_SCHEMA).sort("source_uri")
    return filepaths, quarantine, len(items)
