"""The audit trail: one JSON line per prediction or model-info request, without patient data.

A line names who asked (token subject, the roles that matter here, the requesting client), what
about (the SHA-256 of the study UID, never the UID), what came back (status, model version,
triage decision) and how long it took.  Lines go to the ``tomosight.audit`` logger (stderr) and,
when configured, are appended to a file (one ``write`` per line, so lines of concurrent
processes do not interleave).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.auth import ROLE_PERMISSIONS, Principal

LOGGER_NAME = "tomosight.audit"


def hash_study_uid(study_uid: str | None) -> str | None:
    """SHA-256 hex of a study UID (None stays None)."""
    return hashlib.sha256(study_uid.encode("utf-8")).hexdigest() if study_uid else None


def audit_record(*, request_id: str, method: str, path: str, status: int, latency_s: float,
                 principal: Principal | None, study_uid: str | None, response: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """The audit line's fields; ``response`` is the JSON body the caller got (only its non-PHI fields are kept)."""
    response = response or {}
    triage = response.get("triage")
    roles = sorted(principal.roles & ROLE_PERMISSIONS.keys()) if principal else []
    return {
        "event": "predict" if path.startswith("/v1/predict") else "model_info",
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "latency_ms": round(latency_s * 1000.0, 1),
        "subject": principal.subject if principal else None,
        "role": ",".join(roles) or None,
        "client": principal.client if principal else None,
        "study_uid_sha256": hash_study_uid(study_uid or response.get("study_uid")),
        "source": response.get("source"),
        "model_version": response.get("model_version"),
        "decision": triage.get("decision") if isinstance(triage, dict) else None,
        "reason": response.get("reason"),
    }


class AuditLog:
    """Writes audit lines to the ``tomosight.audit`` logger and optionally to a file."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path else None
        self.logger = logging.getLogger(LOGGER_NAME)
        if not self.logger.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            self.logger.addHandler(handler)
            self.logger.setLevel(logging.INFO)
            self.logger.propagate = False

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, default=str)
        self.logger.info(line)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            try:
                os.write(fd, (line + "\n").encode("utf-8"))
            finally:
                os.close(fd)
