"""ASGI middleware around the whole app: metrics for every request, an audit line for the audited routes.

It wraps everything LitServe and FastAPI add (so 401, 413 and 504 answers are counted too), gives
each response an ``X-Request-ID``, writes the audit line before the response's last byte is sent,
and reads what it needs for the audit line from the request
state the gate left (caller, study UID) and from the JSON body the caller got (study UID of an
upload, model version, triage decision), decompressing it when GZip compressed it.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.audit import AuditLog, audit_record
from serving.metrics import ServerMetrics

AUDITED = ("/v1/predict", "/v1/model")
MAX_AUDITED_BODY = 1 << 20


class ObservabilityMiddleware:
    """Counts, times and audits requests."""

    def __init__(self, app: ASGIApp, *, metrics: ServerMetrics, audit: AuditLog) -> None:
        self.app, self.metrics, self.audit = app, metrics, audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        path = scope.get("path", "")
        audited = path in AUDITED
        status, headers, chunks, recorded = 500, {}, [], False

        def record() -> None:
            nonlocal recorded
            recorded = True
            elapsed = time.perf_counter() - started
            body = _json_body(b"".join(chunks), headers) if audited else None
            triage = (body or {}).get("triage")
            decision = triage.get("decision") if isinstance(triage, dict) else None
            self.metrics.observe(path, scope.get("method", ""), status, elapsed, decision)
            if audited:
                state = scope.get("state") or {}
                self.audit.write(audit_record(
                    request_id=request_id, method=scope.get("method", ""), path=path, status=status, latency_s=elapsed,
                    principal=state.get("principal"), study_uid=state.get("study_uid"), response=body,
                ))  # fmt: skip

        async def capture(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            elif message["type"] == "http.response.body":
                if audited and sum(map(len, chunks)) < MAX_AUDITED_BODY:
                    chunks.append(message.get("body", b""))
                if not message.get("more_body", False) and not recorded:
                    record()  # before the last byte leaves: no answer without its audit line
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if not recorded:  # the app failed before answering
                record()


def _json_body(raw: bytes, headers: dict[str, str]) -> dict[str, Any] | None:
    """The response body as a JSON object, when it is one."""
    try:
        if headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        found = json.loads(raw) if raw else None
    except (OSError, ValueError, EOFError):
        return None
    return found if isinstance(found, dict) else None
