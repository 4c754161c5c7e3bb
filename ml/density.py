"""Breast density as the BI-RADS breast composition category (A-D), carried in DICOM.

Duke's tables have no density column, so the category travels in the image itself: one
CODE item of the Acquisition Context Sequence (0040,0555), concept name *Breast
composition* (SCT 129715009), value from CID 6000 *Overall Breast Composition*:

====  ==========  ======================================
A     129716005   Almost entirely fat
B     129717001   Scattered fibroglandular densities
C     129718006   Heterogeneously dense
D     129719003   Extremely dense
====  ==========  ======================================

:func:`breast_composition` reads it back (also under the older concept name DCM 111006);
a file without such an item has no category (``None``).
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

CATEGORIES: dict[str, tuple[str, str]] = {
    "A": ("129716005", "Almost entirely fat"),
    "B": ("129717001", "Scattered fibroglandular densities"),
    "C": ("129718006", "Heterogeneously dense"),
    "D": ("129719003", "Extremely dense"),
}
"""BI-RADS category -> (SNOMED CT code, meaning), CID 6000."""

CONCEPT_NAME = ("129715009", "SCT", "Breast composition")
CONCEPT_NAMES = {("129715009", "SCT"), ("111006", "DCM")}
"""Concept names accepted when reading (current SCT code and the retired DCM one)."""

_BY_CODE = {(code, "SCT"): category for category, (code, _) in CATEGORIES.items()}


class DensityError(ValueError):
    """Raised for a density value that is not a fraction in [0, 1] or a category A-D."""


def category_from_fraction(fraction: float) -> str:
    """BI-RADS category of a fibroglandular fraction, by quartile as in the 4th edition.

    Below 25% is A, 25-50% B, 50-75% C, 75% and above D.
    """
    value = float(fraction)
    if not 0.0 <= value <= 1.0:
        raise DensityError(f"fibroglandular fraction must lie in [0, 1], got {fraction}")
    return "ABCD"[min(int(value * 4), 3)]


def composition_item(category: str) -> Dataset:
    """The Acquisition Context Sequence item stating ``category`` (A-D)."""
    if category not in CATEGORIES:
        choices = sorted(CATEGORIES)
        raise DensityError(f"breast composition must be one of {choices}, got {category!r}")
    name = Dataset()
    name.CodeValue, name.CodingSchemeDesignator, name.CodeMeaning = CONCEPT_NAME
    value = Dataset()
    value.CodeValue, value.CodeMeaning = CATEGORIES[category]
    value.CodingSchemeDesignator = "SCT"
    item = Dataset()
    item.ValueType = "CODE"
    item.ConceptNameCodeSequence = Sequence([name])
    item.ConceptCodeSequence = Sequence([value])
    return item


def _code(item: Dataset, keyword: str) -> tuple[str, str] | None:
    codes = item.get(keyword)
    if not codes:
        return None
    return str(codes[0].get("CodeValue", "")), str(codes[0].get("CodingSchemeDesignator", ""))


def breast_composition(ds: Dataset) -> str | None:
    """The category (A-D) stated in ``ds``'s Acquisition Context Sequence, else ``None``."""
    for item in ds.get("AcquisitionContextSequence") or []:
        if _code(item, "ConceptNameCodeSequence") in CONCEPT_NAMES:
            found = _BY_CODE.get(_code(item, "ConceptCodeSequence") or ("", ""))
            if found is not None:
                return found
    return None

