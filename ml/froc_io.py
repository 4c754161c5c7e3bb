"""Read and validate the three DBTex FROC inputs: labels, GT boxes and predictions.

Each input is a CSV path or an in-memory table (polars, or pandas when it is
already imported).  Every problem raises :class:`FrocInputError` naming the input,
the row and the column; CSV rows are 1-based data rows (the header excluded),
DataFrame rows are 0-based positions.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import polars as pl

if TYPE_CHECKING:
    import pandas as pd

FrocSource: TypeAlias = "str | os.PathLike[str] | pl.DataFrame | pd.DataFrame"
"""A CSV path, a polars DataFrame or a pandas DataFrame."""

KEY = ("StudyUID", "View")
VIEW_PATTERN = r"^(?:lcc|lmlo|rcc|rmlo)[0-9]*$"
DATAFRAME = "<dataframe>"


class FrocInputError(ValueError):
    """An evaluation input is missing, malformed or unusable.

    ``source`` is the file name or ``"<dataframe>"``; ``row`` is a 1-based data
    row for files and a 0-based position for DataFrames (``None`` when the
    problem is not tied to one row); ``column`` is the column name or ``None``.
    """

    def __init__(
        self, message: str, *, source: str, row: int | None = None, column: str | None = None
    ) -> None:
        super().__init__(message)
        self.source = source
        self.row = row
        self.column = column


@dataclass(frozen=True)
class TableSpec:
    """Columns one input must provide and the checks they get."""

    role: str
    numeric: tuple[str, ...] = ()
    non_negative: tuple[str, ...] = ()


LABELS = TableSpec("labels")
BOXES = TableSpec(
    "boxes",
    numeric=("X", "Y", "Width", "Height", "Slice", "VolumeSlices"),
    non_negative=("Width", "Height"),
)
PREDICTIONS = TableSpec(
    "predictions",
    numeric=("X", "Y", "Width", "Height", "Z", "Depth", "Score"),
    non_negative=("Width", "Height"),
)


@dataclass(frozen=True)
class _Origin:
    """Where a table came from, for error messages."""

    role: str
    name: str
    is_file: bool

    def fail(
        self, problem: str, row: int | None = None, column: str | None = None
    ) -> FrocInputError:
        """Build the error for ``problem`` at 0-based position ``row`` and ``column``."""
        where = [f"{self.role} {self.name}"]
        reported = None
        if row is not None:
            reported = row + 1 if self.is_file else row
            where.append(
                f"data row {reported} (1-based, header excluded)"
                if self.is_file
                else f"row {reported} (0-based position)"
            )
        if column is not None:
            where.append(f"column {column!r}")
        return FrocInputError(
            f"{', '.join(where)}: {problem}", source=self.name, row=reported, column=column
        )


def read_table(source: FrocSource, spec: TableSpec) -> pl.DataFrame:
    """Load ``source`` and return only the columns ``spec`` needs, validated.

    Key columns come back as strings, numeric ones as finite ``Float64``.
    """
    frame, origin = _load(source, spec.role)
    needed = (*KEY, *spec.numeric)
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise origin.fail(
            f"missing column(s) {', '.join(map(repr, missing))}; found {list(frame.columns)}"
        )
    if frame.height == 0:
        raise origin.fail("no data rows")
    frame = frame.select(needed)
    columns = [_key_column(frame, name, origin) for name in KEY]
    columns += [_numeric_column(frame, name, origin) for name in spec.numeric]
    out = pl.DataFrame(columns)
    for name in spec.non_negative:
        _first_bad(out[name] < 0, origin, name, "{value:g} is negative", out[name])
    return out


def source_name(source: FrocSource) -> str:
    """How errors name ``source``: its path, or ``"<dataframe>"``."""
    return str(source) if isinstance(source, (str, os.PathLike)) else DATAFRAME


def _load(source: FrocSource, role: str) -> tuple[pl.DataFrame, _Origin]:
    """Read a CSV path or adopt a DataFrame, recording its origin."""
    if isinstance(source, pl.DataFrame):
        return source, _Origin(role, DATAFRAME, is_file=False)
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(source, pandas.DataFrame):
        origin = _Origin(role, DATAFRAME, is_file=False)
        try:
            return pl.from_pandas(source.reset_index(drop=True), nan_to_null=False), origin
        except Exception as exc:  # pyarrow raises several unrelated types for mixed columns
            raise origin.fail(f"cannot convert the pandas DataFrame: {exc}") from None
    if not isinstance(source, (str, os.PathLike)):
        raise FrocInputError(
            f"{role}: expected a CSV path or a DataFrame, got {type(source).__name__}",
            source=repr(source),
        )
    origin = _Origin(role, str(source), is_file=True)
    if not Path(source).is_file():
        raise origin.fail("file not found")
    try:
        return pl.read_csv(source, infer_schema=False), origin
    except pl.exceptions.NoDataError:
        raise origin.fail("the file is empty (no header)") from None
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise origin.fail(f"cannot parse CSV: {exc}") from None


def _key_column(frame: pl.DataFrame, name: str, origin: _Origin) -> pl.Series:
    """A key column as strings; no missing values, views must be DBT view names."""
    column = frame[name]
    if column.dtype != pl.String:
        column = column.cast(pl.String)
    _first_bad(column.is_null(), origin, name, "missing value")
    if name == "View":
        bad = ~column.str.contains(VIEW_PATTERN)
        _first_bad(
            bad,
            origin,
            name,
            "unknown view {value!r}; expected lcc, lmlo, rcc or rmlo (lowercase), "
            "optionally followed by digits such as rmlo1",
            column,
        )
    return column


def _numeric_column(frame: pl.DataFrame, name: str, origin: _Origin) -> pl.Series:
    """A numeric column as finite Float64, parsing strings strictly."""
    column = frame[name]
    if column.dtype == pl.String:
        parsed = column.str.strip_chars().cast(pl.Float64, strict=False)
        _first_bad(column.is_null(), origin, name, "missing value")
        _first_bad(parsed.is_null(), origin, name, "{value!r} is not a number", column)
    elif column.dtype.is_numeric() or column.dtype == pl.Boolean:
        parsed = column.cast(pl.Float64)
        _first_bad(parsed.is_null(), origin, name, "missing value")
    else:
        raise origin.fail(f"unsupported column type {column.dtype}", column=name)
    _first_bad(~parsed.is_finite(), origin, name, "{value!r} is not a finite number", parsed)
    return parsed.alias(name)


def _first_bad(
    bad: pl.Series,
    origin: _Origin,
    column: str,
    problem: str,
    values: pl.Series | None = None,
) -> None:
    """Raise for the first ``True`` in ``bad``; ``{value}`` in ``problem`` shows its value."""
    if not bad.any():
        return
    row = int(bad.arg_true()[0])
    value = values[row] if values is not None else None
    raise origin.fail(problem.format(value=value), row=row, column=column)
