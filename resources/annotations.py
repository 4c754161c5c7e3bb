"""Where the exam labels and GT boxes come from: Duke-format CSVs or the project's Parquet contracts."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from ml.catalog import find_duke_csvs


class AnnotationsResource(dg.ConfigurableResource):
    """Label and box tables of a dataset.

    ``labels_path``/``boxes_path`` name CSV (Duke columns) or Parquet files; when unset,
    the Duke CSVs are looked up in ``dataset_dir`` (``BCS-DBT labels-<split>[-v2].csv``).
    Missing tables read as empty (a PACS feed has no labels).
    """

    dataset_dir: str | None = None
    labels_path: str | None = None
    boxes_path: str | None = None
    split: str = "train"

    def _path(self, kind: str) -> Path | None:
        explicit = self.labels_path if kind == "labels" else self.boxes_path
        if explicit:
            return Path(explicit)
        if not self.dataset_dir:
            return None
        try:
            csvs = find_duke_csvs(self.dataset_dir, self.split)
        except FileNotFoundError:
            return None
        return csvs.labels if kind == "labels" else csvs.boxes

    def read(self, kind: str) -> pl.DataFrame:
        """The ``labels`` or ``boxes`` table as read (all columns as strings), or an empty frame."""
        path = self._path(kind)
        if path is None or not path.is_file():
            return pl.DataFrame()
        if path.suffix == ".parquet":
            return pl.read_parquet(path)
        return pl.read_csv(path, infer_schema=False)
