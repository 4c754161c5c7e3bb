"""Breast laterality and view: from DICOM tags, from pixels, and the orientation decision.

The canonical frame is the one the Duke BCS-DBT boxes use: a left breast has its
chest wall at column 0, a right breast at the last column.  Tags can be wrong (the
Duke collection has such files), so the pixel rule is always computed and any
disagreement is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from ml.voi import functional_group_item

Side = Literal["L", "R"]

# SNOMED CT codes of ViewCodeSequence (CID 4014) for the two screening views.
VIEW_CODES: dict[str, str] = {"399162004": "CC", "399368009": "MLO"}


def tag_laterality(ds: Dataset, frame: int = 0) -> tuple[Side, str] | None:
    """Laterality from FrameLaterality (per-frame, shared), ImageLaterality, then Laterality.

    Returns ``(side, attribute it came from)``, or None when no tag says L or R.
    """
    found = functional_group_item(ds, frame, "FrameAnatomySequence")
    candidates: list[tuple[object, str]] = []
    if found is not None:
        candidates.append((found[0].get("FrameLaterality"), "FrameLaterality"))
    candidates += [(ds.get("ImageLaterality"), "ImageLaterality"), (ds.get("Laterality"), "Laterality")]
    for value, name in candidates:
        side = str(value or "").strip().upper()
        if side in ("L", "R"):
            return side, name  # type: ignore[return-value]
    return None


def tag_view(ds: Dataset) -> str | None:
    """CC or MLO from ViewCodeSequence, else from a vendor ViewPosition; None when unknown."""
    for item in ds.get("ViewCodeSequence", []) or []:
        view = VIEW_CODES.get(str(item.get("CodeValue", "")))
        if view:
            return view
    position = str(ds.get("ViewPosition", "") or "").strip().upper()
    return position if position in ("CC", "MLO") else None


def pixel_side(frame: np.ndarray) -> Side:
    """Side of the chest wall by the Duke rule: brighter first column means left.

    Sums of the first and last column in 64-bit integers (floats stay float64);
    a tie gives "L", as in the reference.
    """
    acc = np.int64 if np.issubdtype(frame.dtype, np.integer) else np.float64
    left = frame[:, 0].sum(dtype=acc)
    right = frame[:, -1].sum(dtype=acc)
    return "R" if left < right else "L"


@dataclass(frozen=True)
class Orientation:
    """How a view was oriented into the canonical frame, and why."""

    laterality: Side
    source: str  # "argument", a tag name, or "pixels"
    pixel_side: Side
    flipped: bool  # rotated 180 degrees in-plane to put the chest wall on the canonical side

    @property
    def disagreement(self) -> bool:
        """True when the stated laterality and the pixel rule disagree."""
        return self.source != "pixels" and self.laterality != self.pixel_side


def decide_orientation(frame: np.ndarray, ds: Dataset, laterality: str | None = None) -> Orientation:
    """Decide laterality (argument, then tags, then pixels) and whether to rotate 180 degrees.

    ``frame`` must be a presentation image (bright tissue), e.g. after MONOCHROME1 inversion.
    """
    side_from_pixels = pixel_side(frame)
    if laterality is not None:
        side = laterality.strip().upper()[:1]
        if side not in ("L", "R"):
            raise ValueError(f"laterality must start with L or R, got {laterality!r}")
        stated: tuple[Side, str] | None = (side, "argument")  # type: ignore[assignment]
    else:
        stated = tag_laterality(ds)
    if stated is None:
        return Orientation(side_from_pixels, "pixels", side_from_pixels, flipped=False)
    side, source = stated
    return Orientation(side, source, side_from_pixels, flipped=side != side_from_pixels)
