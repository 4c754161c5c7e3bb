"""Field factories shared by several contracts, so each rule is written once."""

from __future__ import annotations

from typing import Any

import pandera.polars as pa

VIEW_PATTERN = r"^[lr](cc|mlo)[0-9]*$"
"""Duke view name: laterality, projection, optional repeat digits (``lcc``, ``rmlo1``)."""

SHA256_PATTERN = r"^[0-9a-f]{64}$"


def identifier(**kwargs: Any) -> Any:
    """A non-empty string key such as ``PatientID`` or ``StudyUID``."""
    return pa.Field(str_length={"min_value": 1}, **kwargs)


def view(**kwargs: Any) -> Any:
    """A lowercase Duke view name (matched case-sensitively by the DBTex evaluator)."""
    return pa.Field(str_matches=VIEW_PATTERN, **kwargs)


def probability() -> Any:
    """A float in [0, 1]; NaN is rejected as a null."""
    return pa.Field(ge=0.0, le=1.0)


def flag() -> Any:
    """An integer 0/1 flag."""
    return pa.Field(isin=[0, 1])
