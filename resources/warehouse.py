"""DuckDB warehouse resource: views over partitioned Parquet, rebuilt without blocking readers.

The pipeline never holds the database file open while analysts read it.
:meth:`Warehouse.refresh_views` builds a NEW DuckDB file next to the old one,
holding only views (``CREATE VIEW name AS SELECT * FROM read_parquet([...],
union_by_name=true)``) and a ``_meta`` table, closes it and moves it over the
old file with ``os.replace``. A reader that is connected keeps reading the old
file until it reconnects; a new reader sees either the old or the new file,
never a half-built one. Refreshes are serialised by a lock file, so two of
them cannot lose each other's views.

Readers connect read-only. In-process, use :meth:`Warehouse.connect`: it
attaches the file read-only into a private in-memory DuckDB, because
``duckdb.connect(path, read_only=True)`` shares one cached instance per path
in a process and would keep serving the old file to new connections while an
older connection to it is still open. Other processes may use
``duckdb.connect(path, read_only=True)`` as usual.

Views point at local files. For an S3 object store, :func:`mirror_from_store`
downloads new or changed Parquet objects (compared by ETag and size) into a
local cache, and the views read the cache; DuckDB's ``httpfs`` extension is
not available offline. A production image may instead install ``httpfs`` and
define the views over ``s3://`` globs directly.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pandera.polars as pa
import polars as pl

from resources.object_store import ObjectStore, check_prefix
from schemas import Boxes, ExamLabels, ExamPredictions, FilePaths, Predictions, Splits

WAREHOUSE_FILE = "warehouse.duckdb"
"""File name of the warehouse inside a tomosight home folder."""

META_TABLE = "_meta"

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
"""A view's data: one glob or file path, or a list of Parquet file paths."""

Schema = Mapping[str, str] | type[pa.DataFrameModel]
"""Columns of a view when it has no files: ``{column: duckdb type}`` or a pandera model."""

DEFAULT_SCHEMAS: dict[str, Schema] = {
    "filepaths": FilePaths,
    "exam_labels": ExamLabels,
    "boxes": Boxes,
    "splits": Splits,
    "predictions": Predictions,
    "exam_predictions": ExamPredictions,
}
"""Columns of the platform's views, used when a view has no files yet."""

_VIEW_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_DUCKDB_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_ ,()\[\]]*$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_MANIFEST = ".mirror-manifest.json"


class WarehouseError(Exception):
    """Base class of warehouse errors."""


class WarehouseNotFoundError(WarehouseError, FileNotFoundError):
    """No warehouse file yet: nothing has been refreshed."""


class ViewSourceError(WarehouseError, ValueError):
    """A view name, source or schema that cannot define a view."""


class QueryError(WarehouseError):
    """DuckDB rejected a query (syntax, unknown table, write on a read-only file...)."""


class LockTimeoutError(WarehouseError, TimeoutError):
    """Another refresh held the lock for too long."""


@dataclass(frozen=True)
class ViewInfo:
    """One view as defined by a refresh: its source, resolved files and columns."""

    name: str
    source: str | list[str]
    files: list[str]
    columns: dict[str, str]


@dataclass(frozen=True)
class MirrorResult:
    """Outcome of :func:`mirror_from_store`."""

    folder: Path
    files: list[Path]
    downloaded: int
    removed: int


class Warehouse(dg.ConfigurableResource):
    """A DuckDB file of views over Parquet files; read-only for everybody but refreshes."""

    path: str
    lock_timeout_s: float = 120.0

    def refresh_views(
        self,
        sources: Mapping[str, Source],
        schemas: Mapping[str, Schema] | None = None,
        *,
        keep_existing: bool = True,
    ) -> dict[str, ViewInfo]:
        """Rebuild the warehouse file with one view per entry of ``sources``.

        A source is a glob (resolved now; hidden files are skipped), a file
        path, or a list of Parquet files. A view with no files is created empty
        with columns from ``schemas[name]``, else from its previous definition
        (with ``keep_existing``), else from :data:`DEFAULT_SCHEMAS`.

        With ``keep_existing`` the views of the current file that ``sources``
        does not name are carried over, their globs re-resolved; without it the
        new file holds only ``sources`` (this also replaces a file that is not
        a readable warehouse). Returns every view of the new file.
        """
        for name in sources:
            check_view_name(name)
        target = self._file()
        target.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(target.with_name(f".{target.name}.lock"), self.lock_timeout_s):
            previous = _read_meta(target) if keep_existing and target.exists() else {}
            plan: dict[str, tuple[Source, bool]] = {
                name: (source, True) for name, source in sources.items()
            }
            for name, old in previous.items():
                plan.setdefault(name, (old.source, False))
            fallback = {name: old.columns for name, old in previous.items()}
            return _build(target, plan, {**fallback, **dict(schemas or {})})

    def refresh_from_store(
        self,
        store: ObjectStore,
        prefixes: Mapping[str, str],
        schemas: Mapping[str, Schema] | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        keep_existing: bool = True,
    ) -> dict[str, ViewInfo]:
        """Point each view at the Parquet objects under a store folder and refresh.

        ``prefixes`` maps view name to folder key (e.g. ``"tables/filepaths"``).
        A local store is read in place; an S3 store is first mirrored into
        ``cache_dir`` (default: ``warehouse_mirror`` next to the database file).
        """
        if store.is_local:
            sources: dict[str, Source] = {
                name: _parquet_glob(Path(store.uri(prefix))) for name, prefix in prefixes.items()
            }
        else:
            cache = Path(cache_dir) if cache_dir else self._file().with_name("warehouse_mirror")
            sources = {
                name: _parquet_glob(mirror_from_store(store, prefix, cache).folder)
                for name, prefix in prefixes.items()
            }
        return self.refresh_views(sources, schemas, keep_existing=keep_existing)

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the current file (a private in-memory DuckDB attaching it).

        The connection keeps reading the file it opened, even after a refresh
        replaces it; reconnect to see the new views.
        """
        target = self._file()
        if not target.is_file():
            raise WarehouseNotFoundError(f"no warehouse at {target}: refresh its views first")
        con = duckdb.connect(":memory:")
        try:
            con.execute(f"ATTACH {_sql_string(str(target))} AS warehouse (READ_ONLY)")
            con.execute("USE warehouse")
            yield con
        finally:
            con.close()

    def query(self, sql: str) -> pl.DataFrame:
        """Run ``sql`` on a new read-only connection; :class:`QueryError` if DuckDB refuses it."""
        with self.connect() as con:
            try:
                relation = con.sql(sql)
                return pl.DataFrame() if relation is None else relation.pl()
            except duckdb.Error as exc:
                raise QueryError(str(exc)) from exc

    def views(self) -> dict[str, ViewInfo]:
        """The views of the current file, as recorded in its ``_meta`` table."""
        target = self._file()
        if not target.is_file():
            raise WarehouseNotFoundError(f"no warehouse at {target}: refresh its views first")
        return _read_meta(target)

    def _file(self) -> Path:
        return Path(self.path).expanduser().absolute()


def mirror_from_store(
    store: ObjectStore, prefix: str, cache_dir: str | os.PathLike[str]
) -> MirrorResult:
    """Make ``<cache_dir>/<prefix>`` a copy of the Parquet objects under ``prefix``.

    Objects whose ETag and size match the last mirror (recorded in a manifest
    in ``cache_dir``) are not downloaded again; local copies of objects that
    are gone from the store are deleted. Each file is replaced atomically.
    """
    cache = Path(cache_dir).absolute()
    cache.mkdir(parents=True, exist_ok=True)
    infos = [info for info in store.list_info(prefix) if info.key.endswith(".parquet")]
    folder_key = check_prefix(prefix)
    with _file_lock(cache / ".mirror.lock", 120.0):
        manifest_path = cache / _MANIFEST
        manifest = _read_manifest(manifest_path)
        downloaded = 0
        for info in infos:
            local = cache / info.key
            entry = {"etag": info.etag, "size": info.size}
            fresh = local.is_file() and local.stat().st_size == info.size
            if manifest.get(info.key) != entry or not fresh:
                store.download(info.key, local)
                manifest[info.key] = entry
                downloaded += 1
        current = {info.key for info in infos}
        stale = [
            key
            for key in manifest
            if (key.startswith(f"{folder_key}/") or not folder_key) and key not in current
        ]
        for key in stale:
            (cache / key).unlink(missing_ok=True)
            del manifest[key]
        _write_text_atomic(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))
    files = [cache / info.key for info in infos]
    return MirrorResult(cache / folder_key, files, downloaded, len(stale))


def check_view_name(name: str) -> str:
    """Return ``name`` if it is a lowercase SQL identifier usable as a view, else raise."""
    if not isinstance(name, str) or not _VIEW_NAME.match(name):
        raise ViewSourceError(
            f"view name must be a lowercase identifier (letters, digits, _), got {name!r}"
        )
    return name


def _build(
    target: Path, plan: Mapping[str, tuple[Source, bool]], schemas: Mapping[str, Schema]
) -> dict[str, ViewInfo]:
    """Write a new database with ``plan``'s views next to ``target``, then replace it."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.building")
    try:
        con = duckdb.connect(str(tmp))
        try:
            infos = {}
            for name in sorted(plan):
                source, strict = plan[name]
                infos[name] = _create_view(con, name, source, strict, schemas)
            _write_meta(con, infos)
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_name(tmp.name + ".wal").unlink(missing_ok=True)
    return infos


def _create_view(
    con: duckdb.DuckDBPyConnection,
    name: str,
    source: Source,
    strict: bool,
    schemas: Mapping[str, Schema],
) -> ViewInfo:
    spec, files = _resolve(name, source, strict)
    if files:
        listed = ", ".join(_sql_string(f) for f in files)
        body = f"SELECT * FROM read_parquet([{listed}], union_by_name=true)"
    else:
        schema = schemas.get(name, DEFAULT_SCHEMAS.get(name))
        if schema is None:
            raise ViewSourceError(
                f"view {name!r}: no files match {spec!r} and no schema was given for an empty view"
            )
        columns = _columns_of(con, name, schema)
        nulls = ", ".join(f"CAST(NULL AS {kind}) AS {_quote(col)}" for col, kind in columns.items())
        body = f"SELECT {nulls} WHERE false"
    try:
        con.execute(f"CREATE VIEW {_quote(name)} AS {body}")
    except duckdb.Error as exc:
        raise ViewSourceError(f"view {name!r} over {spec!r}: {exc}") from exc
    described = con.execute(f"DESCRIBE {_quote(name)}").fetchall()
    return ViewInfo(name, spec, files, {row[0]: row[1] for row in described})


def _resolve(name: str, source: Source, strict: bool) -> tuple[str | list[str], list[str]]:
    """The JSON-able source spec and the sorted absolute files it names now."""
    if isinstance(source, (str, os.PathLike)):
        pattern = os.path.abspath(os.fspath(source))
        if _GLOB_CHARS.search(pattern):
            matches = glob.glob(pattern, recursive=True)
            return pattern, sorted(p for p in matches if Path(p).is_file())
        if not Path(pattern).is_file() and strict:
            raise ViewSourceError(f"view {name!r}: no such file {pattern}")
        return pattern, [pattern] if Path(pattern).is_file() else []
    if not isinstance(source, Sequence):
        raise ViewSourceError(f"view {name!r}: source must be a glob, a path or a list of paths")
    files = [os.path.abspath(os.fspath(item)) for item in source]
    missing = [f for f in files if not Path(f).is_file()]
    if missing and strict:
        raise ViewSourceError(f"view {name!r}: missing files {missing[:3]}")
    return files, sorted(set(files) - set(missing))


def _columns_of(con: duckdb.DuckDBPyConnection, name: str, schema: Schema) -> dict[str, str]:
    """``{column: duckdb type}`` from a mapping or a pandera polars model."""
    if isinstance(schema, type) and issubclass(schema, pa.DataFrameModel):
        columns = schema.to_schema().columns
        empty = pl.DataFrame(schema={col: column.dtype.type for col, column in columns.items()})
        con.register("_tomosight_empty", empty.to_arrow())
        try:
            rows = con.execute("DESCRIBE SELECT * FROM _tomosight_empty").fetchall()
        finally:
            con.unregister("_tomosight_empty")
        return {row[0]: row[1] for row in rows}
    if not isinstance(schema, Mapping) or not schema:
        raise ViewSourceError(f"view {name!r}: schema must be a non-empty dict or a pandera model")
    bad = [kind for kind in schema.values() if not _DUCKDB_TYPE.match(str(kind))]
    if bad:
        raise ViewSourceError(f"view {name!r}: not DuckDB type names: {bad}")
    return {str(col): str(kind) for col, kind in schema.items()}


def _write_meta(con: duckdb.DuckDBPyConnection, infos: Mapping[str, ViewInfo]) -> None:
    con.execute(
        f"CREATE TABLE {META_TABLE} (view VARCHAR PRIMARY KEY, source VARCHAR, n_files INTEGER,"
        " files VARCHAR[], columns VARCHAR, refreshed_at TIMESTAMPTZ)"
    )
    now = datetime.now(timezone.utc)
    rows = [
        (i.name, json.dumps(i.source), len(i.files), i.files, json.dumps(i.columns), now)
        for i in infos.values()
    ]
    if rows:
        con.executemany(f"INSERT INTO {META_TABLE} VALUES (?, ?, ?, ?, ?, ?)", rows)


def _read_meta(target: Path) -> dict[str, ViewInfo]:
    con = duckdb.connect(":memory:")
    try:
        con.execute(f"ATTACH {_sql_string(str(target))} AS old (READ_ONLY)")
        rows = con.execute(f"SELECT view, source, files, columns FROM old.{META_TABLE}").fetchall()
    except duckdb.Error as exc:
        raise WarehouseError(f"{target} is not a tomosight warehouse: {exc}") from exc
    finally:
        con.close()
    return {
        name: ViewInfo(name, json.loads(source), list(files), json.loads(columns))
        for name, source, files, columns in rows
    }


def _read_manifest(path: Path) -> dict[str, dict[str, object]]:
    """The mirror manifest; an unreadable one means: download everything again."""
    try:
        manifest = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _parquet_glob(folder: Path) -> str:
    return str(folder / "**" / "*.parquet")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _file_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """Exclusive advisory lock on ``path`` (created if needed), polled until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    with open(path, "a+b") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeoutError(f"{path} held by another refresh for {timeout_s}s")
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
