"""Study UID -> its views' de-identified DICOM in the object store, from the ``filepaths`` asset table.

The table is read from the store the asset graph writes (``tables/filepaths/<partition>.parquet``,
local folder or S3), so the server needs no warehouse and sees every profile the same way.
Partitions are re-read only when their change token moves; an unknown study triggers a refresh
(at most once per ``min_refresh_s``) before it is declared unknown, so studies ingested after the
server started are found.
"""

from __future__ import annotations

import threading
import time

import polars as pl

from resources.object_store import ObjectStore

TABLE_PREFIX = "tables/filepaths/"


class StudyCatalog:
    """Views of every ingested study, keyed by the (pseudonymous) ``StudyUID``."""

    def __init__(self, store: ObjectStore, *, min_refresh_s: float = 1.0) -> None:
        self.store, self.min_refresh_s = store, min_refresh_s
        self._parts: dict[str, tuple[str, pl.DataFrame]] = {}  # key -> (etag, StudyUID/View/dicom_uri)
        self._index: dict[str, dict[str, str]] = {}
        self._refreshed = float("-inf")
        self._lock = threading.Lock()

    def views(self, study_uid: str) -> dict[str, str] | None:
        """``{View: dicom_uri}`` of ``study_uid`` (Duke view names), None when the study is unknown."""
        found = self._index.get(study_uid)
        if found is None and time.monotonic() - self._refreshed >= self.min_refresh_s:
            self.refresh()
            found = self._index.get(study_uid)
        return dict(found) if found is not None else None

    def refresh(self) -> int:
        """Re-read changed partitions; returns the number of studies known."""
        with self._lock:
            infos = {i.key: i.etag for i in self.store.list_info(TABLE_PREFIX) if i.key.endswith(".parquet")}
            changed = {k for k, etag in infos.items() if self._parts.get(k, ("",))[0] != etag}
            removed = set(self._parts) - set(infos)
            for key in removed:
                del self._parts[key]
            for key in changed:
                frame = self.store.read_parquet(key).select("StudyUID", "View", "dicom_uri")
                self._parts[key] = (infos[key], frame)
            if changed or removed:
                index: dict[str, dict[str, str]] = {}
                for _, frame in self._parts.values():
                    for study, view, uri in frame.iter_rows():
                        index.setdefault(study, {})[view] = uri
                self._index = index
            self._refreshed = time.monotonic()
            return len(self._index)
