"""DICOM sources: landing folder, S3 prefix (moto) and a real PACS (Orthanc over DICOMweb)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import numpy as np
import pydicom
import pytest
import requests

from ml.dicomio import read_frames
from ml.synth.bto import BtoMeta, derived_uid, stored_pixels, write_bto
from resources.dicom_source import (
    DicomSource,
    DicomWebError,
    DicomWebSource,
    FolderSource,
    ForeignItemError,
    MultipartError,
    S3PrefixSource,
    SourceConfigError,
    SourceError,
    SourceItem,
    SourceItemChangedError,
    SourceItemNotFoundError,
    StowError,
    dicom_source_from_uri,
    store_instances,
)
from resources.sources_base import glob_regex
from resources.sources_multipart import MultipartBody, parse_content_type, write_single_part
from tests.support.orthanc import OrthancServer, orthanc_fixture  # noqa: F401
from tests.support.s3 import s3_bucket, s3_client, s3_server  # noqa: F401 (fixtures)

JPEG2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
Written = tuple[Path, BtoMeta, np.ndarray]


def _bto(path: Path, study: int, view: int, date: dt.date, seed: int) -> Written:
    vol = np.random.default_rng(seed).integers(0, 1024, (4, 64, 52), dtype=np.uint16)
    meta = BtoMeta(
        f"DBT-P{study:05d}", derived_uid("study", study), derived_uid("series", study, view),
        date, "LR"[view], "CC",
    )
    return write_bto(path, vol, meta), meta, vol


def _sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# ---------------------------------------------------------------------------------------------
# glob patterns and multipart/related streaming


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("**/*.dcm", "a.dcm", True),
        ("**/*.dcm", "x/y/a.dcm", True),
        ("**/*.dcm", "x/a.dcm.tmp", False),
        ("*.dcm", "x/a.dcm", False),
        ("a/**", "a/b/c", True),
        ("a/**", "b/a/c", False),
        ("?.dcm", "ab.dcm", False),
        ("[1].dcm", "[1].dcm", True),
    ],
)
def test_glob_regex(pattern: str, path: str, expected: bool) -> None:
    assert bool(glob_regex(pattern).fullmatch(path)) is expected


@pytest.mark.parametrize("pattern", ["", "/abs/*.dcm"])
def test_glob_regex_rejects_bad_patterns(pattern: str) -> None:
    with pytest.raises(SourceConfigError):
        glob_regex(pattern)


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


# Payload that contains partial delimiters, CRLFs and "--" near the real boundary.
PAYLOAD = b"\x00DICM\r\n--bound\r\n-\r\n--boundar" + bytes(range(256)) * 3 + b"\r\n--"


@pytest.mark.parametrize("chunk", [1, 2, 7, 64, 100_000])
def test_write_single_part_any_chunking(chunk: int) -> None:
    body = (
        b"preamble\r\n--boundary\r\nContent-Type: application/dicom\r\nX-Extra:  1 \r\n\r\n"
        + PAYLOAD
        + b"\r\n--boundary--\r\nepilogue"
    )
    out = io.BytesIO()
    headers = write_single_part(_chunks(body, chunk), "boundary", out)
    assert out.getvalue() == PAYLOAD
    assert headers == {"content-type": "application/dicom", "x-extra": "1"}


@pytest.mark.parametrize(
    "body",
    [
        b"--b\r\n\r\nabc",  # truncated: no closing delimiter
        b"--b\r\n\r\nabc\r\n--b\r\n\r\ndef\r\n--b--\r\n",  # two parts
        b"--b--\r\n",  # no part at all
        b"no delimiter at all",
    ],
)
def test_write_single_part_rejects_bad_bodies(body: bytes) -> None:
    with pytest.raises(MultipartError):
        write_single_part(_chunks(body, 3), "b", io.BytesIO())


def test_multipart_body_streams_files_and_round_trips(tmp_path: Path) -> None:
    files = [tmp_path / "a.bin", tmp_path / "b.bin"]
    files[0].write_bytes(PAYLOAD)
    files[1].write_bytes(b"second")
    whole = MultipartBody(files, "xyz", "application/dicom").read()
    body = MultipartBody(files, "xyz", "application/dicom")
    assert len(body) == len(whole)
    assert b"".join(iter(lambda: body.read(5), b"")) == whole
    head = b"--xyz\r\nContent-Type: application/dicom\r\n\r\n"
    assert whole.startswith(head + PAYLOAD + b"\r\n--xyz\r\n")
    assert whole.endswith(b"second\r\n--xyz--\r\n")
    single = MultipartBody(files[:1], "xyz", "application/dicom")
    out = io.BytesIO()
    write_single_part(iter(single), "xyz", out)
    assert out.getvalue() == PAYLOAD


def test_multipart_body_detects_a_file_changing_size(tmp_path: Path) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"12345")
    body = MultipartBody([path], "b", "application/dicom")
    path.write_bytes(b"123")
    with pytest.raises(MultipartError, match="changed size"):
        body.read()


def test_parse_content_type() -> None:
    value = 'multipart/related; type="application/dicom"; Boundary="a b"'
    media, params = parse_content_type(value)
    assert media == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": "a b"}


# ---------------------------------------------------------------------------------------------
# FolderSource


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    root = tmp_path / "landing"
    _bto(root / "a" / "1.dcm", 1, 0, dt.date(2024, 3, 1), 1)
    _bto(root / "b" / "c" / "2.dcm", 2, 0, dt.date(2024, 3, 1), 2)
    _bto(root / "1.2.826.0.1.3680043.8.498.7", 3, 0, dt.date(2024, 3, 1), 3)  # UID-named, no .dcm
    (root / "top.dcm").write_text("not DICOM, but named like it")
    (root / "notes.txt").write_text("x" * 200)
    (root / ".partial.dcm").write_bytes(b"\0" * 128 + b"DICM")
    (root / ".tmp").mkdir()
    (root / ".tmp" / "x.dcm").write_bytes(b"")
    return root


def test_folder_lists_pattern_matches_and_sniffed_dicom(landing: Path) -> None:
    items = FolderSource(root=str(landing)).list_items()
    rels = [Path(i.uri).relative_to(landing).as_posix() for i in items]
    assert rels == ["1.2.826.0.1.3680043.8.498.7", "a/1.dcm", "b/c/2.dcm", "top.dcm"]
    for item in items:
        st = Path(item.uri).stat()
        assert Path(item.uri).is_absolute()
        assert (item.size, item.version) == (st.st_size, f"{st.st_mtime_ns}-{st.st_size}")
    no_sniff = FolderSource(root=str(landing), sniff_other_files=False).list_items()
    assert [Path(i.uri).name for i in no_sniff] == ["1.dcm", "2.dcm", "top.dcm"]
    top_only = FolderSource(root=str(landing), pattern="*.dcm", sniff_other_files=False)
    assert [Path(i.uri).name for i in top_only.list_items()] == ["top.dcm"]


def test_folder_fetch_returns_the_file_and_checks_version(landing: Path, tmp_path: Path) -> None:
    source = FolderSource(root=str(landing))
    item = next(i for i in source.list_items() if i.uri.endswith("1.dcm"))
    dest = tmp_path / "dest"
    assert source.fetch(item, dest) == Path(item.uri)
    assert not dest.exists()  # nothing copied
    with source.open_local(item) as local:
        assert local == Path(item.uri)
    assert Path(item.uri).exists()  # open_local never deletes a local source file
    path = Path(item.uri)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - 1_000_000_000))
    with pytest.raises(SourceItemChangedError):
        source.fetch(item, dest)
    (changed,) = [i for i in source.list_items() if i.uri == item.uri]
    assert changed.version != item.version
    path.unlink()
    with pytest.raises(SourceItemNotFoundError):
        source.fetch(changed, dest)


@pytest.mark.parametrize(
    "uri", ["{root}/../outside.dcm", "/elsewhere/1.dcm", "s3://b/k", "a/1.dcm"]
)
def test_folder_fetch_refuses_foreign_items(landing: Path, uri: str) -> None:
    item = SourceItem(uri.format(root=landing), 1, "1-1")
    with pytest.raises(ForeignItemError):
        FolderSource(root=str(landing)).fetch(item, landing)


def test_folder_skips_files_still_being_written(landing: Path) -> None:
    old = 1_600_000_000_000_000_000
    for path in landing.rglob("*"):
        os.utime(path, ns=(old, old))
    (landing / "new.dcm").write_bytes(b"fresh")
    settled = FolderSource(root=str(landing), settle_seconds=60).list_items()
    names = [Path(i.uri).name for i in settled]
    assert "new.dcm" not in names and "1.dcm" in names
    assert "new.dcm" in [Path(i.uri).name for i in FolderSource(root=str(landing)).list_items()]


def test_folder_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(SourceConfigError, match="not a folder"):
        FolderSource(root=str(tmp_path / "missing")).list_items()
    with pytest.raises(ValueError):
        FolderSource(root=str(tmp_path), settle_seconds=-1)
    with pytest.raises(ValueError):
        FolderSource(root=str(tmp_path), pattern="/abs")


def test_folder_source_as_dagster_resource(landing: Path) -> None:
    @dg.asset
    def landed(source: FolderSource) -> int:
        return len(source.list_items())

    result = dg.materialize([landed], resources={"source": FolderSource(root=str(landing))})
    assert result.success and result.output_for_node("landed") == 4


# ---------------------------------------------------------------------------------------------
# dicom_source_from_uri


def test_from_uri_builds_each_kind(tmp_path: Path) -> None:
    assert dicom_source_from_uri(str(tmp_path)) == FolderSource(root=str(tmp_path))
    from_file_uri = dicom_source_from_uri(tmp_path.as_uri(), pattern="*")
    assert from_file_uri == FolderSource(root=str(tmp_path), pattern="*")
    s3 = dicom_source_from_uri("s3://bucket/cohort/a", endpoint_url="http://127.0.0.1:9")
    assert (s3.bucket, s3.prefix, s3.endpoint_url) == ("bucket", "cohort/a", "http://127.0.0.1:9")
    web = dicom_source_from_uri("dicomweb+https://pacs:8443/dicom-web", study_date_to="2024-03-01")
    assert isinstance(web, DicomWebSource)
    assert (web.url, web.study_date_to) == ("https://pacs:8443/dicom-web", "20240301")
    for source in (s3, web, FolderSource(root="x")):
        assert isinstance(source, DicomSource)


@pytest.mark.parametrize(
    ("uri", "options", "match"),
    [
        ("s4://bucket/x", {}, "did you mean 's3'"),
        ("ftp://host/x", {}, "unsupported source URI scheme"),
        ("s3://bucket/x", {"endpoint": "http://h"}, "did you mean 'endpoint_url'"),
        ("s3://bucket/x", {"bucket": "other"}, "no option 'bucket'"),
        ("dicomweb+http://user:secret@pacs/dicom-web", {}, "credentials"),
        ("dicomweb+http:///dicom-web", {}, "without a host"),
        ("s3:///key", {}, "without a bucket"),
        ("file://remote/share", {}, "must be local"),
        ("dicomweb+http://pacs/dicom-web", {"study_date_to": "2024-02-30"}, "YYYYMMDD"),
        (
            "dicomweb+http://pacs/dicom-web",
            {"study_date_from": "20240302", "study_date_to": "20240301"},
            "after",
        ),
    ],
)
def test_from_uri_rejects_bad_settings(uri: str, options: dict, match: str) -> None:
    with pytest.raises(SourceConfigError, match=match):
        dicom_source_from_uri(uri, **options)


# ---------------------------------------------------------------------------------------------
# S3PrefixSource against moto's S3 server on 127.0.0.1


@pytest.fixture
def bucket(s3_server: str, s3_bucket: str) -> str:
    client = s3_client(s3_server)
    for key, body in {
        "cohort/a/1.dcm": b"\0" * 128 + b"DICM one",
        "cohort/b/2.dcm": b"two" * 1000,
        "cohort/b/": b"",  # folder marker
        "cohort/notes.txt": b"notes",
        "other/3.dcm": b"three",
    }.items():
        client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    return s3_bucket


def test_s3_lists_prefix_with_etags(s3_server: str, bucket: str) -> None:
    source = S3PrefixSource(bucket=bucket, prefix="cohort/", endpoint_url=s3_server)
    items = source.list_items()
    assert [i.uri for i in items] == [
        f"s3://{bucket}/cohort/a/1.dcm",
        f"s3://{bucket}/cohort/b/2.dcm",
        f"s3://{bucket}/cohort/notes.txt",
    ]
    assert items[1].size == 3000
    assert items[1].version == hashlib.md5(b"two" * 1000).hexdigest()
    dcm_only = S3PrefixSource(
        bucket=bucket, prefix="cohort", pattern="**/*.dcm", endpoint_url=s3_server
    )
    assert [i.uri.rsplit("/", 1)[1] for i in dcm_only.list_items()] == ["1.dcm", "2.dcm"]


def test_s3_fetch_gets_the_listed_version(s3_server: str, bucket: str, tmp_path: Path) -> None:
    source = dicom_source_from_uri(f"s3://{bucket}/cohort/", endpoint_url=s3_server)
    item = next(i for i in source.list_items() if i.uri.endswith("2.dcm"))
    path = source.fetch(item, tmp_path)
    assert path == tmp_path / bucket / "cohort" / "b" / "2.dcm"
    assert path.read_bytes() == b"two" * 1000
    assert [p.name for p in path.parent.iterdir()] == ["2.dcm"]  # no temporary file left
    with source.open_local(item) as local:
        assert local.read_bytes() == b"two" * 1000
    assert not local.exists()
    client = s3_client(s3_server)
    client.put_object(Bucket=bucket, Key="cohort/b/2.dcm", Body=b"replaced")
    with pytest.raises(SourceItemChangedError):
        source.fetch(item, tmp_path / "again")
    assert not (tmp_path / "again" / bucket / "cohort" / "b" / "2.dcm").exists()
    client.delete_object(Bucket=bucket, Key="cohort/b/2.dcm")
    with pytest.raises(SourceItemNotFoundError):
        source.fetch(item, tmp_path / "again")


@pytest.mark.parametrize(
    "uri", ["s3://other-bucket/cohort/a/1.dcm", "s3://{bucket}/other/3.dcm", "/x/1.dcm"]
)
def test_s3_fetch_refuses_foreign_items(
    s3_server: str, bucket: str, uri: str, tmp_path: Path
) -> None:
    source = S3PrefixSource(bucket=bucket, prefix="cohort/", endpoint_url=s3_server)
    with pytest.raises(ForeignItemError):
        source.fetch(SourceItem(uri.format(bucket=bucket), 1, "etag"), tmp_path)


def test_s3_missing_bucket_is_a_source_error(s3_server: str) -> None:
    with pytest.raises(SourceError, match="cannot list"):
        S3PrefixSource(bucket="no-such-bucket", endpoint_url=s3_server).list_items()


# ---------------------------------------------------------------------------------------------
# DicomWebSource against a scripted DICOMweb server (responses Orthanc does not give)

Route = tuple[int, str, bytes]


@pytest.fixture
def fake_web() -> Iterator[tuple[str, dict[str, Route]]]:
    """A loopback HTTP server answering GETs from a ``path -> (status, type, body)`` table."""
    routes: dict[str, Route] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            status, ctype, body = routes.get(self.path.split("?")[0], (404, "text/plain", b""))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", routes
    finally:
        server.shutdown()
        server.server_close()


def _json(items: list[dict]) -> Route:
    return 200, "application/dicom+json", json.dumps(items).encode()


def _uid_attr(value: str, vr: str = "UI") -> dict:
    return {"vr": vr, "Value": [value]}


def test_qido_stops_on_servers_that_ignore_limit_and_offset(fake_web: tuple) -> None:
    url, routes = fake_web
    studies = [
        {"0020000D": _uid_attr(f"1.{i}"), "00080061": _uid_attr("MG", "CS")} for i in (1, 2, 3)
    ]
    routes["/dicom-web/studies"] = _json(studies)
    for i in (1, 2, 3):
        routes[f"/dicom-web/studies/1.{i}/instances"] = _json(
            [{"0020000E": _uid_attr(f"2.{i}"), "00080018": _uid_attr(f"3.{i}.{k}")} for k in (1, 2)]
        )
    for page_size in (2, 3, 500):  # more than, exactly and fewer than a page
        items = DicomWebSource(url=url, page_size=page_size).list_items()
        assert [i.version for i in items] == [f"3.{i}.{k}" for i in (1, 2, 3) for k in (1, 2)]
    routes["/dicom-web/studies"] = _json([{"0020000D": _uid_attr("1.1/../x")}])
    with pytest.raises(DicomWebError, match="invalid StudyInstanceUID"):
        DicomWebSource(url=url, modalities_in_study=None).list_items()
    routes["/dicom-web/studies"] = (200, "application/dicom+json", b"{not json")
    with pytest.raises(DicomWebError, match="not JSON"):
        DicomWebSource(url=url).list_items()
    routes["/dicom-web/studies"] = (204, "application/dicom+json", b"")
    assert DicomWebSource(url=url).list_items() == []


def test_wado_single_part_and_content_checks(fake_web: tuple, tmp_path: Path) -> None:
    url, routes = fake_web
    path, meta, _ = _bto(tmp_path / "src.dcm", 5, 0, dt.date(2024, 1, 1), 5)
    sop, study, series = _sop_uid(path), meta.study_instance_uid, meta.series_instance_uid
    item = SourceItem(f"dicomweb://{study}/{series}/{sop}", None, sop)
    route = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    source = DicomWebSource(url=url)
    routes[route] = (200, "application/dicom", path.read_bytes())
    assert source.fetch(item, tmp_path / "a").read_bytes() == path.read_bytes()
    routes[route] = (200, "text/html", b"<html>login</html>")
    with pytest.raises(DicomWebError, match="unexpected Content-Type"):
        source.fetch(item, tmp_path / "b")
    routes[route] = (200, "application/dicom", b"plain text, not a DICOM file")
    with pytest.raises(DicomWebError, match="not DICOM"):
        source.fetch(item, tmp_path / "c")
    routes[route] = (200, "application/dicom", b"\0" * 128 + b"DICM truncated")
    with pytest.raises(DicomWebError, match="SOPInstanceUID None"):
        source.fetch(item, tmp_path / "c")
    other = SourceItem(item.uri.rsplit("/", 1)[0] + "/1.2.3", None, "1.2.3")
    routes[route.rsplit("/", 1)[0] + "/1.2.3"] = (200, "application/dicom", path.read_bytes())
    with pytest.raises(DicomWebError, match="retrieved SOPInstanceUID"):
        source.fetch(other, tmp_path / "d")
    routes[route] = (503, "text/plain", b"busy")
    with pytest.raises(DicomWebError) as info:
        source.fetch(item, tmp_path / "e")
    assert info.value.status == 503
    assert not any(p.is_file() for d in "bcde" for p in (tmp_path / d).glob("*"))  # nothing left


# ---------------------------------------------------------------------------------------------
# DicomWebSource and STOW-RS against a real Orthanc

DATES = [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 5)]
# The Orthanc is shared by the session: every listing here is bounded to these tests' dates.
WINDOW = {"study_date_from": "2024-03-01", "study_date_to": "2024-03-05"}


@pytest.fixture(scope="module")
def pacs(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Written]:
    """Three studies (the second with two views) pushed with STOW-RS, by SOP Instance UID."""
    folder = tmp_path_factory.mktemp("stow")
    written = [
        _bto(folder / f"{study}-{view}.dcm", study, view, DATES[study - 1], 10 * study + view)
        for study, view in [(1, 0), (2, 0), (2, 1), (3, 0)]
    ]
    stored = store_instances(orthanc.dicomweb_url, [w[0] for w in written], auth=orthanc.auth)
    by_uid = {_sop_uid(w[0]): w for w in written}
    assert sorted(stored) == sorted(by_uid)
    return by_uid


def _web(orthanc: OrthancServer, **options: object) -> DicomWebSource:
    return DicomWebSource(
        url=orthanc.dicomweb_url, username=orthanc.username, password=orthanc.password, **options
    )


def test_qido_lists_every_instance(orthanc: OrthancServer, pacs: dict) -> None:
    items = _web(orthanc, page_size=1, **WINDOW).list_items()  # page_size=1 exercises pagination
    expected = sorted(
        f"dicomweb://{meta.study_instance_uid}/{meta.series_instance_uid}/{uid}"
        for uid, (_, meta, _) in pacs.items()
    )
    assert [i.uri for i in items] == expected
    assert all(i.version == i.uri.rsplit("/", 1)[1] and i.size is None for i in items)


@pytest.mark.parametrize(
    ("options", "studies"),
    [
        ({"study_date_from": "2024-03-02", "study_date_to": "20240304"}, {2}),
        ({"study_date_from": "20240302", "study_date_to": "20240305"}, {2, 3}),
        ({"study_date_from": "2024-03-01", "study_date_to": "2024-03-01"}, {1}),
        ({"study_date_from": "2024-03-03", "study_date_to": "2024-03-04"}, set()),
        ({**WINDOW, "modalities_in_study": "CT"}, set()),
        ({**WINDOW, "modalities_in_study": "CT,MG"}, {1, 2, 3}),
        ({**WINDOW, "modalities_in_study": None}, {1, 2, 3}),
    ],
)
def test_qido_filters(orthanc: OrthancServer, pacs: dict, options: dict, studies: set[int]) -> None:
    listed = {i.uri.split("/")[2] for i in _web(orthanc, **options).list_items()}
    assert listed == {derived_uid("study", s) for s in studies}


def test_wado_fetch_round_trips_pixels(orthanc: OrthancServer, pacs: dict, tmp_path: Path) -> None:
    source = dicom_source_from_uri(
        orthanc.dicomweb_url.replace("http://", "dicomweb+http://"),
        username=orthanc.username, password=orthanc.password, **WINDOW,
    )
    items = source.list_items()
    assert len(items) == len(pacs)
    for item in items:
        path = source.fetch(item, tmp_path)
        original, meta, volume = pacs[item.version]
        assert path == tmp_path / f"{item.version}.dcm"
        header = pydicom.dcmread(path, stop_before_pixels=True)
        assert header.SOPInstanceUID == item.version
        assert header.file_meta.TransferSyntaxUID == JPEG2000_LOSSLESS  # not transcoded
        np.testing.assert_array_equal(read_frames(path), stored_pixels(volume, meta))
        np.testing.assert_array_equal(read_frames(path), read_frames(original))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{uid}.dcm" for uid in pacs)


def test_wado_open_local_cleans_up(orthanc: OrthancServer, pacs: dict) -> None:
    source = _web(orthanc, **WINDOW)
    item = source.list_items()[0]
    with source.open_local(item) as local:
        assert _sop_uid(local) == item.version
    assert not local.exists() and not local.parent.exists()


def test_wado_missing_and_foreign_items(orthanc: OrthancServer, pacs: dict, tmp_path: Path) -> None:
    source = _web(orthanc)
    study, series = derived_uid("study", 1), derived_uid("series", 1, 0)
    with pytest.raises(SourceItemNotFoundError):
        source.fetch(SourceItem(f"dicomweb://{study}/{series}/1.2.3.4", None, "1.2.3.4"), tmp_path)
    for uri in ["dicomweb://1.2/3.4", "dicomweb://1/2/../5", "s3://b/k", f"dicomweb://{study}/x/1"]:
        with pytest.raises(ForeignItemError):
            source.fetch(SourceItem(uri, None, "1"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_dicomweb_wrong_credentials(orthanc: OrthancServer, pacs: dict, tmp_path: Path) -> None:
    with pytest.raises(DicomWebError) as info:
        DicomWebSource(url=orthanc.dicomweb_url, username="tomosight", password="bad").list_items()
    assert info.value.status == 401
    with pytest.raises(DicomWebError) as info:
        store_instances(orthanc.dicomweb_url, [next(iter(pacs.values()))[0]])
    assert info.value.status == 401


def test_stow_reports_refused_files_stores_the_rest(orthanc: OrthancServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 64)
    good, _, _ = _bto(tmp_path / "good.dcm", 9, 0, dt.date(1999, 12, 31), 9)
    with pytest.raises(StowError) as info:
        store_instances(orthanc.dicomweb_url, [bad, good], auth=orthanc.auth)
    assert info.value.stored == [_sop_uid(good)]
    assert list(info.value.failed) == [str(bad)] and "HTTP 400" in info.value.failed[str(bad)]
    source = _web(orthanc, study_date_from="19991231", study_date_to="19991231")
    assert [i.version for i in source.list_items()] == [_sop_uid(good)]
    with pytest.raises(FileNotFoundError):
        store_instances(orthanc.dicomweb_url, [tmp_path / "missing.dcm"], auth=orthanc.auth)
    assert store_instances(orthanc.dicomweb_url, [], auth=orthanc.auth) == []


def test_orthanc_fixture_requires_credentials(orthanc: OrthancServer) -> None:
    system = requests.get(f"{orthanc.base_url}/system", auth=orthanc.auth, timeout=5).json()
    assert system["HttpPort"] == int(orthanc.base_url.rsplit(":", 1)[1])
    assert requests.get(f"{orthanc.base_url}/system", timeout=5).status_code == 401


def test_missing_orthanc_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import orthanc as support

    monkeypatch.setattr(support, "orthanc_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        support.require_orthanc()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        support.require_orthanc()
