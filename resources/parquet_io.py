"""Parquet IO manager over the object store: one file per asset partition.

``tables/<asset>/<partition>.parquet`` for partitioned assets and ``tables/<asset>/<asset>.parquet``
otherwise (every table is a folder, so one glob reads it), in the local folder or S3 the :class:`~resources.object_store.ObjectStore`
points at.  Files carry no timestamp, so re-running a partition rewrites identical bytes
(and the same ``dataset_hash``).  DuckDB views read the same files.
"""

from __future__ import annotations

import hashlib
import io

import dagster as dg
import polars as pl

from resources.object_store import ObjectStore


TABLES_PREFIX = "tables"


def parquet_bytes(df: pl.DataFrame, metadata: dict[str, str] | None = None) -> bytes:
    """Serialise ``df`` deterministically (same frame, same bytes)."""
    buffer = io.BytesIO()
    df.write_parquet(buffer, compression="zstd", statistics=True, metadata=metadata or None)
    return buffer.getvalue()


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores polars DataFrames as Parquet in the object store, partition by partition."""

    store: ObjectStore
    prefix: str = TABLES_PREFIX

    def table_key(self, asset_key: dg.AssetKey, partition_key: str | None = None) -> str:
        """Object-store key of one asset (partition)."""
        base = f"{self.prefix}/{'/'.join(asset_key.path)}"
        return f"{base}/{partition_key if partition_key is not None else asset_key.path[-1]}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        if obj is None:
            return
        if not isinstance(obj, pl.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a polars DataFrame, got {type(obj)}")
        partition = context.asset_partition_key if context.has_asset_partitions else None
        data = parquet_bytes(obj, {"tomosight.asset": context.asset_key.to_user_string()})
        uri = self.store.put_bytes(self.table_key(context.asset_key, partition), data)
        context.add_output_metadata(
            {
                "rows": dg.MetadataValue.int(len(obj)),
                "dataset_hash": dg.MetadataValue.text(hashlib.sha256(data).hexdigest()),
                "uri": dg.MetadataValue.path(uri),
                "columns": dg.MetadataValue.json(list(obj.columns)),
            }
        )

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        asset_key = context.asset_key
        if context.has_asset_partitions:
            present = set(self.store.list(f"{self.prefix}/{'/'.join(asset_key.path)}/"))
            keys = [k for p in context.asset_partition_keys if (k := self.table_key(asset_key, p)) in present]
        else:
            key = self.table_key(asset_key)
            keys = [key] if self.store.exists(key) else []
        frames = [self.store.read_parquet(k) for k in keys]
        if not frames:
            return pl.DataFrame()
        return pl.concat(frames, how="diagonal_relaxed")
