"""The HTTP-side gate of ``POST /v1/predict``: authenticate, then check the request's shape.

It runs as the route's FastAPI dependency (LitServe's ``authorize`` hook) in the HTTP process,
before anything reaches an inference worker: no/invalid token -> 401, no predict role -> 403,
body over the limit -> 413, neither JSON nor multipart -> 415, malformed JSON or multipart ->
400, wrong JSON shape or no files -> 422.  The parsed body stays cached on the request, so
LitServe forwards exactly what was checked.  The caller and the study UID are left in
``request.state`` for the audit line.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.auth import Permission, Principal, TokenVerifier, require_permission
from serving.schemas import PredictByStudy

INSECURE_PRINCIPAL = Principal("insecure-no-auth", frozenset({"admin"}), None)


def no_auth(request: Request) -> Principal:
    """Development mode (127.0.0.1 only): every caller is the same local admin."""
    request.state.principal = INSECURE_PRINCIPAL
    return INSECURE_PRINCIPAL


def caller(verifier: TokenVerifier | None, permission: Permission) -> Callable[..., Principal]:
    """The dependency that authenticates callers for ``permission`` (or the development stand-in)."""
    return no_auth if verifier is None else require_permission(verifier, permission)


def predict_gate(verifier: TokenVerifier | None, max_payload_bytes: int, max_files: int) -> Callable[..., object]:
    """The ``/v1/predict`` dependency: authentication first, then :func:`check_body`."""
    authenticated = caller(verifier, Permission.PREDICT)

    async def gate(request: Request, principal: Principal = Depends(authenticated)) -> Principal:
        await check_body(request, max_payload_bytes, max_files)
        return principal

    return gate


def _errors(exc: ValidationError) -> list[dict[str, object]]:
    """Pydantic errors without the offending input (it may be anything the caller sent)."""
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


async def check_body(request: Request, max_payload_bytes: int, max_files: int) -> None:
    """Refuse a predict body that is too large, of another type, malformed or of the wrong shape."""
    too_large = f"request body exceeds the limit of {max_payload_bytes} bytes"
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_payload_bytes:
        raise HTTPException(413, too_large)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    try:
        if media == "application/json":
            await _check_json(request)
        elif media == "multipart/form-data":
            await _check_form(request, max_files)
        else:
            raise HTTPException(415, "send application/json {\"study_uid\": ...} or multipart/form-data "
                                     "with the DICOM files in 'files'")
    except StarletteHTTPException as exc:
        if exc.status_code == 413:  # the payload limit cut a body that declared no (or a false) length
            raise HTTPException(413, too_large) from None
        raise


async def _check_json(request: Request) -> None:
    try:
        payload = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise HTTPException(400, f"malformed JSON body: {type(exc).__name__}") from None
    try:
        request.state.study_uid = PredictByStudy.model_validate(payload).study_uid
    except ValidationError as exc:
        raise HTTPException(422, _errors(exc)) from None


async def _check_form(request: Request, max_files: int) -> None:
    try:
        form = await request.form(max_files=max_files, max_fields=8)
    except StarletteHTTPException as exc:
        if exc.status_code == 413:
            raise
        raise HTTPException(400, f"malformed multipart body: {exc.detail}") from None
    except (ValueError, UnicodeDecodeError, AssertionError) as exc:
        raise HTTPException(400, f"malformed multipart body: {type(exc).__name__}") from None
    files = form.getlist("files")
    if not files or not all(isinstance(f, UploadFile) for f in files) or set(form.keys()) != {"files"}:
        raise HTTPException(422, "send the study's DICOM files, and nothing else, in the multipart form field 'files'")
