"""Configuration checks shared by the library: refuse bad values early, with a "did you mean" hint."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(value: object, options: Iterable[object]) -> str | None:
    """The option closest to ``value`` (by spelling), or None when nothing is close."""
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
    return close[0] if close else None


def check_choice(field: str, value: object, options: Iterable[object], error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless ``value`` is one of ``options``, suggesting the closest one."""
    choices = list(options)
    if value in choices:
        return
    hint = did_you_mean(value, choices)
    raise error(f"unknown {field} {value!r}; choose from {choices}." + (f" Did you mean {hint!r}?" if hint else ""))


def check_positive_int(field: str, value: object, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless ``value`` is an int (not a bool) of at least 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise error(f"{field} must be an integer >= 1, got {value!r}")
