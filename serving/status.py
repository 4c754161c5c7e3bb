"""What the inference workers tell the HTTP side: one small JSON file per worker in a run folder.

Workers are separate (spawned) processes; each publishes its state (loading, ready, no model,
error) and the model version it serves.  The HTTP process reads the files for ``/readyz``,
``/metrics`` and ``/v1/model``, and asks the workers to re-check the registry now by bumping a
counter file.  Files of processes that are gone are ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml.atomic import write_text_atomic

READY = "ready"
STATES = ("loading", READY, "no_model", "error")
_RELOAD = "reload-requests"


@dataclass(frozen=True)
class WorkerStatus:
    """One inference worker's state and the model it serves (``version`` None until one is loaded)."""

    pid: int
    device: str
    state: str
    model_name: str
    alias: str
    version: str | None = None
    loaded_at: float | None = None
    detail: str = ""
    triage: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    registry: dict[str, Any] = field(default_factory=dict)  # what the alias pointed at when last checked

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {self.state!r}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StatusBoard:
    """The run folder shared by the HTTP process and its inference workers (same host)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def publish(self, status: WorkerStatus) -> None:
        """Write (atomically replace) this worker's status."""
        write_text_atomic(self.folder / f"worker-{status.pid}.json", json.dumps(asdict(status), sort_keys=True))

    def workers(self) -> list[WorkerStatus]:
        """Statuses of the live workers, by pid."""
        found = []
        for path in sorted(self.folder.glob("worker-*.json")):
            try:
                status = WorkerStatus(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue  # replaced while being read, or not ours
            if _alive(status.pid):
                found.append(status)
        return found

    def request_reload(self) -> int:
        """Ask every worker to re-check the registry now; returns the new request count."""
        count = self.reload_requests() + 1
        write_text_atomic(self.folder / _RELOAD, str(count))
        return count

    def reload_requests(self) -> int:
        """How many re-checks were requested so far."""
        try:
            return int((self.folder / _RELOAD).read_text())
        except (OSError, ValueError):
            return 0
