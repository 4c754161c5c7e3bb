"""ObjectStore: the same behaviour on a local folder and on a real S3 server (moto on loopback)."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from datetime import date
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from pydantic import ValidationError

from resources.object_store import (
    InvalidKeyError,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
)
from tests.support.s3 import create_bucket, s3_bucket, s3_server  # noqa: F401  (fixtures)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """An empty store: a folder under tmp_path, or a prefix in a fresh moto bucket."""
    if request.param == "local":
        return ObjectStore(base_uri=str(tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_server")
    bucket = create_bucket(endpoint)
    return ObjectStore(base_uri=f"s3://{bucket}/lake/v1", endpoint_url=endpoint)


def temp_files(root: Path) -> list[Path]:
    """Leftover hidden temp files under ``root``."""
    return [p for p in root.rglob("*") if p.name.startswith(".") and p.suffix == ".tmp"]


def test_bytes_round_trip_by_key_and_uri(store: ObjectStore) -> None:
    uri = store.put_bytes("raw/a/b.bin", b"\x00payload\xff")
    assert uri == store.uri("raw/a/b.bin")
    if store.is_local:
        assert Path(uri).is_absolute() and Path(uri).read_bytes() == b"\x00payload\xff"
    else:
        assert uri.startswith("s3://") and uri.endswith("/lake/v1/raw/a/b.bin")
    assert store.get_bytes("raw/a/b.bin") == b"\x00payload\xff"
    assert store.get_bytes(uri) == b"\x00payload\xff"
    assert store.exists("raw/a/b.bin")
    assert not store.exists("raw/a/c.bin")
    assert not store.exists("raw/a")  # a folder is not an object


def test_overwrite_replaces(store: ObjectStore) -> None:
    store.put_bytes("k.txt", b"first version, longer")
    store.put_bytes("k.txt", b"second")
    assert store.get_bytes("k.txt") == b"second"
    assert store.list() == ["k.txt"]


def test_list_is_sorted_and_folder_scoped(store: ObjectStore) -> None:
    for key in ["t/b/2.parquet", "t/a.parquet", "t/b/1.parquet", "tx/c.parquet", "u.bin"]:
        store.put_bytes(key, key.encode())
    assert store.list("t") == ["t/a.parquet", "t/b/1.parquet", "t/b/2.parquet"]
    assert store.list("t/") == store.list("t")
    assert store.list("t/b") == ["t/b/1.parquet", "t/b/2.parquet"]
    assert store.list() == sorted(["t/b/2.parquet", "t/a.parquet", "t/b/1.parquet",
                                   "tx/c.parquet", "u.bin"])
    assert store.list("nothing/here") == []
    sizes = {info.key: info.size for info in store.list_info("t")}
    assert sizes == {"t/a.parquet": 11, "t/b/1.parquet": 13, "t/b/2.parquet": 13}


def test_delete_is_idempotent(store: ObjectStore) -> None:
    store.put_bytes("x/y.bin", b"1")
    store.delete("x/y.bin")
    store.delete("x/y.bin")
    assert not store.exists("x/y.bin")
    assert store.list("x") == []


def test_missing_object_raises_typed_error(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError, match="missing.bin"):
        store.get_bytes("missing.bin")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError
        store.read_parquet("missing.parquet")
    with pytest.raises(ObjectNotFoundError):
        with store.local_path("missing.bin"):
            pass


@pytest.mark.parametrize("key", ["", "/abs/key", "../up", "a//b", "a/./b", "a/../b", "a\\b"])
def test_invalid_keys_are_rejected(store: ObjectStore, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        store.put_bytes(key, b"x")


def test_uri_outside_the_store_is_rejected(store: ObjectStore, tmp_path: Path) -> None:
    outside = str(tmp_path / "elsewhere.bin") if store.is_local else "s3://other-bucket/k.bin"
    with pytest.raises(InvalidKeyError, match="not inside the store"):
        store.get_bytes(outside)


def test_put_file_and_local_path(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "in.dcm"
    source.write_bytes(os.urandom(3000))
    uri = store.put_file("dicom/in.dcm", source)
    with store.local_path(uri) as path:
        assert path.read_bytes() == source.read_bytes()
        assert path.name == "in.dcm"
        if store.is_local:
            assert str(path) == uri  # the stored file itself, no copy
    assert path.exists() == store.is_local  # S3 temp downloads are cleaned up
    with pytest.raises(FileNotFoundError):
        store.put_file("dicom/none.dcm", tmp_path / "none.dcm")


def test_download_to_a_local_file(store: ObjectStore, tmp_path: Path) -> None:
    store.put_bytes("d/blob.bin", b"abc" * 1000)
    target = store.download("d/blob.bin", tmp_path / "cache" / "deep" / "blob.bin")
    assert target.read_bytes() == b"abc" * 1000
    assert temp_files(tmp_path / "cache") == []


def test_content_addressed_is_idempotent(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"a DICOM file's bytes" * 100
    sha = hashlib.sha256(data).hexdigest()
    key, digest = store.put_content_addressed(data, "dicom", "dcm")
    assert (key, digest) == (f"dicom/{sha[:2]}/{sha}.dcm", sha)
    assert store.get_bytes(key) == data

    backend = store._backend()
    writes: list[str] = []
    for name in ("put_bytes", "put_file"):
        original = getattr(backend, name)
        monkeypatch.setattr(
            backend, name, lambda k, v, _o=original: (writes.append(k), _o(k, v))[1]
        )
    source = tmp_path / "same.dcm"
    source.write_bytes(data)
    assert store.put_content_addressed(source, "dicom/", ".dcm") == (key, sha)
    assert store.put_content_addressed(data, "dicom", "dcm") == (key, sha)
    assert writes == []  # already present: nothing rewritten
    other, other_sha = store.put_content_addressed(str(source), "blobs", "")
    assert other == f"blobs/{sha[:2]}/{sha}" and other_sha == sha
    assert writes == [other]  # a file source is uploaded as a file
    assert store.list() == sorted([key, other])


def test_partition_parquet_round_trip_with_metadata(store: ObjectStore) -> None:
    df = pl.DataFrame(
        {"StudyUID": ["s1", "s2"], "StudyDate": [date(2024, 3, 1)] * 2, "frames": [50, 61]}
    )
    key = "tables/filepaths/2024-03-01.parquet"
    uri = store.write_parquet(key, df, {"partition": "2024-03-01", "run_id": "r-1"})
    assert store.list("tables/filepaths") == [key]
    back = store.read_parquet(uri)
    assert back.equals(df) and back.schema == df.schema
    assert store.read_parquet(key).equals(df)
    assert store.read_parquet_metadata(key) == {"partition": "2024-03-01", "run_id": "r-1"}
    store.write_parquet(key, df.head(1))  # a partition re-run replaces the file
    assert store.read_parquet(key).height == 1
    assert store.read_parquet_metadata(key) == {}
    with pytest.raises(TypeError, match="strings"):
        store.write_parquet("tables/bad.parquet", df, {"rows": 2})  # type: ignore[dict-item]


def test_local_failed_write_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ObjectStore(base_uri=str(tmp_path / "store"))
    store.put_bytes("a/obj.bin", b"old")
    source = tmp_path / "new.bin"
    source.write_bytes(b"new content")

    def broken_copy(src: str, dst: str) -> None:
        Path(dst).write_bytes(b"new c")  # half written, then the disk "fails"
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        store.put_file("a/obj.bin", source)
    assert store.get_bytes("a/obj.bin") == b"old"
    assert temp_files(tmp_path / "store") == []
    assert store.list() == ["a/obj.bin"]


def test_local_readers_never_see_partial_writes(tmp_path: Path) -> None:
    store = ObjectStore(base_uri=str(tmp_path / "store"))
    versions = [bytes([i]) * 2_000_000 for i in range(3)]
    store.put_bytes("big.bin", versions[0])
    done = threading.Event()

    def writer() -> None:
        for i in range(12):
            store.put_bytes("big.bin", versions[i % 3])
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set():
        data = store.get_bytes("big.bin")
        assert data in versions  # whole versions only, never a torn file
        reads += 1
    thread.join()
    assert reads > 0
    assert temp_files(tmp_path / "store") == []
    assert store.list() == ["big.bin"]


def test_relative_base_uri_resolves_against_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = ObjectStore(base_uri="home/store")
    uri = store.put_bytes("k.bin", b"1")
    assert Path(uri) == tmp_path / "home" / "store" / "k.bin"
    assert (tmp_path / "home" / "store" / "k.bin").read_bytes() == b"1"


@pytest.mark.parametrize(
    "base_uri", ["", "gs://bucket/x", "s3://", "s3://UPPER/x", "s3://bucket/a/../b"]
)
def test_bad_base_uri_is_rejected_at_construction(base_uri: str) -> None:
    with pytest.raises(ValidationError):
        ObjectStore(base_uri=base_uri)


def test_s3_bucket_root_and_missing_bucket(s3_server: str, s3_bucket: str) -> None:
    store = ObjectStore(base_uri=f"s3://{s3_bucket}", endpoint_url=s3_server)
    assert store.put_bytes("top.bin", b"t") == f"s3://{s3_bucket}/top.bin"
    assert store.list() == ["top.bin"]
    missing = ObjectStore(base_uri="s3://no-such-bucket-here/p", endpoint_url=s3_server)
    with pytest.raises(ObjectStoreError, match="NoSuchBucket"):
        missing.put_bytes("k", b"x")


def test_store_as_a_dagster_resource(s3_server: str, s3_bucket: str) -> None:
    @dg.asset
    def table(store: ObjectStore) -> dg.MaterializeResult:
        uri = store.write_parquet("tables/t/2024-03-01.parquet", pl.DataFrame({"a": [1, 2]}))
        return dg.MaterializeResult(metadata={"uri": uri})

    resource = ObjectStore(base_uri=f"s3://{s3_bucket}/dagster", endpoint_url=s3_server)
    result = dg.materialize([table], resources={"store": resource})
    assert result.success
    check = ObjectStore(base_uri=f"s3://{s3_bucket}", endpoint_url=s3_server)
    assert check.list() == ["dagster/tables/t/2024-03-01.parquet"]
    assert check.read_parquet("dagster/tables/t/2024-03-01.parquet")["a"].to_list() == [1, 2]
