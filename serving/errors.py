"""Typed request errors: an HTTP status, a short reason code and a message that says what to fix.

Raised while a request is decoded or scored in an inference worker and turned into that
request's response only, so one bad request in a dynamic batch never fails the others.
Messages never carry patient data: they name files by position and DICOM problems by code.
"""

from __future__ import annotations

import os
import traceback


class RequestError(Exception):
    """A request that cannot be answered with a prediction."""

    def __init__(self, status: int, detail: str, reason: str = "bad_request") -> None:
        super().__init__(detail)
        self.status, self.detail, self.reason = status, detail, reason

    def body(self) -> dict[str, str]:
        return {"detail": self.detail, "reason": self.reason}


def where(exc: BaseException) -> str:
    """``ExcType at file:line in function`` for a log line.

    The exception's message is left out: it may quote the content of an uploaded file.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {os.path.basename(last.filename)}:{last.lineno} in {last.name}"
