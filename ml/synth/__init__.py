"""Synthetic DBT: BTO DICOM writer, breast phantoms, lesions and Duke-layout cohorts."""

from ml.synth.bto import BtoMeta, write_bto
from ml.synth.cohort import CohortSummary, generate_cohort
from ml.synth.config import CohortConfig
from ml.synth.contact_sheet import write_contact_sheet

__all__ = [
    "BtoMeta",
    "CohortConfig",
    "CohortSummary",
    "generate_cohort",
    "write_bto",
    "write_contact_sheet",
]
