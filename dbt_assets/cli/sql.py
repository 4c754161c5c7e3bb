"""``tomosight sql``: query the warehouse (``<home>/warehouse.duckdb``) read-only."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

DEFAULT_HOME = "demo_home"
FORMATS = ("table", "csv", "json")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sql`` sub-command."""
    parser = subparsers.add_parser(
        "sql",
        help="run a read-only SQL query on the warehouse",
        description=(
            "Run one SQL query on <home>/warehouse.duckdb, opened read-only, and print the result. "
            "Views: filepaths, exam_labels, boxes, splits, predictions, exam_predictions; "
            "_meta says when each was refreshed and from which files."
        ),
    )
    parser.add_argument("query", help='SQL, e.g. "SELECT * FROM exam_predictions LIMIT 5"')
    parser.add_argument(
        "--home",
        help=f"tomosight home folder (default: $TOMOSIGHT_HOME, else ./{DEFAULT_HOME})",
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument(
        "--max-rows", type=int, default=100, help="rows shown by the table format (default 100)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the query and print it; 2 for a missing warehouse or a query DuckDB rejects."""
    from pathlib import Path

    from resources.warehouse import (
        WAREHOUSE_FILE,
        Warehouse,
        WarehouseError,
        WarehouseNotFoundError,
    )

    home = args.home or os.environ.get("TOMOSIGHT_HOME") or DEFAULT_HOME
    path = Path(home) / WAREHOUSE_FILE
    try:
        df = Warehouse(path=str(path)).query(args.query)
    except WarehouseNotFoundError:
        print(
            f"tomosight sql: error: no warehouse at {path}; materialise the pipeline "
            "(or run `tomosight demo`) first, or point --home / TOMOSIGHT_HOME at its home",
            file=sys.stderr,
        )
        return 2
    except WarehouseError as exc:
        print(f"tomosight sql: error: {exc}", file=sys.stderr)
        return 2
    try:
        text = render(df, args.format, args.max_rows)
    except ValueError as exc:
        print(f"tomosight sql: error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def render(df: pl.DataFrame, fmt: str, max_rows: int = 100) -> str:
    """``df`` as an aligned table, CSV or a JSON array of row objects."""
    import polars as pl

    if fmt == "csv":
        nested = [name for name, dtype in df.schema.items() if dtype.is_nested()]
        if nested:
            raise ValueError(f"CSV cannot hold nested columns {nested}; use --format json")
        return df.write_csv()
    if fmt == "json":
        return df.write_json()
    with pl.Config(
        tbl_rows=max(max_rows, 1),
        tbl_cols=-1,
        fmt_str_lengths=120,
        fmt_table_cell_list_len=10,
        tbl_width_chars=400,
    ):
        return str(df)
