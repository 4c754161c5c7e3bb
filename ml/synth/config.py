"""``CohortConfig``: every knob of a synthetic cohort, validated when built."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from ml.synth.bto import resolve_transfer_syntax


class CohortConfigError(ValueError):
    """Raised for an invalid cohort configuration."""


_FRACTIONS = (
    "cancer_fraction",
    "benign_fraction",
    "actionable_fraction",
    "repeat_patient_fraction",
    "bilateral_fraction",
    "single_view_fraction",
    "second_lesion_fraction",
    "density",
    "flipped_fraction",
    "monochrome1_fraction",
    "no_window_fraction",
    "no_frame_laterality_fraction",
    "vendor_extras_fraction",
    "per_frame_window_fraction",
    "na_folder_fraction",
)


@dataclass(frozen=True)
class CohortConfig:
    """Size, class balance, image content and vendor-quirk rates of a synthetic cohort.

    Class fractions are per study; normal takes the remainder. Quirk fractions are per
    study (device quirks) except ``flipped_fraction`` and ``na_folder_fraction`` (per volume).
    ``lesion_contrast`` scales every lesion's density; ``malignant_contrast`` scales the
    malignant kinds (spiculated masses, distortions, malignant calcifications) on top of it,
    so cancers can be denser than benign findings (a lesion property, as BI-RADS "high density").
    Default files are valid BTO (``dciodvfy``: no errors); ``monochrome1_fraction`` and
    ``no_frame_laterality_fraction`` produce files that ``dciodvfy`` rejects on purpose.
    """

    studies: int = 40
    seed: int = 0
    rows: int = 256
    cols: int = 208
    slices: int = 16
    slices_max: int = 24
    cancer_fraction: float = 0.25
    benign_fraction: float = 0.25
    actionable_fraction: float = 0.10
    repeat_patient_fraction: float = 0.2
    bilateral_fraction: float = 0.05
    single_view_fraction: float = 0.1
    second_lesion_fraction: float = 0.1
    density: float = 0.35
    noise: float = 1.0
    lesion_contrast: float = 1.0
    malignant_contrast: float = 1.0
    start_date: dt.date = dt.date(2024, 1, 1)
    days: int = 7
    transfer_syntax: str = "jpeg2000"
    flipped_fraction: float = 0.15
    monochrome1_fraction: float = 0.0
    no_window_fraction: float = 0.0
    no_frame_laterality_fraction: float = 0.0
    vendor_extras_fraction: float = 0.0
    per_frame_window_fraction: float = 0.0
    na_folder_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.studies < 1:
            raise CohortConfigError(f"studies must be >= 1, got {self.studies}")
        if self.rows < 32 or self.cols < 32:
            raise CohortConfigError(f"rows and cols must be >= 32, got {self.rows}x{self.cols}")
        if not 4 <= self.slices <= self.slices_max:
            raise CohortConfigError(
                "need 4 <= slices <= slices_max, "
                f"got slices={self.slices}, slices_max={self.slices_max}"
            )
        for name in _FRACTIONS:
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise CohortConfigError(f"{name} must be in [0, 1], got {value}")
        positive = self.cancer_fraction + self.benign_fraction + self.actionable_fraction
        if positive > 1.0 + 1e-9:
            raise CohortConfigError(
                f"cancer + benign + actionable fractions exceed 1 ({positive:g})"
            )
        if self.days < 1:
            raise CohortConfigError(f"days must be >= 1, got {self.days}")
        if self.noise < 0 or self.lesion_contrast <= 0 or self.malignant_contrast <= 0:
            raise CohortConfigError("noise must be >= 0; lesion_contrast and malignant_contrast > 0")
        try:
            resolve_transfer_syntax(self.transfer_syntax)
        except ValueError as exc:
            raise CohortConfigError(str(exc)) from exc

    @property
    def normal_fraction(self) -> float:
        """Fraction of normal studies (the remainder after the other classes)."""
        return max(
            0.0, 1.0 - self.cancer_fraction - self.benign_fraction - self.actionable_fraction
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (dates as ISO strings)."""
        out = dataclasses.asdict(self)
        out["start_date"] = self.start_date.isoformat()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CohortConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``CohortConfigError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CohortConfigError(f"unknown cohort config keys: {unknown}")
        values = dict(data)
        if isinstance(values.get("start_date"), str):
            values["start_date"] = dt.date.fromisoformat(values["start_date"])
        return cls(**values)
