"""Value-of-interest (window) transforms for multi-frame and 2-D DICOM images.

pydicom's VOI helpers read only top-level attributes, so on a Breast Tomosynthesis
object they silently do nothing.  Here every attribute is looked up in the
per-frame functional group first, then the shared one, then the top level, and the
output is a presentation image in ``[0, 1]`` where 1 is bright tissue
(MONOCHROME1 is inverted after the window, as PS3.3 prescribes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

VoiSource = Literal["per-frame", "shared", "top-level"]


def functional_group_item(ds: Dataset, frame: int, sequence: str) -> tuple[Dataset, VoiSource] | None:
    """Return the first item of functional-group ``sequence`` for ``frame`` and where it was found."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        inner = per_frame[frame].get(sequence)
        if inner:
            return inner[0], "per-frame"
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        inner = shared[0].get(sequence)
        if inner:
            return inner[0], "shared"
    return None


def first_value(value: object) -> float:
    """First value of a possibly multi-valued DS/IS element, as a float."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = list(value)[0]  # type: ignore[arg-type]
    return float(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Window:
    """A DICOM window (C.11.2.1.2): centre, width and VOI LUT function."""

    center: float
    width: float
    function: str = "LINEAR"
    source: VoiSource = "shared"


def frame_window(ds: Dataset, frame: int = 0) -> Window | None:
    """The window for ``frame``: per-frame group, then shared group, then top level."""
    found = functional_group_item(ds, frame, "FrameVOILUTSequence")
    item, source = found if found is not None else (ds, "top-level")
    if "WindowCenter" not in item or "WindowWidth" not in item:
        return None
    if item.WindowCenter in (None, "") or item.WindowWidth in (None, ""):
        return None
    function = str(item.get("VOILUTFunction", "") or "LINEAR").upper()
    return Window(first_value(item.WindowCenter), first_value(item.WindowWidth), function, source)


def frame_rescale(ds: Dataset, frame: int = 0) -> tuple[float, float]:
    """Modality rescale (slope, intercept) for ``frame``; identity when absent."""
    found = functional_group_item(ds, frame, "PixelValueTransformationSequence")
    item = found[0] if found is not None else ds
    slope = item.get("RescaleSlope")
    intercept = item.get("RescaleIntercept")
    return (
        first_value(slope) if slope not in (None, "") else 1.0,
        first_value(intercept) if intercept not in (None, "") else 0.0,
    )


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Map modality values through ``window`` to float32 in ``[0, 1]`` (PS3.3 C.11.2.1.2-3)."""
    x = values.astype(np.float64, copy=False)
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    elif window.function == "LINEAR_EXACT":
        y = (x - c) / w + 0.5
    elif window.function == "LINEAR":
        if w <= 1:
            y = (x > c - 0.5).astype(np.float64)
        else:
            y = (x - (c - 0.5)) / (w - 1) + 0.5
    else:
        raise ValueError(f"unsupported VOILUTFunction {window.function!r}")
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def stored_value_range(ds: Dataset, slope: float = 1.0, intercept: float = 0.0) -> tuple[float, float]:
    """The range of modality values that BitsStored can represent."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1
    ends = sorted((lo * slope + intercept, hi * slope + intercept))
    return float(ends[0]), float(ends[1])


def to_presentation(raw: np.ndarray, ds: Dataset, frame: int = 0) -> tuple[np.ndarray, Window | None]:
    """Raw stored values of ``frame`` to a float32 presentation image in ``[0, 1]``.

    Applies the modality rescale, the window (or the full stored range when the file has
    none) and MONOCHROME1 inversion.  Returns the image and the window used.
    """
    slope, intercept = frame_rescale(ds, frame)
    values = raw.astype(np.float64) * slope + intercept
    window = frame_window(ds, frame)
    if window is not None and window.width > 0:
        out = apply_window(values, window)
    else:
        window = None
        lo, hi = stored_value_range(ds, slope, intercept)
        out = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        out = 1.0 - out
    return out, window
