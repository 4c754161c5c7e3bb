"""Tests for the data contracts in ``schemas`` and their Parquet I/O."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import date, datetime, timezone

import pandera.polars as pa
import polars as pl
import pyarrow.parquet as pq
import pytest

import schemas
from schemas import (
    CONTRACTS,
    BoxPredictions,
    Boxes,
    ContractError,
    ExamLabels,
    ExamPredictions,
    FilePaths,
    Predictions,
    Preprocessed,
    SchemaMismatchError,
    Splits,
    read_parquet,
    read_parquet_info,
    validate,
    write_parquet,
)
from schemas.registry import register_contract

SHA = "0123456789abcdef" * 4


def file_paths() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "PatientID": ["DBT-P00001", "DBT-P00001", "DBT-P00002"],
            "StudyUID": ["DBT-S00001", "DBT-S00001", "DBT-S00002"],
            "View": ["lcc", "rmlo1", "rcc"],
            "dicom_uri": ["raw/a.dcm", "raw/b.dcm", "raw/c.dcm"],
            "StudyDate": [date(2000, 1, 1)] * 3,
            "vendor": ["HOLOGIC Inc.", None, "HOLOGIC Inc."],
            "rows": [64, 64, 32],
            "columns": [48, 48, 24],
            "frames": [5, 7, 3],
            "sha256": [SHA, SHA[::-1], SHA],
            "classic_path": ["x/1-1.dcm", None, "y/1-1.dcm"],
        }
    )


def exam_labels() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "PatientID": ["DBT-P00001", "DBT-P00001", "DBT-P00002"],
            "StudyUID": ["DBT-S00001", "DBT-S00001", "DBT-S00002"],
            "View": ["lcc", "lmlo", "rcc"],
            "Normal": [0, 0, 1],
            "Actionable": [0, 0, 0],
            "Benign": [0, 0, 0],
            "Cancer": [1, 1, 0],
        }
    )


def boxes() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "PatientID": ["DBT-P00013", "DBT-P00013"],
            "StudyUID": ["DBT-S00163", "DBT-S00163"],
            "View": ["rmlo", "rmlo"],
            "Subject": [0, 0],
            "Slice": [16, 48],
            "X": [1116, 0],
            "Y": [1724, 0],
            "Width": [218, 58],
            "Height": [105, 55],
            "Class": ["benign", "cancer"],
            "AD": [0, 1],
            "VolumeSlices": [49, 49],
        }
    )


def predictions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "StudyUID": ["DBT-S00001", "DBT-S00001"],
            "View": ["lcc", "lmlo"],
            "prob_malignant": [0.0, 1.0],
            "model_version": ["resnet18@3", "resnet18@3"],
        }
    )


def exam_predictions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "StudyUID": ["DBT-S00001", "DBT-S00002"],
            "prob_malignant": [0.25, 0.75],
            "model_version": ["resnet18@3", "resnet18@3"],
            "PatientID": ["DBT-P00001", "DBT-P00002"],
        }
    )


def box_predictions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "PatientID": ["DBT-P00013", "DBT-P00013"],
            "StudyUID": ["DBT-S00163", "DBT-S00163"],
            "View": ["rmlo", "rmlo"],
            "X": [1100, 10],
            "Width": [200, 30],
            "Y": [1700, 20],
            "Height": [100, 40],
            "Z": [14, 3],
            "Depth": [4, -1],
            "Score": [0.9, -2.5],
        }
    )


def preprocessed() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "StudyUID": ["DBT-S00001", "DBT-S00001"],
            "View": ["lcc", "lcc"],
            "slice_strategy": ["central", "slab_mip"],
            "height": [512, 512],
            "width": [384, 384],
            "n_slices": [1, 3],
            "tensor_uri": ["t/a.npy", "t/b.npy"],
        }
    )


def splits() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "PatientID": ["DBT-P00001", "DBT-P00001", "DBT-P00002", "DBT-P00003"],
            "StudyUID": ["DBT-S00001", "DBT-S00009", "DBT-S00002", "DBT-S00003"],
            "split": ["train", "train", "train", "test"],
            "fold": [0, 0, 1, None],
        }
    )


def quarantine() -> pl.DataFrame:
    return pl.DataFrame(
        {"source_uri": ["s3://b/landing/a.dcm", "/data/b.dcm"], "stage": ["scan", "qc"],
         "reason": ["not_dicom", "corrupt_codestream"], "detail": [None, "cannot decode frame 30"]},
        schema={"source_uri": pl.String, "stage": pl.String, "reason": pl.String, "detail": pl.String},
    )  # fmt: skip


VALID: dict[str, Callable[[], pl.DataFrame]] = {
    "FilePaths": file_paths,
    "ExamLabels": exam_labels,
    "Boxes": boxes,
    "Predictions": predictions,
    "ExamPredictions": exam_predictions,
    "BoxPredictions": box_predictions,
    "Preprocessed": preprocessed,
    "Splits": splits,
    "Quarantine": quarantine,
}


def set_row(df: pl.DataFrame, column: str, row: int, value: object) -> pl.DataFrame:
    """Return ``df`` with ``column`` set to ``value`` on one row (dtype kept where it fits)."""
    values = df[column].to_list()
    values[row] = value
    return df.with_columns(pl.Series(column, values, dtype=df.schema[column], strict=False))


def rejected(df: pl.DataFrame, model: type) -> str:
    """Validate ``df``, expecting a ContractError; return its message."""
    with pytest.raises(ContractError) as info:
        validate(df, model)
    assert info.value.schema_name == model.__name__
    return str(info.value)


# --- valid frames -----------------------------------------------------------------------------


def test_every_contract_has_a_valid_example() -> None:
    assert set(VALID) == set(CONTRACTS)
    assert set(schemas.SCHEMA_VERSIONS) == set(CONTRACTS)


@pytest.mark.parametrize("name", sorted(VALID))
def test_valid_frame_passes(name: str) -> None:
    df = VALID[name]()
    out = validate(df, CONTRACTS[name])
    assert out.equals(df)


def test_optional_columns_may_be_absent() -> None:
    validate(file_paths().drop("classic_path"), FilePaths)
    validate(predictions(), Predictions)  # no PatientID
    validate(box_predictions().drop("PatientID"), BoxPredictions)


def test_non_strict_contracts_keep_extra_columns() -> None:
    ingest = file_paths().with_columns(TransferSyntaxUID=pl.lit("1.2.840.10008.1.2.4.90"))
    out = validate(ingest, FilePaths)
    assert "TransferSyntaxUID" in out.columns
    out = validate(box_predictions().with_columns(label=pl.lit("mass")), BoxPredictions)
    assert "label" in out.columns


def test_narrow_numeric_columns_are_widened() -> None:
    df = boxes().with_columns(pl.col("Slice", "Width").cast(pl.Int32), pl.col("AD").cast(pl.UInt8))
    out = validate(df, Boxes)
    assert out.schema["Slice"] == pl.Int64 and out.schema["AD"] == pl.Int64
    narrow = predictions().with_columns(pl.col("prob_malignant").cast(pl.Float32))
    out = validate(narrow, Predictions)
    assert out.schema["prob_malignant"] == pl.Float64


def test_all_null_columns_take_the_declared_type_only_where_nullable() -> None:
    df = file_paths().with_columns(vendor=None, classic_path=None)
    assert df.schema["vendor"] == pl.Null
    out = validate(df, FilePaths)
    assert out.schema["vendor"] == pl.String and out.schema["classic_path"] == pl.String
    out = validate(splits().with_columns(fold=None), Splits)
    assert out.schema["fold"] == pl.Int64
    msg = rejected(file_paths().with_columns(dicom_uri=None), FilePaths)
    assert "column 'dicom_uri': wrong type Null, expected String" in msg


# --- rejections -------------------------------------------------------------------------------


def test_wrong_type_is_rejected() -> None:
    msg = rejected(boxes().with_columns(pl.col("Slice").cast(pl.String)), Boxes)
    assert "column 'Slice': wrong type String, expected Int64" in msg
    msg = rejected(boxes().with_columns(pl.col("Width").cast(pl.Float64)), Boxes)
    assert "column 'Width': wrong type Float64" in msg
    # strings are never parsed into numbers
    text = predictions().with_columns(pl.col("prob_malignant").cast(pl.String))
    msg = rejected(text, Predictions)
    assert "column 'prob_malignant': wrong type String, expected Float64" in msg
    msg = rejected(file_paths().with_columns(pl.col("StudyDate").cast(pl.String)), FilePaths)
    assert "column 'StudyDate': wrong type String, expected Date" in msg


def test_missing_column_is_rejected() -> None:
    msg = rejected(exam_labels().drop("Cancer"), ExamLabels)
    assert "column 'Cancer': missing" in msg
    # the flag check cannot run without the column; that echo is not reported
    assert "exactly_one_flag" not in msg
    assert "column 'sha256': missing" in rejected(file_paths().drop("sha256"), FilePaths)
    mistyped = exam_labels().with_columns(pl.col("Cancer").cast(pl.String))
    assert "exactly_one_flag" not in rejected(mistyped, ExamLabels)


@pytest.mark.parametrize(
    ("name", "column", "value"),
    [
        ("FilePaths", "frames", 0),
        ("FilePaths", "rows", -1),
        ("ExamLabels", "Normal", 2),
        ("Boxes", "Slice", -1),
        ("Boxes", "X", -3),
        ("Boxes", "Height", 0),
        ("Boxes", "AD", 2),
        ("Boxes", "Class", "malignant"),
        ("Predictions", "prob_malignant", 1.5),
        ("ExamPredictions", "prob_malignant", -0.1),
        ("BoxPredictions", "Width", 0),
        ("Preprocessed", "slice_strategy", "slab"),
        ("Preprocessed", "n_slices", 0),
        ("Splits", "split", "validation"),
        ("Splits", "fold", -1),
    ],
)
def test_out_of_range_value_is_rejected(name: str, column: str, value: object) -> None:
    msg = rejected(set_row(VALID[name](), column, 1, value), CONTRACTS[name])
    assert f"column '{column}'" in msg
    assert f"row 1: {value}" in msg


def test_exactly_one_flag_is_enforced() -> None:
    both = exam_labels().with_columns(pl.lit(1).cast(pl.Int64).alias("Benign"))
    msg = rejected(both, ExamLabels)
    assert "frame check exactly_one_flag failed on 3 row(s)" in msg
    none = exam_labels().with_columns(pl.lit(0).cast(pl.Int64).alias("Normal"))
    msg = rejected(none, ExamLabels)
    assert "exactly_one_flag failed on 1 row(s), e.g. row 2:" in msg
    assert '"View":"rcc"' in msg


@pytest.mark.parametrize("bad", ["LCC", "lcc ", "xcc", "lml", "l_cc", "rmlo1a", "", "lcc١"])
def test_bad_view_name_is_rejected(bad: str) -> None:
    for name in ("FilePaths", "Predictions", "BoxPredictions"):
        msg = rejected(set_row(VALID[name](), "View", 0, bad), CONTRACTS[name])
        assert "column 'View': str_matches" in msg


def test_sha256_must_be_lowercase_hex() -> None:
    for bad in (SHA.upper(), SHA[:-1], SHA + "0", "g" * 64):
        df = file_paths().with_columns(pl.lit(bad).alias("sha256"))
        assert "column 'sha256'" in rejected(df, FilePaths)


def test_slice_must_lie_inside_the_volume() -> None:
    msg = rejected(boxes().with_columns(pl.Series("Slice", [48, 49])), Boxes)
    assert "frame check slice_within_volume failed on 1 row(s), e.g. row 1:" in msg


def test_nan_and_inf_are_rejected() -> None:
    msg = rejected(set_row(predictions(), "prob_malignant", 1, float("nan")), Predictions)
    assert "column 'prob_malignant': null or NaN values on 1 row(s), e.g. row 1: NaN" in msg
    msg = rejected(set_row(box_predictions(), "Score", 0, float("nan")), BoxPredictions)
    assert "column 'Score': null or NaN values" in msg
    msg = rejected(set_row(box_predictions(), "Score", 1, float("-inf")), BoxPredictions)
    assert "column 'Score': is_finite failed on 1 row(s), e.g. row 1: -inf" in msg


def test_nulls_rejected_where_not_nullable() -> None:
    df = exam_labels().with_columns(pl.Series("PatientID", ["DBT-P00001", None, "DBT-P00002"]))
    assert "column 'PatientID': null or NaN values on 1 row(s)" in rejected(df, ExamLabels)


def test_empty_identifiers_are_rejected() -> None:
    df = predictions().with_columns(pl.Series("model_version", ["", "v1"]))
    assert "column 'model_version': str_length" in rejected(df, Predictions)


def test_strict_contract_rejects_extra_column() -> None:
    msg = rejected(exam_labels().with_columns(pl.lit(1).alias("Birads")), ExamLabels)
    assert "column 'Birads': not in the contract" in msg


def test_duplicate_keys_are_rejected() -> None:
    df = file_paths().with_columns(pl.Series("View", ["lcc", "lcc", "rcc"]))
    msg = rejected(df, FilePaths)
    assert "columns (StudyUID, View): duplicate keys on 2 row(s): rows 0, 1" in msg
    df = preprocessed().with_columns(pl.lit("t/same.npy").alias("tensor_uri"))
    assert "column 'tensor_uri': duplicate values on 2 row(s)" in rejected(df, Preprocessed)


def test_a_patient_never_straddles_splits_or_folds() -> None:
    straddle = splits().with_columns(pl.Series("split", ["train", "val", "train", "test"]))
    msg = rejected(straddle, Splits)
    assert "frame check one_split_per_patient failed on 2 row(s), e.g. row 0:" in msg
    fold = splits().with_columns(pl.Series("fold", [0, 1, 1, None]))
    assert "one_split_per_patient failed on 2 row(s)" in rejected(fold, Splits)


def test_all_failures_are_reported_together() -> None:
    df = boxes().drop("Class").with_columns(
        pl.Series("View", ["rmlo", "RMLO"]), pl.Series("Width", [218, 0]), pl.lit("x").alias("note")
    )
    with pytest.raises(ContractError) as info:
        validate(df, Boxes)
    msg = str(info.value)
    assert msg.startswith("Boxes contract violated (4 problem(s)):")
    for part in ("'Class': missing", "'View': str_matches", "'Width': greater_than", "'note': not"):
        assert part in msg
    assert info.value.failures is not None and info.value.failures.height >= 4
    again = pickle.loads(pickle.dumps(info.value))
    assert str(again) == msg and again.schema_name == "Boxes"


def test_non_frame_input_and_unregistered_model_raise_type_error() -> None:
    with pytest.raises(TypeError, match="LazyFrame"):
        validate(boxes().lazy(), Boxes)  # type: ignore[arg-type]
    class Unregistered(pa.DataFrameModel):
        X: int

    with pytest.raises(TypeError, match="not a registered"):
        validate(boxes(), Unregistered)


def test_registry_rejects_bad_versions_and_duplicate_names() -> None:
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        register_contract("1")
    with pytest.raises(ValueError, match="already registered"):
        register_contract("9.0")(type("Boxes", (), {}))
    assert CONTRACTS["Boxes"] is Boxes


# --- Parquet ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALID))
def test_parquet_round_trip_keeps_data_and_metadata(tmp_path, name: str) -> None:
    model = CONTRACTS[name]
    df = VALID[name]()
    before = datetime.now(timezone.utc)
    path = write_parquet(df, tmp_path / "sub" / f"{name}.parquet", model, metadata={"run_id": "r1"})
    after = datetime.now(timezone.utc)
    back, info = read_parquet(path, model)
    assert back.equals(df) and back.schema == df.schema
    assert info.schema == name and info.schema_version == schemas.SCHEMA_VERSIONS[name]
    assert info.created_at.utcoffset() is not None and before <= info.created_at <= after
    assert info.extra == {"run_id": "r1"}
    # the metadata is in the file itself, visible to any Parquet reader
    raw = pq.read_metadata(path).metadata
    assert raw[b"tomosight.schema"] == name.encode()
    assert raw[b"tomosight.created_at"].decode().endswith("+00:00")
    assert read_parquet_info(path) == info
    assert read_parquet(path)[0].equals(df)


def test_write_leaves_no_temp_file_and_replaces_existing(tmp_path) -> None:
    path = tmp_path / "labels.parquet"
    write_parquet(exam_labels(), path, ExamLabels)
    write_parquet(exam_labels().head(1), path, ExamLabels)
    assert [p.name for p in tmp_path.iterdir()] == ["labels.parquet"]
    assert read_parquet(path, ExamLabels)[0].height == 1


def test_invalid_frame_is_never_written(tmp_path) -> None:
    path = tmp_path / "labels.parquet"
    with pytest.raises(ContractError, match="Cancer"):
        write_parquet(exam_labels().drop("Cancer"), path, ExamLabels)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path, monkeypatch) -> None:
    path = tmp_path / "boxes.parquet"
    write_parquet(boxes(), path, Boxes)
    original = pl.DataFrame.write_parquet

    def half_write(self: pl.DataFrame, file, **kwargs) -> None:
        original(self.head(1), file, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_parquet(boxes().head(1), path, Boxes)
    assert [p.name for p in tmp_path.iterdir()] == ["boxes.parquet"]
    assert read_parquet(path, Boxes)[0].height == 2


def test_reserved_or_non_string_metadata_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="reserved"):
        write_parquet(boxes(), tmp_path / "b.parquet", Boxes, metadata={"tomosight.schema": "x"})
    with pytest.raises(TypeError, match="strings"):
        not_text: dict = {"n": 3}
        write_parquet(boxes(), tmp_path / "b.parquet", Boxes, metadata=not_text)
    assert list(tmp_path.iterdir()) == []


def contract_metadata(name: str, version: str) -> dict[str, str]:
    """Key/value metadata as write_parquet stores it, for files written by hand."""
    return {
        "tomosight.schema": name,
        "tomosight.schema_version": version,
        "tomosight.created_at": "2024-01-01T00:00:00+00:00",
    }


def test_reading_with_the_wrong_model_raises(tmp_path) -> None:
    path = write_parquet(predictions(), tmp_path / "p.parquet", Predictions)
    expected = "written as contract 'Predictions', read as 'ExamPredictions'"
    with pytest.raises(SchemaMismatchError, match=expected):
        read_parquet(path, ExamPredictions)


def test_incompatible_version_raises(tmp_path, monkeypatch) -> None:
    path = write_parquet(predictions(), tmp_path / "p.parquet", Predictions)
    monkeypatch.setitem(schemas.SCHEMA_VERSIONS, "Predictions", "2.0")
    with pytest.raises(SchemaMismatchError, match="version 1.0 is incompatible"):
        read_parquet(path, Predictions)
    monkeypatch.setitem(schemas.SCHEMA_VERSIONS, "Predictions", "1.7")
    assert read_parquet(path, Predictions)[1].schema_version == "1.0"


def test_file_without_contract_metadata_raises(tmp_path) -> None:
    path = tmp_path / "plain.parquet"
    predictions().write_parquet(path)
    with pytest.raises(SchemaMismatchError, match="no tomosight contract metadata"):
        read_parquet(path)
    bad = tmp_path / "bad.parquet"
    predictions().write_parquet(bad, metadata=contract_metadata("Predictions", "v1"))
    with pytest.raises(SchemaMismatchError, match="malformed"):
        read_parquet(bad, Predictions)


def test_reading_validates_rows(tmp_path) -> None:
    path = tmp_path / "p.parquet"
    out_of_range = predictions().with_columns(pl.lit(2.0).alias("prob_malignant"))
    out_of_range.write_parquet(path, metadata=contract_metadata("Predictions", "1.0"))
    with pytest.raises(ContractError, match="column 'prob_malignant': less_than_or_equal_to"):
        read_parquet(path, Predictions)
    df, info = read_parquet(path, Predictions, validate_rows=False)
    assert df.height == 2 and info.created_at == datetime(2024, 1, 1, tzinfo=timezone.utc)
