"""Warehouse: DuckDB views over partition files, non-blocking refreshes, S3 mirroring."""

from __future__ import annotations

import fcntl
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest

from resources.object_store import ObjectStore
from resources.warehouse import (
    DEFAULT_SCHEMAS,
    LockTimeoutError,
    QueryError,
    ViewSourceError,
    Warehouse,
    WarehouseError,
    WarehouseNotFoundError,
    mirror_from_store,
)
from schemas import ExamPredictions, Splits
from tests.support.s3 import create_bucket, s3_server  # noqa: F401  (fixture)


def write_partition(folder: Path, day: str, **columns: list) -> Path:
    """Write one partition file ``<folder>/<day>.parquet`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{day}.parquet"
    pl.DataFrame(columns).write_parquet(path)
    return path


def leftovers(folder: Path) -> list[str]:
    """Half-built database files or WALs left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".building" in p.name or p.suffix == ".wal")


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    """Two filepaths partitions (the second adds a column) and one exam_predictions partition."""
    root = tmp_path / "store" / "tables"
    write_partition(root / "filepaths", "2024-03-01", StudyUID=["s1", "s2"], frames=[50, 60])
    write_partition(
        root / "filepaths", "2024-03-02", StudyUID=["s3"], frames=[70], vendor=["Hologic"]
    )
    write_partition(
        root / "exam_predictions",
        "2024-03-01",
        StudyUID=["s1", "s2"],
        PatientID=["p1", "p2"],
        model_version=["m1", "m1"],
        prob_malignant=[0.1, 0.9],
        split=["test", "test"],
    )
    return root


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse(path=str(tmp_path / "home" / "warehouse.duckdb"))


def test_views_union_partition_files(warehouse: Warehouse, tables: Path) -> None:
    infos = warehouse.refresh_views(
        {
            "filepaths": str(tables / "filepaths" / "*.parquet"),
            "exam_predictions": [tables / "exam_predictions" / "2024-03-01.parquet"],
        }
    )
    assert [Path(f).name for f in infos["filepaths"].files] == [
        "2024-03-01.parquet",
        "2024-03-02.parquet",
    ]
    df = warehouse.query("SELECT * FROM filepaths ORDER BY StudyUID")
    assert df["StudyUID"].to_list() == ["s1", "s2", "s3"]
    assert df["vendor"].to_list() == [None, None, "Hologic"]  # union_by_name
    joined = warehouse.query(
        "SELECT e.StudyUID, f.frames, e.prob_malignant FROM exam_predictions e "
        "JOIN filepaths f USING (StudyUID) ORDER BY e.prob_malignant DESC"
    )
    assert joined.rows() == [("s2", 60, 0.9), ("s1", 50, 0.1)]
    meta = warehouse.query("SELECT view, n_files, refreshed_at FROM _meta ORDER BY view")
    assert meta.select("view", "n_files").rows() == [("exam_predictions", 1), ("filepaths", 2)]
    assert meta["refreshed_at"].dtype.time_zone is not None
    assert warehouse.views()["filepaths"].columns == {
        "StudyUID": "VARCHAR",
        "frames": "BIGINT",
        "vendor": "VARCHAR",
    }
    assert leftovers(Path(warehouse.path).parent) == []


def test_empty_sources_give_typed_empty_views(warehouse: Warehouse, tmp_path: Path) -> None:
    nothing = str(tmp_path / "store" / "tables" / "{}" / "*.parquet")
    warehouse.refresh_views(
        {
            "splits": nothing.format("splits"),  # pandera model passed explicitly
            "boxes": nothing.format("boxes"),  # platform default (Boxes contract)
            "exam_predictions": [],  # platform default (ExamPredictions contract)
            "custom": nothing.format("custom"),
        },
        schemas={"splits": Splits, "custom": {"StudyUID": "VARCHAR", "score": "DOUBLE"}},
    )
    splits = warehouse.query("SELECT * FROM splits")
    assert splits.height == 0
    assert splits.schema == pl.Schema(
        {"PatientID": pl.String, "StudyUID": pl.String, "split": pl.String, "fold": pl.Int64}
    )
    assert warehouse.query("SELECT * FROM custom").schema == pl.Schema(
        {"StudyUID": pl.String, "score": pl.Float64}
    )
    assert warehouse.query("SELECT * FROM boxes").columns[:3] == ["PatientID", "StudyUID", "View"]
    exam = warehouse.query("SELECT * FROM exam_predictions")
    assert exam.height == 0
    assert exam.columns == list(ExamPredictions.to_schema().columns)
    assert DEFAULT_SCHEMAS["exam_predictions"] is ExamPredictions


def test_bad_sources_fail_and_keep_the_old_file(warehouse: Warehouse, tables: Path) -> None:
    warehouse.refresh_views({"filepaths": str(tables / "filepaths" / "*.parquet")})
    with pytest.raises(ViewSourceError, match="no schema"):
        warehouse.refresh_views({"unknown_view": str(tables / "nothing" / "*.parquet")})
    with pytest.raises(ViewSourceError, match="no such file"):
        warehouse.refresh_views({"boxes": str(tables / "boxes.parquet")})
    corrupt = tables / "filepaths" / "2024-03-03.parquet"
    corrupt.write_bytes(b"not parquet")
    with pytest.raises(ViewSourceError, match="filepaths"):
        warehouse.refresh_views({"filepaths": str(tables / "filepaths" / "*.parquet")})
    corrupt.unlink()
    for name in ["Filepaths", "_meta", "a-b", "x; DROP TABLE y", ""]:
        with pytest.raises(ViewSourceError, match="identifier"):
            warehouse.refresh_views({name: str(tables / "filepaths" / "*.parquet")})
    with pytest.raises(ViewSourceError, match="type"):
        warehouse.refresh_views({"v": []}, schemas={"v": {"a": "INT); DROP TABLE x; --"}})
    assert warehouse.query("SELECT count(*) AS n FROM filepaths")["n"][0] == 3
    assert leftovers(Path(warehouse.path).parent) == []


def test_refresh_keeps_other_views_and_picks_up_new_partitions(
    warehouse: Warehouse, tables: Path
) -> None:
    warehouse.refresh_views({"filepaths": str(tables / "filepaths" / "*.parquet")})
    warehouse.refresh_views({"exam_predictions": str(tables / "exam_predictions" / "*.parquet")})
    assert set(warehouse.views()) == {"filepaths", "exam_predictions"}
    write_partition(tables / "filepaths", "2024-03-04", StudyUID=["s4"], frames=[80])
    warehouse.refresh_views({"exam_predictions": str(tables / "exam_predictions" / "*.parquet")})
    assert warehouse.query("SELECT count(*) AS n FROM filepaths")["n"][0] == 4  # re-globbed
    # Every partition gone: the carried-over view stays, empty, with its last columns.
    for path in (tables / "filepaths").iterdir():
        path.unlink()
    warehouse.refresh_views({})
    empty = warehouse.query("SELECT * FROM filepaths")
    assert empty.height == 0 and empty.columns == ["StudyUID", "frames", "vendor"]
    warehouse.refresh_views({"splits": []}, keep_existing=False)
    assert set(warehouse.views()) == {"splits"}


def test_a_file_that_is_not_a_warehouse(warehouse: Warehouse, tables: Path) -> None:
    target = Path(warehouse.path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"something else")
    source = {"filepaths": str(tables / "filepaths" / "*.parquet")}
    with pytest.raises(WarehouseError, match="not a tomosight warehouse"):
        warehouse.refresh_views(source)
    assert target.read_bytes() == b"something else"
    warehouse.refresh_views(source, keep_existing=False)  # explicit rebuild replaces it
    assert warehouse.query("SELECT count(*) AS n FROM filepaths")["n"][0] == 3


def test_query_errors_are_typed(warehouse: Warehouse, tables: Path) -> None:
    with pytest.raises(WarehouseNotFoundError):
        warehouse.query("SELECT 1")
    warehouse.refresh_views({"filepaths": str(tables / "filepaths" / "*.parquet")})
    with pytest.raises(QueryError, match="nope"):
        warehouse.query("SELECT * FROM nope")
    with pytest.raises(QueryError, match="read-only"):
        warehouse.query("CREATE TABLE x AS SELECT 1")
    with pytest.raises(QueryError, match="read-only"):
        warehouse.query("DROP VIEW filepaths")
    assert warehouse.query("SELECT count(*) AS n FROM filepaths")["n"][0] == 3


def test_reader_is_not_blocked_and_sees_old_data_until_reconnect(
    warehouse: Warehouse, tables: Path
) -> None:
    first = tables / "filepaths" / "2024-03-01.parquet"
    warehouse.refresh_views({"filepaths": [first]})
    plain = duckdb.connect(warehouse.path, read_only=True)  # how an analyst's tool connects
    with warehouse.connect() as held:
        assert held.sql("SELECT count(*) FROM filepaths").fetchall() == [(2,)]
        started = time.monotonic()
        warehouse.refresh_views({"filepaths": str(tables / "filepaths" / "*.parquet")})
        assert time.monotonic() - started < 10  # not blocked by the open readers
        assert held.sql("SELECT count(*) FROM filepaths").fetchall() == [(2,)]  # old snapshot
        assert plain.sql("SELECT count(*) FROM filepaths").fetchall() == [(2,)]
        with warehouse.connect() as fresh:  # a reconnect sees the new file at once
            assert fresh.sql("SELECT count(*) FROM filepaths").fetchall() == [(3,)]
        assert warehouse.query("SELECT count(*) AS n FROM filepaths")["n"][0] == 3
    plain.close()


READER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import duckdb

    db, ready, stop, final = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    counts, errors, reads = set(), [], 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (stop.exists() and final in counts):
        try:
            con = duckdb.connect(db, read_only=True)
            counts.add(con.sql("SELECT count(*) FROM filepaths").fetchall()[0][0])
            con.close()
            reads += 1
        except Exception as exc:
            errors.append(repr(exc))
        ready.touch()
    print(json.dumps({"counts": sorted(counts), "errors": errors[:5], "reads": reads}))
    """
)


def test_second_process_reads_in_a_loop_during_refreshes(
    warehouse: Warehouse, tables: Path, tmp_path: Path
) -> None:
    folder = tables / "filepaths"
    small, both = [folder / "2024-03-01.parquet"], str(folder / "*.parquet")
    warehouse.refresh_views({"filepaths": small})
    ready, stop = tmp_path / "ready", tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER_SCRIPT, warehouse.path, str(ready), str(stop), "4"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline and reader.poll() is None:
            time.sleep(0.02)
        assert ready.exists(), "reader process did not start"
        for i in range(10):
            warehouse.refresh_views({"filepaths": small if i % 2 else both})
        write_partition(folder, "2024-03-09", StudyUID=["s9"], frames=[90])
        warehouse.refresh_views({"filepaths": both})  # final state: 4 rows
        stop.touch()
        out, _ = reader.communicate(timeout=90)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    report = json.loads(out)
    assert report["errors"] == []
    assert set(report["counts"]) <= {2, 3, 4} and 4 in report["counts"]
    assert report["reads"] > 1
    assert leftovers(Path(warehouse.path).parent) == []


def test_concurrent_refreshes_do_not_corrupt_or_lose_views(
    warehouse: Warehouse, tables: Path
) -> None:
    glob = {"a": str(tables / "filepaths" / "*.parquet"),
            "b": str(tables / "exam_predictions" / "*.parquet")}
    errors: list[BaseException] = []

    def refresher(writer: str) -> None:
        try:
            for i in range(8):  # each refresh adds one new view, keeping the others
                warehouse.refresh_views({f"{writer}{i}": glob[writer]})
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=refresher, args=(writer,)) for writer in glob]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # Serialised refreshes: no view lost to a refresh that started from an older file.
    assert set(warehouse.views()) == {f"{w}{i}" for w in glob for i in range(8)}
    assert warehouse.query("SELECT count(*) AS n FROM a7")["n"][0] == 3
    assert warehouse.query("SELECT count(*) AS n FROM b0")["n"][0] == 2
    assert leftovers(Path(warehouse.path).parent) == []


def test_refresh_waits_for_the_lock_then_times_out(warehouse: Warehouse, tables: Path) -> None:
    target = Path(warehouse.path)
    target.parent.mkdir(parents=True)
    impatient = Warehouse(path=warehouse.path, lock_timeout_s=0.3)
    with open(target.with_name(f".{target.name}.lock"), "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with pytest.raises(LockTimeoutError):
            impatient.refresh_views({"filepaths": str(tables / "filepaths" / "*.parquet")})
    impatient.refresh_views({"filepaths": str(tables / "filepaths" / "*.parquet")})
    assert impatient.query("SELECT count(*) AS n FROM filepaths")["n"][0] == 3


def test_mirror_from_s3_downloads_only_changes(s3_server: str, tmp_path: Path) -> None:
    store = ObjectStore(base_uri=f"s3://{create_bucket(s3_server)}/lake", endpoint_url=s3_server)
    frames = {f"2024-03-0{i}": pl.DataFrame({"StudyUID": [f"s{i}"], "frames": [i]}) for i in (1, 2)}
    for day, df in frames.items():
        store.write_parquet(f"tables/filepaths/{day}.parquet", df)
    store.put_bytes("tables/filepaths/README.txt", b"not a table")
    store.write_parquet("tables/other/2024-03-01.parquet", frames["2024-03-01"])
    cache = tmp_path / "mirror"

    first = mirror_from_store(store, "tables/filepaths", cache)
    assert (first.downloaded, first.removed) == (2, 0)
    assert [p.relative_to(cache).as_posix() for p in first.files] == [
        "tables/filepaths/2024-03-01.parquet",
        "tables/filepaths/2024-03-02.parquet",
    ]
    assert pl.read_parquet(first.files[1]).equals(frames["2024-03-02"])
    again = mirror_from_store(store, "tables/filepaths", cache)
    assert (again.downloaded, again.removed) == (0, 0)

    changed = pl.DataFrame({"StudyUID": ["s2", "s2b"], "frames": [2, 3]})
    store.write_parquet("tables/filepaths/2024-03-02.parquet", changed)
    store.delete("tables/filepaths/2024-03-01.parquet")
    third = mirror_from_store(store, "tables/filepaths", cache)
    assert (third.downloaded, third.removed) == (1, 1)
    assert not (cache / "tables/filepaths/2024-03-01.parquet").exists()
    assert pl.read_parquet(third.files[0]).equals(changed)
    assert not (cache / "tables/other").exists()  # other prefixes are left alone

    (cache / "tables/filepaths/2024-03-02.parquet").write_bytes(b"tampered")
    assert mirror_from_store(store, "tables/filepaths", cache).downloaded == 1
    (cache / ".mirror-manifest.json").write_text("{not json")
    assert mirror_from_store(store, "tables/filepaths/", cache).downloaded == 1
    assert mirror_from_store(store, "tables/filepaths", cache).downloaded == 0


def test_refresh_from_s3_and_local_stores(s3_server: str, tmp_path: Path) -> None:
    bucket = create_bucket(s3_server)
    for store in (
        ObjectStore(base_uri=f"s3://{bucket}/lake", endpoint_url=s3_server),
        ObjectStore(base_uri=str(tmp_path / "local_store")),
    ):
        kind = "local" if store.is_local else "s3"
        warehouse = Warehouse(path=str(tmp_path / kind / "w.duckdb"))
        store.write_parquet("tables/filepaths/2024-03-01.parquet", pl.DataFrame({"a": [1, 2]}))
        store.write_parquet("tables/filepaths/2024-03-02.parquet", pl.DataFrame({"a": [3]}))
        infos = warehouse.refresh_from_store(
            store, {"filepaths": "tables/filepaths", "splits": "tables/splits"}
        )
        assert warehouse.query("SELECT sum(a) AS s FROM filepaths")["s"][0] == 6
        assert warehouse.query("SELECT * FROM splits").columns == list(Splits.to_schema().columns)
        mirror = Path(warehouse.path).with_name("warehouse_mirror")
        assert mirror.exists() == (kind == "s3")  # a local store is read in place
        read_from = tmp_path / "local_store" if kind == "local" else mirror
        assert all(Path(file).is_relative_to(read_from) for file in infos["filepaths"].files)
        store.delete("tables/filepaths/2024-03-01.parquet")
        warehouse.refresh_from_store(store, {"filepaths": "tables/filepaths"})
        assert warehouse.query("SELECT sum(a) AS s FROM filepaths")["s"][0] == 3
        assert set(warehouse.views()) == {"filepaths", "splits"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A tomosight home whose warehouse has a 150-row exam_predictions view."""
    home = tmp_path / "tomosight_home"
    n = 150
    write_partition(
        home / "store" / "tables" / "exam_predictions",
        "2024-03-01",
        StudyUID=[f"s{i:03d}" for i in range(n)],
        PatientID=[f"p{i:03d}" for i in range(n)],
        model_version=["blob-1"] * n,
        prob_malignant=[i / n for i in range(n)],
        split=["test" if i % 3 else "val" for i in range(n)],
    )
    Warehouse(path=str(home / "warehouse.duckdb")).refresh_views(
        {"exam_predictions": str(home / "store" / "tables" / "exam_predictions" / "*.parquet")}
    )
    return home


def run_sql(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    from dbt_assets.cli import main

    code = main(["sql", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sql_cli_formats(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    query = (
        "SELECT split, count(*) AS n, round(avg(prob_malignant), 4) AS p "
        "FROM exam_predictions GROUP BY split ORDER BY split"
    )
    code, out, _ = run_sql(capsys, query, "--home", str(home), "--format", "csv")
    assert code == 0
    assert out.splitlines() == ["split,n,p", "test,100,0.5", "val,50,0.49"]
    code, out, _ = run_sql(capsys, query, "--home", str(home), "--format", "json")
    assert code == 0 and json.loads(out) == [
        {"split": "test", "n": 100, "p": 0.5},
        {"split": "val", "n": 50, "p": 0.49},
    ]
    code, out, _ = run_sql(capsys, query, "--home", str(home))
    assert code == 0 and "split" in out and "test" in out and "0.49" in out


def test_sql_cli_table_shows_all_rows_and_columns(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    everything = ("SELECT * FROM exam_predictions", "--home", str(home))
    code, out, _ = run_sql(capsys, *everything, "--max-rows", "150")
    assert code == 0
    for column in ("StudyUID", "PatientID", "model_version", "prob_malignant", "split"):
        assert column in out
    assert "s000" in out and "s075" in out and "s149" in out  # no middle rows elided
    code, out, _ = run_sql(capsys, *everything, "--max-rows", "10")
    assert "s000" in out and "s075" not in out and "…" in out


def test_sql_cli_home_from_env_and_default(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    query = "SELECT count(*) AS n FROM exam_predictions"
    monkeypatch.setenv("TOMOSIGHT_HOME", str(home))
    assert run_sql(capsys, query, "--format", "csv")[:2] == (0, "n\n150\n")
    monkeypatch.delenv("TOMOSIGHT_HOME")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_sql(capsys, query)
    assert code == 2 and "demo_home" in err and "no warehouse" in err
    (tmp_path / "demo_home").symlink_to(home)  # views hold absolute paths: keep the files
    assert run_sql(capsys, query, "--format", "json")[:2] == (0, '[{"n":150}]\n')


@pytest.mark.parametrize(
    ("query", "fmt", "message"),
    [
        ("SELEC 1", "table", "syntax"),
        ("SELECT * FROM no_such_view", "table", "no_such_view"),
        ("DROP VIEW exam_predictions", "table", "read-only"),
        ("SELECT [1, 2] AS xs", "csv", "nested"),
    ],
)
def test_sql_cli_bad_queries_exit_2(
    home: Path, capsys: pytest.CaptureFixture[str], query: str, fmt: str, message: str
) -> None:
    code, out, err = run_sql(capsys, query, "--home", str(home), "--format", fmt)
    assert code == 2 and out == ""
    assert err.startswith("tomosight sql: error:") and message in err
    count = ("SELECT count(*) AS n FROM exam_predictions", "--home", str(home), "--format", "csv")
    assert run_sql(capsys, *count)[1] == "n\n150\n"  # the warehouse is unharmed
