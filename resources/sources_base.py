"""Shared pieces of the DICOM sources: the item record, the source protocol, errors and helpers."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

DICM_OFFSET = 128
"""Byte offset of the ``DICM`` magic in a DICOM Part 10 file (after the 128-byte preamble)."""


class SourceError(Exception):
    """Base class for errors raised by DICOM sources."""


class SourceConfigError(SourceError, ValueError):
    """A source setting (URI, root, pattern, date range, option name) is invalid."""


class ForeignItemError(SourceError, ValueError):
    """The item was not listed by this source (other root, bucket, prefix or URI scheme)."""


class SourceItemNotFoundError(SourceError, FileNotFoundError):
    """The item no longer exists at the source."""


class SourceItemChangedError(SourceError):
    """The item's content changed since it was listed (its version no longer matches)."""


@dataclass(frozen=True)
class SourceItem:
    """One DICOM file at a source.

    ``uri`` identifies it stably (absolute file path, ``s3://bucket/key`` or
    ``dicomweb://<study>/<series>/<instance>``); ``version`` changes when its content changes
    (``<mtime_ns>-<size>``, the S3 ETag, or the SOP Instance UID); ``size`` is in bytes when known.
    """

    uri: str
    size: int | None
    version: str


@runtime_checkable
class DicomSource(Protocol):
    """What ingestion needs from a source: list items, and get a local file for one item."""

    def list_items(self) -> list[SourceItem]:
        """Return every item currently at the source, sorted by ``uri``."""
        ...

    def fetch(self, item: SourceItem, dest_dir: str | os.PathLike[str]) -> Path:
        """Return a local file holding exactly ``item.version`` (remote items: in ``dest_dir``)."""
        ...

    def open_local(self, item: SourceItem) -> AbstractContextManager[Path]:
        """Yield a local file for ``item`` that is removed afterwards if it was downloaded."""
        ...


class OpenLocalMixin:
    """``open_local`` for any class with a ``fetch(item, dest_dir)`` method."""

    @contextmanager
    def open_local(self, item: SourceItem) -> Iterator[Path]:
        """Fetch ``item`` into a temporary folder, yield the local path, then remove the folder."""
        with tempfile.TemporaryDirectory(prefix="tomosight-src-") as tmp:
            yield self.fetch(item, tmp)  # type: ignore[attr-defined]


def safe_join(base: Path, parts: list[str]) -> Path:
    """Join ``parts`` under ``base``, skipping empty ones; ``.``/``..`` raise ``SourceError``."""
    kept = [p for p in parts if p]
    if not kept or any(p in (".", "..") for p in kept):
        raise SourceError(f"cannot map {'/'.join(parts)!r} to a file under {base}")
    return base.joinpath(*kept)


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a glob over ``/``-separated relative paths: ``**/`` any folders, ``**`` anything,
    ``*`` and ``?`` within one name; every other character is literal (no ``[...]`` classes)."""
    if not pattern or pattern.startswith("/"):
        raise SourceConfigError(f"pattern must be a non-empty relative glob, got {pattern!r}")
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        else:
            char = pattern[i]
            out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def has_dicm_magic(path: Path) -> bool:
    """True when ``path`` is readable and has ``DICM`` at byte offset 128 (DICOM Part 10 file)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(DICM_OFFSET + 4)
    except OSError:
        return False
    return head[DICM_OFFSET:] == b"DICM"
