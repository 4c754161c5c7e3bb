"""The sensor that notices new studies at the DICOM source and asks for their partitions."""

import hashlib

import dagster as dg

from dbt_assets.ingestion import scan_source
from resources.object_store import ObjectStore
from resources.pseudonymizer import Pseudonymizer
from resources.sources_base import DicomSource


@dg.sensor(job_name="per_study_job", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED)
def new_studies_sensor(
    context: dg.SensorEvaluationContext,
    dicom_source: dg.ResourceParam[DicomSource],
    store: ObjectStore,
    pseudonymizer: Pseudonymizer,
):
    """Scan the source (headers of new items only) and request one run per touched study date."""
    added = scan_source(dicom_source, store, pseudonymizer, dataset_root=getattr(dicom_source, "root", None))
    if added.is_empty():
        return dg.SkipReason("no new or changed DICOM at the source")
    for partition, group in added.group_by("partition", maintain_order=True):
        digest = hashlib.sha256("|".join(sorted(group["uri"].to_list() + group["version"].to_list())).encode()).hexdigest()
        yield dg.RunRequest(run_key=f"{partition[0]}:{digest[:16]}", partition_key=partition[0])
