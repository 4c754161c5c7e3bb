"""A landing folder as a DICOM source."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import dagster as dg
from pydantic import field_validator

from resources.sources_base import (
    ForeignItemError,
    OpenLocalMixin,
    SourceConfigError,
    SourceItem,
    SourceItemChangedError,
    SourceItemNotFoundError,
    glob_regex,
    has_dicm_magic,
)


def _file_version(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns}-{st.st_size}"


class FolderSource(OpenLocalMixin, dg.ConfigurableResource):
    """DICOM files under a local folder.

    Listed: regular files whose path relative to ``root`` matches ``pattern`` (``**/`` spans
    folders), whatever their content, so that ingestion can quarantine a bad file rather than
    never see it; plus, with ``sniff_other_files``, any other file with ``DICM`` at byte 128
    (files named by UID or without an extension). Skipped: hidden files and folders (names
    starting with ``.``, e.g. partial copies and this package's own temporary files), files
    modified less than ``settle_seconds`` ago (still being copied), and symlinked folders.
    ``uri`` is the absolute path (root resolved); ``version`` is ``<mtime_ns>-<size>``.
    """

    root: str
    pattern: str = "**/*.dcm"
    sniff_other_files: bool = True
    settle_seconds: float = 0.0

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        glob_regex(value)
        return value

    @field_validator("settle_seconds")
    @classmethod
    def _check_settle(cls, value: float) -> float:
        if value < 0:
            raise SourceConfigError(f"settle_seconds must be >= 0, got {value}")
        return value

    def _root(self) -> Path:
        root = Path(self.root).expanduser().resolve()
        if not root.is_dir():
            raise SourceConfigError(f"FolderSource root {self.root!r} is not a folder")
        return root

    def list_items(self) -> list[SourceItem]:
        """Return the DICOM files under ``root`` (see the class docstring), sorted by path."""
        root = self._root()
        matches = glob_regex(self.pattern).fullmatch
        newest_ns = time.time_ns() - int(self.settle_seconds * 1e9) if self.settle_seconds else None
        items = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                path = Path(dirpath, name)
                try:
                    st = path.stat()
                except OSError:  # vanished or dangling symlink
                    continue
                too_new = newest_ns is not None and st.st_mtime_ns > newest_ns
                if too_new or not stat.S_ISREG(st.st_mode):
                    continue
                rel = path.relative_to(root).as_posix()
                if matches(rel) or (self.sniff_other_files and has_dicm_magic(path)):
                    items.append(SourceItem(str(path), st.st_size, _file_version(st)))
        return sorted(items, key=lambda item: item.uri)

    def fetch(self, item: SourceItem, dest_dir: str | os.PathLike[str]) -> Path:
        """Return the file itself (no copy; ``dest_dir`` is unused) after checking its version."""
        path = Path(os.path.normpath(item.uri))
        if not path.is_absolute() or not path.is_relative_to(self._root()):
            raise ForeignItemError(f"{item.uri} is not under FolderSource root {self.root!r}")
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise SourceItemNotFoundError(f"{item.uri} no longer exists") from exc
        if _file_version(st) != item.version:
            raise SourceItemChangedError(
                f"{item.uri} changed since it was listed ({item.version} -> {_file_version(st)})"
            )
        return path
