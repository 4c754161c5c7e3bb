"""Registry of data contracts and their versions.

A contract is a pandera polars ``DataFrameModel`` registered with a
``MAJOR.MINOR`` version. Bump MINOR for changes old readers still accept
(e.g. a new optional column) and MAJOR for anything else; readers accept files
whose MAJOR matches their own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import pandera.polars as pa

M = TypeVar("M", bound=type[pa.DataFrameModel])

CONTRACTS: dict[str, type[pa.DataFrameModel]] = {}
"""Contract name -> model, filled by :func:`register_contract`."""

SCHEMA_VERSIONS: dict[str, str] = {}
"""Contract name -> ``MAJOR.MINOR`` version, filled by :func:`register_contract`."""

_VERSION = re.compile(r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$")


def register_contract(version: str) -> Callable[[M], M]:
    """Class decorator: register a model under its class name with ``version``."""
    if not _VERSION.match(version):
        raise ValueError(f"contract version must look like 'MAJOR.MINOR', got {version!r}")

    def register(model: M) -> M:
        name = model.__name__
        if name in CONTRACTS:
            raise ValueError(f"a contract named {name!r} is already registered")
        CONTRACTS[name] = model
        SCHEMA_VERSIONS[name] = version
        return model

    return register


def schema_name(model: type[pa.DataFrameModel]) -> str:
    """Return the registered name of ``model``; raise ``TypeError`` if it is not a contract."""
    name = getattr(model, "__name__", None)
    if name is None or CONTRACTS.get(name) is not model:
        raise TypeError(f"{model!r} is not a registered tomosight contract")
    return name


def schema_version(model: type[pa.DataFrameModel]) -> str:
    """Return the ``MAJOR.MINOR`` version of a registered contract."""
    return SCHEMA_VERSIONS[schema_name(model)]


def major(version: str) -> int:
    """Return the MAJOR part of a ``MAJOR.MINOR`` version string."""
    found = _VERSION.match(version)
    if found is None:
        raise ValueError(f"not a 'MAJOR.MINOR' version: {version!r}")
    return int(found.group(1))
