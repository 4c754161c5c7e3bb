"""Validate a polars frame against a contract and turn pandera's report into one readable error.

The only coercion is widening, done here rather than with pandera's ``coerce``
(which would also parse strings): narrower integer columns become Int64,
Float32 or integer columns become Float64 (exact up to 2**53), and all-null
columns (dtype Null) take the declared type of a nullable column.
"""

from __future__ import annotations

import re

import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context
from pandera.errors import SchemaErrors

from schemas.errors import ContractError
from schemas.registry import schema_name

MAX_EXAMPLES = 3
MAX_VALUE_CHARS = 200
_NARROW_INTS = (pl.Int8, pl.Int16, pl.Int32, pl.UInt8, pl.UInt16, pl.UInt32)
_TO_FLOAT = (pl.Float32, pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32)
_EXCEPTION_TAIL = re.compile(r";|Resolved plan|naive plan|\n")


def validate(df: pl.DataFrame, model: type[pa.DataFrameModel]) -> pl.DataFrame:
    """Return ``df`` widened and validated against ``model``.

    All failures are collected (``lazy=True``) and raised as one
    :class:`ContractError`. Validation runs at full depth whatever the
    ``PANDERA_*`` environment says.
    """
    name = schema_name(model)
    if not isinstance(df, pl.DataFrame):
        raise TypeError(f"{name}: expected a polars DataFrame, got {type(df).__name__}")
    schema = model.to_schema()
    try:
        with config_context(
            validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA
        ):
            return schema.validate(widen(df, schema), lazy=True)
    except SchemaErrors as exc:
        failures = exc.failure_cases
        message = format_failures(name, failures, schema.unique or [])
        raise ContractError(message, name, failures) from exc


def widen(df: pl.DataFrame, schema: pa.DataFrameSchema) -> pl.DataFrame:
    """Losslessly cast columns up to the types the schema expects (see module docstring)."""
    casts = []
    for name, column in schema.columns.items():
        if name not in df.columns:
            continue
        have, want = df.schema[name], column.dtype.type
        to_int = want == pl.Int64 and have in _NARROW_INTS
        to_float = want == pl.Float64 and have in _TO_FLOAT
        if to_int or to_float or (have == pl.Null and column.nullable):
            casts.append(pl.col(name).cast(want))
    return df.with_columns(casts) if casts else df


def format_failures(name: str, failures: pl.DataFrame, unique: list[str]) -> str:
    """Render pandera failure cases as one line per (column, check)."""
    missing = set(failures.filter(pl.col("check") == "column_in_dataframe")["failure_case"])
    wrong_type = set(failures.filter(pl.col("check").str.starts_with("dtype("))["column"])
    lines = []
    for (column, check), group in failures.group_by(["column", "check"], maintain_order=True):
        line = _describe(name, str(column), str(check), group, missing | wrong_type, unique)
        if line is not None:
            lines.append(f"  - {line}")
    return f"{name} contract violated ({len(lines)} problem(s)):\n" + "\n".join(lines)


def _describe(
    name: str, column: str, check: str, group: pl.DataFrame, broken: set[str], unique: list[str]
) -> str | None:
    """One readable line for a group of failures, or None when it only echoes another line."""
    cases = [str(v) for v in group["failure_case"]]
    if check == "column_in_dataframe":
        return "; ".join(f"column '{c}': missing (required by the contract)" for c in cases)
    if check == "column_in_schema":
        return "; ".join(f"column '{c}': not in the contract (strict contract)" for c in cases)
    expected = re.fullmatch(r"dtype\('(.*)'\)", check)
    if expected:
        return f"column '{column}': wrong type {cases[0]}, expected {expected.group(1)}"
    if check == "multiple_fields_uniqueness":
        rows = ", ".join(str(i) for i in group["index"].head(2 * MAX_EXAMPLES))
        keys = ", ".join(unique)
        return f"columns ({keys}): duplicate keys on {group.height} row(s): rows {rows}"
    subject = f"frame check {check}" if column == name else f"column '{column}': {check}"
    if group["index"].null_count() == group.height:
        reason = _EXCEPTION_TAIL.split(cases[0], maxsplit=1)[0]
        if column in broken or (column == name and broken):
            return None  # an echo of a missing or mistyped column, already reported
        return f"{subject} could not run: {_clip(reason)}"
    if check == "not_nullable":
        subject = f"column '{column}': null or NaN values"
    elif check == "field_uniqueness":
        subject = f"column '{column}': duplicate values"
    else:
        subject += " failed"
    return f"{subject} on {group.height} row(s), e.g. {_examples(group)}"


def _examples(group: pl.DataFrame) -> str:
    rows = group.head(MAX_EXAMPLES).iter_rows(named=True)
    return ", ".join(f"row {r['index']}: {_clip(str(r['failure_case']))}" for r in rows)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
