"""Parquet files that carry their contract: name, version and creation time in key/value metadata.

Files are written atomically (a hidden temp file in the target folder, then
``os.replace``), so readers never see a half-written file. Local paths only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandera.polars as pa
import polars as pl

from schemas.errors import SchemaMismatchError
from schemas.registry import major, schema_name, schema_version
from schemas.validate import validate

SCHEMA_KEY = "tomosight.schema"
VERSION_KEY = "tomosight.schema_version"
CREATED_KEY = "tomosight.created_at"
RESERVED_KEYS = (SCHEMA_KEY, VERSION_KEY, CREATED_KEY)


@dataclass(frozen=True)
class ParquetInfo:
    """Contract metadata read back from a Parquet file."""

    schema: str
    schema_version: str
    created_at: datetime
    extra: dict[str, str] = field(default_factory=dict)


def write_parquet(
    df: pl.DataFrame,
    path: str | os.PathLike[str],
    model: type[pa.DataFrameModel],
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Validate ``df`` against ``model`` and write it atomically to ``path``.

    The file's key/value metadata records the contract name, its version and
    the UTC creation time (ISO-8601), plus any ``metadata`` given (e.g. a run
    id). Parent folders are created. Raises :class:`ContractError` before
    touching the disk when the frame breaks the contract.
    """
    extra = dict(metadata or {})
    clashes = sorted(set(extra) & set(RESERVED_KEYS))
    if clashes:
        raise ValueError(f"metadata keys {clashes} are reserved for the contract")
    bad = sorted(k for k, v in extra.items() if not isinstance(k, str) or not isinstance(v, str))
    if bad:
        raise TypeError(f"metadata keys and values must be strings; offending keys: {bad}")
    valid = validate(df, model)
    kv = {
        **extra,
        SCHEMA_KEY: schema_name(model),
        VERSION_KEY: schema_version(model),
        CREATED_KEY: datetime.now(timezone.utc).isoformat(timespec="microseconds"),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        valid.write_parquet(tmp, metadata=kv)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def read_parquet_info(path: str | os.PathLike[str]) -> ParquetInfo:
    """Read only the contract metadata of a Parquet file written by :func:`write_parquet`."""
    kv = pl.read_parquet_metadata(Path(path))
    missing = [k for k in RESERVED_KEYS if k not in kv]
    if missing:
        message = f"{path}: no tomosight contract metadata (missing {missing})"
        raise SchemaMismatchError(message, "unknown")
    try:
        created = datetime.fromisoformat(kv[CREATED_KEY])
        major(kv[VERSION_KEY])
    except ValueError as exc:
        message = f"{path}: malformed contract metadata: {exc}"
        raise SchemaMismatchError(message, kv[SCHEMA_KEY]) from exc
    extra = {k: v for k, v in kv.items() if k not in RESERVED_KEYS and not k.startswith("ARROW:")}
    return ParquetInfo(kv[SCHEMA_KEY], kv[VERSION_KEY], created, extra)


def read_parquet(
    path: str | os.PathLike[str],
    model: type[pa.DataFrameModel] | None = None,
    *,
    validate_rows: bool = True,
) -> tuple[pl.DataFrame, ParquetInfo]:
    """Read a contract Parquet file and its metadata.

    With ``model``, the file must have been written under the same contract
    with the same MAJOR version (else :class:`SchemaMismatchError`), and the
    rows are validated unless ``validate_rows`` is False.
    """
    info = read_parquet_info(path)
    if model is not None:
        check_compatible(info, model, path)
    df = pl.read_parquet(Path(path))
    if model is not None and validate_rows:
        df = validate(df, model)
    return df, info


def check_compatible(
    info: ParquetInfo, model: type[pa.DataFrameModel], path: str | os.PathLike[str]
) -> None:
    """Raise :class:`SchemaMismatchError` unless ``info`` is readable as ``model``."""
    want, version = schema_name(model), schema_version(model)
    if info.schema != want:
        raise SchemaMismatchError(
            f"{path}: written as contract {info.schema!r}, read as {want!r}", want
        )
    if major(info.schema_version) != major(version):
        raise SchemaMismatchError(
            f"{path}: contract {want} version {info.schema_version} is incompatible with "
            f"this reader's version {version} (MAJOR differs)",
            want,
        )
