"""The de-identification key as a resource: keyed pseudonyms and per-patient date shifts.

The key never leaves the resource; in production it comes from a secret
(``TOMOSIGHT_PSEUDONYM_KEY``), locally a fixed demo key is used when none is set.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from ml import deid


class Pseudonymizer(dg.ConfigurableResource):
    """Keyed (HMAC) pseudonyms: the same original key always maps to the same pseudonym."""

    secret: str

    @property
    def key(self) -> bytes:
        return self.secret.encode("utf-8")

    def patient(self, patient_id: str) -> str:
        return deid.pseudonym(self.key, "patient", patient_id)

    def study(self, study_id: str) -> str:
        return deid.pseudonym(self.key, "study", study_id)

    def shift_days(self, patient_id: str) -> int:
        return deid.date_shift_days(self.key, patient_id)

    def shifted_date(self, patient_id: str, original: dt.date) -> dt.date:
        """The de-identified study date: the partition a study lands in."""
        return original + dt.timedelta(days=self.shift_days(patient_id))
