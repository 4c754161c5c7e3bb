"""The four screening views: Duke view names (``lcc``) and the labels the API uses (``L-CC``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from ml.models import VIEW_ORDER
from ml.training.dataset import canonical_view
from serving.errors import RequestError

T = TypeVar("T")

VIEW_LABELS: dict[str, str] = {view: f"{view[0].upper()}-{view[1:].upper()}" for view in VIEW_ORDER}
"""``lcc`` -> ``L-CC``, ``lmlo`` -> ``L-MLO``, ``rcc`` -> ``R-CC``, ``rmlo`` -> ``R-MLO``."""


def four_views(found: Mapping[str, T]) -> list[tuple[str, T]]:
    """``(Duke view name, item)`` per slot of ``VIEW_ORDER`` from items keyed by view name.

    Repeats (``rmlo1``) give way to the plain view, as in the batch path; a study that lacks a
    screening view is refused with 422, because the exam score needs both views of both breasts.
    """
    slots: dict[str, tuple[str, T]] = {}
    for view in sorted(found):
        slot = canonical_view(view)
        if slot is not None and slot not in slots:
            slots[slot] = (view, found[view])
    missing = [VIEW_LABELS[v] for v in VIEW_ORDER if v not in slots]
    if missing:
        raise RequestError(
            422, f"the study lacks the view(s) {', '.join(missing)}; a prediction needs all four screening views "
            f"({', '.join(VIEW_LABELS.values())})", "missing_views",
        )  # fmt: skip
    return [slots[v] for v in VIEW_ORDER]
