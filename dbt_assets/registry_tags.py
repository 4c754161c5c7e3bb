"""Model-version tags that let the serving endpoint reproduce the batch path.

The ``model`` asset records the preprocessing its training tensors were made with (the
``preprocessed`` materialization whose fingerprint the tensor URIs carry); the
``evaluation_report`` records the triage thresholds of its operating points on the scale of the
served probability.  ``serving`` reads both when it loads a version.
"""

from __future__ import annotations

import json
import re

import dagster as dg
import polars as pl

from resources.model_registry import PREPROCESS_CONFIG_TAG, PREPROCESS_FINGERPRINT_TAG, TriageThresholds

_FINGERPRINT = re.compile(r"(?:^|/)processed/([0-9a-f]{16})/")
LOOKBACK = 200
"""``preprocessed`` materializations searched (newest first) for the config of a fingerprint."""


def tensor_fingerprints(manifest: pl.DataFrame) -> set[str]:
    """Preprocessing fingerprints in the ``tensor_uri`` s of a ``preprocessed`` manifest."""
    return {m.group(1) for uri in manifest["tensor_uri"].to_list() if (m := _FINGERPRINT.search(uri))}


def preprocess_tags(instance: dg.DagsterInstance, manifest: pl.DataFrame) -> dict[str, str]:
    """Tags naming the one preprocessing config of ``manifest``; empty when it is not exactly one."""
    found = tensor_fingerprints(manifest)
    if len(found) != 1:
        return {}
    fingerprint = found.pop()
    tags = {PREPROCESS_FINGERPRINT_TAG: fingerprint}
    records = instance.fetch_materializations(dg.AssetKey("preprocessed"), limit=LOOKBACK).records
    for record in records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        if "preprocess_fingerprint" in metadata and metadata["preprocess_fingerprint"].value == fingerprint:
            tags[PREPROCESS_CONFIG_TAG] = json.dumps(metadata["preprocess_config"].value, sort_keys=True)
            break
    return tags


def record_preprocessing(context: dg.AssetExecutionContext, client, name: str, version: str, manifest: pl.DataFrame) -> None:
    """Tag model ``version`` with the preprocessing of the tensors it was trained on."""
    for key, value in preprocess_tags(context.instance, manifest).items():
        client.set_model_version_tag(name, version, key, value)


def record_triage(client, name: str, version: str, points: dict, temperature: float) -> TriageThresholds | None:
    """Tag model ``version`` with the report's triage thresholds, moved onto the served probability scale."""
    thresholds = TriageThresholds.from_operating_points(points, temperature, f"evaluation_report of version {version}")
    if thresholds is not None:
        for key, value in thresholds.as_tags().items():
            client.set_model_version_tag(name, version, key, value)
    return thresholds
