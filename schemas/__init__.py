"""tomosight data contracts: pandera polars models and contract-carrying Parquet I/O."""

from schemas.duke import Boxes, ExamLabels, FilePaths
from schemas.errors import ContractError, SchemaMismatchError
from schemas.fields import VIEW_PATTERN
from schemas.parquet import ParquetInfo, read_parquet, read_parquet_info, write_parquet
from schemas.pipeline import QUARANTINE_STAGES, SLICE_STRATEGIES, SPLITS, Preprocessed, Quarantine, Splits
from schemas.predictions import BoxPredictions, ExamPredictions, Predictions
from schemas.registry import CONTRACTS, SCHEMA_VERSIONS, schema_name, schema_version
from schemas.validate import validate

__all__ = [
    "CONTRACTS",
    "SCHEMA_VERSIONS",
    "SLICE_STRATEGIES",
    "SPLITS",
    "VIEW_PATTERN",
    "BoxPredictions",
    "Boxes",
    "ContractError",
    "ExamLabels",
    "ExamPredictions",
    "FilePaths",
    "ParquetInfo",
    "Predictions",
    "Preprocessed",
    "QUARANTINE_STAGES",
    "Quarantine",
    "SchemaMismatchError",
    "Splits",
    "read_parquet",
    "read_parquet_info",
    "schema_name",
    "schema_version",
    "validate",
    "write_parquet",
]
