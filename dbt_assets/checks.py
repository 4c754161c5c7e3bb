"""Blocking Pandera contract checks, one per asset (and per partition for per-study assets)."""

import warnings


import dagster as dg
import polars as pl

from schemas import ContractError, schema_name, validate

MAX_FAILURE_ROWS = 20


def failures_markdown(failures: pl.DataFrame | None) -> str:
    """The first failing rows as a Markdown table for the Dagster UI."""
    if failures is None or failures.is_empty():
        return "(no row-level failures)"
    shown = failures.head(MAX_FAILURE_ROWS).with_columns(pl.all().cast(pl.String))
    header = "| " + " | ".join(shown.columns) + " |\n|" + "---|" * len(shown.columns) + "\n"
    body = "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in shown.iter_rows())
    return header + body


def contract_check(asset: dg.AssetsDefinition | str, model: type, partitions_def=None) -> dg.AssetChecksDefinition:
    """A blocking check that validates the asset (partition) against its Pandera contract."""
    asset_key = asset.key if isinstance(asset, dg.AssetsDefinition) else dg.AssetKey(asset)
    name = schema_name(model)

    with warnings.catch_warnings():  # partitioned checks are a Dagster preview feature, used on purpose
        warnings.simplefilter("ignore", dg.PreviewWarning)
        decorator = dg.asset_check(
            asset=asset,
            name=f"{asset_key.path[-1]}_matches_{name}_contract",
            blocking=True,
            partitions_def=partitions_def,
            description=f"Every row satisfies the {name} Pandera contract.",
        )

    def _check(data: pl.DataFrame) -> dg.AssetCheckResult:
        if data.is_empty() and data.width == 0:
            return dg.AssetCheckResult(passed=True, metadata={"rows": 0, "note": "no file for this partition"})
        try:
            validate(data, model)
        except ContractError as exc:
            return dg.AssetCheckResult(
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description=str(exc).splitlines()[0],
                metadata={
                    "rows": len(data),
                    "problems": dg.MetadataValue.md(f"```\n{exc}\n```"),
                    "failing_rows": dg.MetadataValue.md(failures_markdown(exc.failures)),
                },
            )
        return dg.AssetCheckResult(passed=True, metadata={"rows": len(data)})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return decorator(_check)
