"""Quality control of incoming DICOM: can this file feed the pipeline?

:func:`qc_file` never raises for bad input: it reads the header (SOP class, transfer
syntax, size, Pixel Data walk), checks the geometry and bit depth, and decodes the
central frame, turning every failure into a :class:`QcResult` with a short reason
code (the ``reason`` of the :class:`~ml.dicomio.DicomError`, or one of this module's).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ml.dicomio import (
    DEFAULT_MAX_VOLUME_BYTES,
    DEFAULT_SOP_CLASSES,
    DbtHeader,
    DicomError,
    read_frames,
    read_header,
)
from ml.slicing import frame_indices

TINY_GEOMETRY = "tiny_geometry"
BAD_BIT_DEPTH = "bad_bit_depth"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class QcResult:
    """Outcome of :func:`qc_file`; ``header`` is set whenever the header could be read."""

    passed: bool
    reason: str | None
    detail: str | None
    header: DbtHeader | None

    def record(self) -> dict[str, Any]:
        """One flat row for a QC table: outcome plus the header's log fields (None when unread)."""
        fields = self.header.log_fields() if self.header is not None else {}
        return {"passed": self.passed, "reason": self.reason, "detail": self.detail, **fields}


def _geometry_problem(header: DbtHeader, min_size: int) -> tuple[str, str] | None:
    if min(header.rows, header.columns) < min_size:
        return TINY_GEOMETRY, (
            f"{header.rows} rows x {header.columns} columns is under {min_size} pixels a side"
        )
    if not 1 <= header.bits_stored <= header.bits_allocated:
        return BAD_BIT_DEPTH, (
            f"BitsStored {header.bits_stored} must be in 1..BitsAllocated ({header.bits_allocated})"
        )
    return None


def qc_file(
    path: str | os.PathLike[str],
    *,
    sop_classes: Sequence[str] | None = DEFAULT_SOP_CLASSES,
    min_size: int = 32,
    max_volume_bytes: int = DEFAULT_MAX_VOLUME_BYTES,
) -> QcResult:
    """Check that ``path`` is an accepted image whose central frame decodes.

    ``sop_classes`` (None: any) and ``max_volume_bytes`` are passed to
    :func:`~ml.dicomio.read_header`; ``min_size`` is the smallest accepted number of
    rows and columns.  Details never contain the path, so they group across files.
    """
    header: DbtHeader | None = None
    try:
        header = read_header(path, sop_classes=sop_classes, max_volume_bytes=max_volume_bytes)
        problem = _geometry_problem(header, min_size)
        if problem is not None:
            return QcResult(False, problem[0], problem[1], header)
        read_frames(path, frame_indices(header.frames, "central"), header=header)
    except DicomError as exc:
        return QcResult(False, exc.reason, exc.detail, header)
    except Exception as exc:  # a broken file must not stop a batch: record it
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return QcResult(False, UNREADABLE, f"{type(exc).__name__}: {detail}", header)
    return QcResult(True, None, None, header)


def find_duplicate_sop_instances(headers: Iterable[DbtHeader | None]) -> dict[str, list[int]]:
    """SOP Instance UIDs that occur more than once, with the positions of the headers holding them.

    ``None`` entries (files whose header could not be read) and headers without a
    SOP Instance UID are skipped but still count as positions.
    """
    seen: dict[str, list[int]] = defaultdict(list)
    for index, header in enumerate(headers):
        if header is not None and header.sop_instance_uid:
            seen[header.sop_instance_uid].append(index)
    return {uid: indices for uid, indices in seen.items() if len(indices) > 1}
