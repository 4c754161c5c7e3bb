"""Metadata an auditor needs on every materialization: code, schema and upstream versions."""

from __future__ import annotations

import hashlib

import dagster as dg
import polars as pl

from dbt_assets.settings import git_sha
from schemas import schema_name, schema_version


def upstream_versions(context: dg.AssetExecutionContext, key: dg.AssetKey | None = None) -> dict[str, str]:
    """``{upstream asset: dataset_hash}`` of the materializations this step read.

    Partitioned upstreams are looked up for the same partition when they share it,
    otherwise the latest materialization is used.
    """
    key = key or context.asset_key
    spec = context.assets_def.get_asset_spec(key)
    partition = context.partition_key if context.has_partition_key else None
    versions: dict[str, str] = {}
    for dep in spec.deps:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dep.asset_key,
                asset_partitions=[partition] if partition and _shares_partitions(context, dep.asset_key) else None,
            ),
            limit=1,
        ).records
        if records:
            meta = records[0].asset_materialization.metadata if records[0].asset_materialization else {}
            value = meta.get("dataset_hash")
            versions[dep.asset_key.to_user_string()] = str(value.value) if value is not None else "unknown"
        else:
            versions[dep.asset_key.to_user_string()] = "never materialized"
    return versions


def _shares_partitions(context: dg.AssetExecutionContext, key: dg.AssetKey) -> bool:
    try:
        upstream = context.repository_def.asset_graph.get(key).partitions_def
    except Exception:  # noqa: BLE001 - an external asset without a graph node
        return False
    return upstream is not None and upstream == context.assets_def.partitions_def


def audit_metadata(
    context: dg.AssetExecutionContext, model: type | None = None, key: dg.AssetKey | None = None
) -> dict[str, object]:
    """Code version, schema (name, version) and upstream data versions for one output."""
    metadata: dict[str, object] = {
        "code_version": dg.MetadataValue.text(git_sha()),
        "upstream_versions": dg.MetadataValue.json(upstream_versions(context, key)),
    }
    if model is not None:
        metadata["schema"] = dg.MetadataValue.text(schema_name(model))
        metadata["schema_version"] = dg.MetadataValue.text(schema_version(model))
    return metadata


def frame_hash(df: pl.DataFrame) -> str:
    """SHA-256 of a frame's CSV rendering: stable across runs and library versions."""
    return hashlib.sha256(df.write_csv().encode("utf-8")).hexdigest()
