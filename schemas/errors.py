"""Typed errors raised when data or files break a tomosight data contract."""

from __future__ import annotations

import polars as pl


class ContractError(ValueError):
    """A frame violates a data contract.

    ``schema_name`` names the contract and ``failures`` holds pandera's failure
    cases (columns ``failure_case, schema_context, column, check, check_number,
    index``); the message lists each failing column, check and a few values.
    """

    def __init__(self, message: str, schema_name: str, failures: pl.DataFrame | None = None):
        super().__init__(message)
        self.schema_name = schema_name
        self.failures = failures

    def __reduce__(self) -> tuple[type, tuple[str, str, pl.DataFrame | None]]:
        """Pickle with all fields (e.g. across process-based executors)."""
        return type(self), (str(self), self.schema_name, self.failures)


class SchemaMismatchError(ContractError):
    """A Parquet file was written under another contract, version, or none at all."""
