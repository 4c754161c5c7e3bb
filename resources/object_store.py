"""Object storage resource: one small API over a local folder or an S3 bucket prefix.

``ObjectStore(base_uri="store")`` keeps objects as files under ``./store``;
``ObjectStore(base_uri="s3://bucket/prefix", endpoint_url=...)`` keeps them in
S3 or any S3-compatible server (MinIO, OVH, moto). Keys are "/"-separated and
relative to ``base_uri``. S3 credentials come from boto3's standard sources
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or a mounted profile), never
from the resource config; without ``endpoint_url`` boto3 also honours
``AWS_ENDPOINT_URL``. Local writes are atomic: a hidden temp file in the
target folder, then ``os.replace``.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dagster as dg
import polars as pl
from pydantic import PrivateAttr, field_validator

from ml.atomic import atomic_path

_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NOT_FOUND_CODES = {"404", "NoSuchKey", "NotFound"}
_CHUNK = 1 << 20


class ObjectStoreError(Exception):
    """Base class of object store errors."""


class InvalidKeyError(ObjectStoreError, ValueError):
    """A key, prefix or URI that this store cannot address."""


class ObjectNotFoundError(ObjectStoreError, FileNotFoundError):
    """The object does not exist."""


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key, size in bytes and a change token.

    ``etag`` is the S3 ETag (quotes removed), or ``<mtime_ns>-<size>`` in hex
    for a local file: equal tokens mean unchanged content.
    """

    key: str
    size: int
    etag: str


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid relative object key, else raise :class:`InvalidKeyError`."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError(f"object key must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise InvalidKeyError(f"object key must be relative and '/'-separated: {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidKeyError(f"object key has an empty, '.' or '..' segment: {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """Normalise a folder prefix: '' for the whole store, else a valid key without end slash."""
    stripped = prefix.rstrip("/") if isinstance(prefix, str) else prefix
    return "" if stripped == "" else check_key(stripped)


def parse_base_uri(base_uri: str) -> tuple[str, str]:
    """Split ``base_uri`` into ``("local", path)`` or ``("s3://bucket", prefix)``."""
    if not isinstance(base_uri, str) or not base_uri.strip():
        raise ValueError("base_uri must be a folder path or s3://bucket/prefix")
    if "://" not in base_uri:
        return "local", base_uri
    scheme, _, rest = base_uri.partition("://")
    if scheme != "s3":
        raise ValueError(f"unsupported base_uri scheme {scheme!r}: use a local path or s3://")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"invalid S3 bucket name {bucket!r} in base_uri {base_uri!r}")
    try:
        return f"s3://{bucket}", check_prefix(prefix)
    except InvalidKeyError as exc:
        raise ValueError(f"invalid prefix in base_uri {base_uri!r}: {exc}") from exc


class _Backend(Protocol):
    """What each storage backend implements; keys are already checked."""

    is_local: bool

    def uri(self, key: str) -> str: ...
    def key_of(self, uri: str) -> str: ...
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def list_info(self, prefix: str) -> list[ObjectInfo]: ...
    def delete(self, key: str) -> None: ...
    def download(self, key: str, dest: Path) -> None: ...


class ObjectStore(dg.ConfigurableResource):
    """Objects under a local folder or an ``s3://bucket/prefix``.

    Keys are relative ("tables/filepaths/2024-03-01.parquet"); every method that
    reads also accepts the object's full URI as returned by :meth:`uri`.
    """

    base_uri: str
    endpoint_url: str | None = None
    region_name: str = "us-east-1"

    _impl: Any = PrivateAttr(default=None)

    @field_validator("base_uri")
    @classmethod
    def _check_base_uri(cls, value: str) -> str:
        parse_base_uri(value)
        return value

    @property
    def is_local(self) -> bool:
        """True when objects are plain files under a local folder."""
        return parse_base_uri(self.base_uri)[0] == "local"

    def uri(self, key: str) -> str:
        """Full URI of ``key``: an absolute file path (local) or ``s3://bucket/...``."""
        return self._backend().uri(check_key(key))

    def put_bytes(self, key: str, data: bytes) -> str:
        """Store ``data`` under ``key`` (replacing it) and return its URI."""
        backend = self._backend()
        backend.put_bytes(check_key(key), bytes(data))
        return backend.uri(key)

    def put_file(self, key: str, local_path: str | os.PathLike[str]) -> str:
        """Copy the local file ``local_path`` to ``key`` and return its URI."""
        source = Path(local_path)
        if not source.is_file():
            raise FileNotFoundError(f"not a file: {source}")
        backend = self._backend()
        backend.put_file(check_key(key), source)
        return backend.uri(key)

    def get_bytes(self, key_or_uri: str) -> bytes:
        """The content of an object; raises :class:`ObjectNotFoundError` if absent."""
        return self._backend().get_bytes(self._key(key_or_uri))

    def exists(self, key: str) -> bool:
        """Whether an object exists at ``key``."""
        return self._backend().exists(check_key(key))

    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys of every object under the folder ``prefix`` ('' for all)."""
        return [info.key for info in self.list_info(prefix)]

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Like :meth:`list`, with each object's size and change token."""
        infos = self._backend().list_info(check_prefix(prefix))
        return sorted(infos, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        """Delete the object at ``key``; a missing object is not an error."""
        self._backend().delete(check_key(key))

    def download(self, key_or_uri: str, dest: str | os.PathLike[str]) -> Path:
        """Copy an object to the local file ``dest`` atomically; return ``dest``."""
        target = Path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        self._backend().download(self._key(key_or_uri), target)
        return target

    @contextmanager
    def local_path(self, key_or_uri: str) -> Iterator[Path]:
        """A local path to the object: the file itself (local), or a temp download (S3)."""
        backend, key = self._backend(), self._key(key_or_uri)
        if backend.is_local:
            path = Path(backend.uri(key))
            if not path.is_file():
                raise ObjectNotFoundError(f"no object at {path}")
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="tomosight-") as tmp:
            path = Path(tmp) / key.rsplit("/", 1)[-1]
            backend.download(key, path)
            yield path

    def put_content_addressed(
        self, source: bytes | str | os.PathLike[str], prefix: str, suffix: str
    ) -> tuple[str, str]:
        """Store bytes or a local file under ``<prefix>/<sha[:2]>/<sha>.<suffix>``.

        Returns ``(key, sha256 hex)``. Idempotent: nothing is written when the
        key already exists.
        """
        sha = _sha256(source)
        name = f"{sha}.{suffix.lstrip('.')}" if suffix.lstrip(".") else sha
        base = check_prefix(prefix)
        key = check_key(f"{base}/{sha[:2]}/{name}" if base else f"{sha[:2]}/{name}")
        if not self.exists(key):
            if isinstance(source, (bytes, bytearray, memoryview)):
                self.put_bytes(key, bytes(source))
            else:
                self.put_file(key, source)
        return key, sha

    def write_parquet(
        self, key: str, df: pl.DataFrame, metadata: Mapping[str, str] | None = None
    ) -> str:
        """Write ``df`` as Parquet (string key/value ``metadata``) to ``key``; return the URI."""
        extra = dict(metadata or {})
        bad = sorted(
            repr(k) for k, v in extra.items() if not isinstance(k, str) or not isinstance(v, str)
        )
        if bad:
            raise TypeError(f"parquet metadata keys and values must be strings; offending: {bad}")
        buffer = io.BytesIO()
        df.write_parquet(buffer, metadata=extra or None)
        return self.put_bytes(key, buffer.getvalue())

    def read_parquet(self, key_or_uri: str) -> pl.DataFrame:
        """Read a Parquet object into a DataFrame."""
        backend, key = self._backend(), self._key(key_or_uri)
        if backend.is_local:
            with self.local_path(key) as path:
                return pl.read_parquet(path)
        return pl.read_parquet(io.BytesIO(backend.get_bytes(key)))

    def read_parquet_metadata(self, key_or_uri: str) -> dict[str, str]:
        """The custom key/value metadata of a Parquet object (Arrow's own keys left out)."""
        backend, key = self._backend(), self._key(key_or_uri)
        if backend.is_local:
            with self.local_path(key) as path:
                raw = pl.read_parquet_metadata(path)
        else:
            raw = pl.read_parquet_metadata(io.BytesIO(backend.get_bytes(key)))
        return {k: v for k, v in raw.items() if not k.startswith("ARROW:")}

    def _key(self, key_or_uri: str) -> str:
        backend = self._backend()
        if isinstance(key_or_uri, str) and (
            "://" in key_or_uri or (backend.is_local and os.path.isabs(key_or_uri))
        ):
            return backend.key_of(key_or_uri)
        return check_key(key_or_uri)

    def _backend(self) -> _Backend:
        if self._impl is None:
            root, prefix = parse_base_uri(self.base_uri)
            if root == "local":
                self._impl = _LocalBackend(Path(prefix).expanduser().absolute())
            else:
                client = _s3_client(self.endpoint_url, self.region_name)
                self._impl = _S3Backend(client, root.removeprefix("s3://"), prefix)
        return self._impl


def _sha256(source: bytes | bytearray | memoryview | str | os.PathLike[str]) -> str:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with open(source, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _LocalBackend:
    """Objects as files under ``root``."""

    is_local = True

    def __init__(self, root: Path) -> None:
        self.root = root

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def key_of(self, uri: str) -> str:
        path = Path(uri.removeprefix("file://"))
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            raise InvalidKeyError(f"{uri} is not inside the store {self.root}") from None
        return check_key(relative.as_posix())

    def put_bytes(self, key: str, data: bytes) -> None:
        with atomic_path(self.root / key) as tmp:
            tmp.write_bytes(data)

    def put_file(self, key: str, path: Path) -> None:
        with atomic_path(self.root / key) as tmp:
            shutil.copyfile(path, tmp)

    def get_bytes(self, key: str) -> bytes:
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(f"no object at {self.root / key}") from None

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def list_info(self, prefix: str) -> list[ObjectInfo]:
        infos = []
        for folder, _, names in os.walk(self.root / prefix):
            for name in names:
                if _TEMP_NAME.match(name):
                    continue
                path = Path(folder) / name
                stat = path.stat()
                key = path.relative_to(self.root).as_posix()
                etag = f"{stat.st_mtime_ns:x}-{stat.st_size:x}"
                infos.append(ObjectInfo(key, stat.st_size, etag))
        return infos

    def delete(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def download(self, key: str, dest: Path) -> None:
        if not self.exists(key):
            raise ObjectNotFoundError(f"no object at {self.root / key}")
        with atomic_path(dest) as tmp:
            shutil.copyfile(self.root / key, tmp)


def _s3_client(endpoint_url: str | None, region_name: str) -> Any:
    """A boto3 S3 client; path-style addressing for custom endpoints (MinIO, moto)."""
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {"retries": {"max_attempts": 5, "mode": "standard"}}
    if endpoint_url:
        options["s3"] = {"addressing_style": "path"}
    session = boto3.session.Session()
    return session.client(
        "s3", endpoint_url=endpoint_url, region_name=region_name, config=Config(**options)
    )


class _S3Backend:
    """Objects under ``s3://bucket/prefix``."""

    is_local = False

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def key_of(self, uri: str) -> str:
        head = f"s3://{self.bucket}/" + (f"{self.prefix}/" if self.prefix else "")
        if not uri.startswith(head):
            raise InvalidKeyError(f"{uri} is not inside the store {head}")
        return check_key(uri[len(head) :])

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Turn botocore errors into :class:`ObjectStoreError` naming the object."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND_CODES:
                raise ObjectNotFoundError(f"no object at {self.uri(key)}") from None
            raise ObjectStoreError(f"{self.uri(key)}: {exc}") from exc
        except BotoCoreError as exc:
            raise ObjectStoreError(f"{self.uri(key)}: {exc}") from exc

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(key):
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        with self._errors(key):
            self.client.upload_file(str(path), self.bucket, self._full(key))

    def get_bytes(self, key: str) -> bytes:
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            with self._errors(key):
                self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ObjectNotFoundError:
            return False
        return True

    def list_info(self, prefix: str) -> list[ObjectInfo]:
        folder = self._full(prefix) if prefix else self.prefix
        start = f"{folder}/" if folder else ""
        infos = []
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][len(self.prefix) + 1 :] if self.prefix else item["Key"]
                    infos.append(ObjectInfo(key, int(item["Size"]), item["ETag"].strip('"')))
        return infos

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def download(self, key: str, dest: Path) -> None:
        with self._errors(key), atomic_path(dest) as tmp:
            self.client.download_file(self.bucket, self._full(key), str(tmp))
