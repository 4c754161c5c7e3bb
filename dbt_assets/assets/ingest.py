"""``filepaths`` and ``quarantine``: every source file of a study date ingested or quarantined.

Accepted files are QC'd (SOP class, geometry, one frame decodes), de-identified
(keyed pseudonyms, per-patient date shift) and stored under a content-addressed key
in the raw store.  The accounting check proves ingested + quarantined = seen.
"""

import warnings

import dagster as dg

from dbt_assets.audit import audit_metadata
from dbt_assets.checks import contract_check
from dbt_assets.ingestion import ingest_partition, scan_source
from dbt_assets.partitions import study_date
from resources.object_store import ObjectStore
from resources.pseudonymizer import Pseudonymizer
from resources.sources_base import DicomSource
from schemas import FilePaths, Quarantine

with warnings.catch_warnings():  # partitioned checks are a Dagster preview feature, used on purpose
    warnings.simplefilter("ignore", dg.PreviewWarning)
    ACCOUNTING = dg.AssetCheckSpec(
        "every_input_accounted_for", asset="filepaths", blocking=True, partitions_def=study_date,
        description="ingested + quarantined = seen, for this study date",
    )  # fmt: skip


@dg.multi_asset(
    outs={
        "filepaths": dg.AssetOut(description="One row per ingested, de-identified volume."),
        "quarantine": dg.AssetOut(description="Source files refused, with the stage and reason."),
    },
    partitions_def=study_date,
    group_name="ingestion",
    check_specs=[ACCOUNTING],
)
def ingest(
    context: dg.AssetExecutionContext,
    dicom_source: dg.ResourceParam[DicomSource],
    store: ObjectStore,
    pseudonymizer: Pseudonymizer,
):
    root = getattr(dicom_source, "root", None)
    listing = dicom_source.list_items()  # one listing for the scan and the ingestion
    added = scan_source(dicom_source, store, pseudonymizer, dataset_root=root, listing=listing)
    if len(added):
        context.log.info(f"inventory: {len(added)} new or changed source item(s)")
    filepaths, quarantine, seen = ingest_partition(
        context.partition_key, dicom_source, store, pseudonymizer, dataset_root=root, listing=listing
    )
    context.log.info(f"{context.partition_key}: {len(filepaths)} ingested, {len(quarantine)} quarantined, {seen} seen")
    reasons = dict(quarantine.group_by("reason").len().rows()) if len(quarantine) else {}
    yield dg.Output(filepaths, output_name="filepaths", metadata={**audit_metadata(context, FilePaths, dg.AssetKey("filepaths")), "seen": seen})
    yield dg.Output(quarantine, output_name="quarantine", metadata={"reasons": dg.MetadataValue.json(reasons), "seen": seen})
    yield dg.AssetCheckResult(
        check_name=ACCOUNTING.name,
        asset_key="filepaths",
        passed=len(filepaths) + len(quarantine) == seen,
        metadata={"seen": seen, "ingested": len(filepaths), "quarantined": len(quarantine)},
    )


filepaths_contract = contract_check("filepaths", FilePaths, study_date)
quarantine_contract = contract_check("quarantine", Quarantine, study_date)
