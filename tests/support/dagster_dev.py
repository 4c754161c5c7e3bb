"""A real ``dagster dev`` for tests: webserver, daemon and code server on a free loopback port.

``dagster dev`` runs in its own process group and may ignore SIGTERM when started from a
non-interactive shell, so :func:`stop_dagster_dev` signals the whole group and falls back
to SIGKILL. Its temporary files (code-server sockets, a generated workspace) go to a
``TMPDIR`` of the caller's choosing, so a killed server leaves nothing in the system temp.

Use :func:`running_dagster_dev` as a context manager; :func:`graphql` talks to it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCATION = "tomosight"
REPOSITORY = "__repository__"
INSTANCE_YAML = "telemetry: {enabled: false}\nnux: {enabled: false}\n"
"""No telemetry and no "join the community" dialog over the pages a test looks at."""
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Settings a developer may have exported that would point the server away from the test home.
FOREIGN_SETTINGS = (
    "TOMOSIGHT_STORE_URI", "TOMOSIGHT_WAREHOUSE", "TOMOSIGHT_DATASET", "MLFLOW_TRACKING_URI",
    "AWS_ENDPOINT_URL", "DAGSTER_HOME",
)  # fmt: skip

LOCATION_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } } } }
    ... on PythonError { message } } }
"""


class DagsterDevError(RuntimeError):
    """``dagster dev`` exited, did not come up in time, or answered GraphQL with errors."""


@dataclass(frozen=True)
class DagsterDev:
    """A running ``dagster dev``: its base URL, process (group leader), instance folder and log."""

    base_url: str
    process: subprocess.Popen
    dagster_home: Path
    log_path: Path


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dagster_executable() -> Path:
    """``dagster`` of the virtual environment running the tests."""
    return Path(sys.executable).parent / "dagster"


def write_instance_yaml(dagster_home: Path) -> Path:
    """Create ``dagster_home`` with a ``dagster.yaml`` (SQLite defaults, no telemetry, no NUX)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    path = dagster_home / "dagster.yaml"
    path.write_text(INSTANCE_YAML, encoding="utf-8")
    return path


def server_env(settings: Mapping[str, str], dagster_home: Path, tmp_dir: Path) -> dict[str, str]:
    """The process environment plus ``settings``, the instance folder and a private TMPDIR."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_SETTINGS}
    env.update(settings)
    env.update(DAGSTER_HOME=str(dagster_home), TMPDIR=str(tmp_dir), PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def graphql(server: DagsterDev, query: str, variables: Mapping[str, Any] | None = None, timeout_s: float = 30.0) -> dict:
    """POST a GraphQL query; return its ``data`` (raises :class:`DagsterDevError` on ``errors``)."""
    response = requests.post(
        f"{server.base_url}/graphql", json={"query": query, "variables": dict(variables or {})}, timeout=timeout_s
    )
    response.raise_for_status()
    payload = response.json()
    if payload.get("errors"):
        raise DagsterDevError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


def location_status(server: DagsterDev, location: str = LOCATION) -> str:
    """``loaded``, ``loading``, ``missing`` or ``error: <message>`` for a code location."""
    data = graphql(server, LOCATION_QUERY, timeout_s=10)["workspaceOrError"]
    if data["__typename"] != "Workspace":
        raise DagsterDevError(f"workspace failed to load: {data.get('message')}")
    entry = next((e for e in data["locationEntries"] if e["name"] == location), None)
    if entry is None:
        return "missing"
    loaded = entry["locationOrLoadError"]
    if loaded is None:
        return "loading"
    if loaded["__typename"] == "PythonError":
        return f"error: {loaded['message']}"
    return "loaded"


def wait_until_loaded(server: DagsterDev, timeout_s: float = START_TIMEOUT_S, location: str = LOCATION) -> float:
    """Poll until the webserver answers and ``location`` is loaded; return the seconds it took."""
    start = time.monotonic()
    status = "no answer"
    while time.monotonic() - start < timeout_s:
        if server.process.poll() is not None:
            raise DagsterDevError(f"dagster dev exited with {server.process.returncode}:\n{log_tail(server.log_path)}")
        try:
            if requests.get(f"{server.base_url}/server_info", timeout=2).ok:
                status = location_status(server, location)
        except (requests.ConnectionError, requests.Timeout):
            status = "no answer"
        if status == "loaded":
            return time.monotonic() - start
        if status.startswith("error"):
            raise DagsterDevError(f"code location {location!r} failed to load: {status}")
        time.sleep(0.5)
    raise DagsterDevError(f"dagster dev not ready within {timeout_s} s ({status}):\n{log_tail(server.log_path)}")


def _die_with_parent() -> None:
    """In the child (Linux): get SIGKILL when the test process dies, even if killed outright."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start_dagster_dev(settings: Mapping[str, str], dagster_home: Path, work_dir: Path) -> DagsterDev:
    """Start ``dagster dev -w workspace.yaml`` from the repository root on a free loopback port."""
    tmp_dir = work_dir / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "dagster_dev.log"
    port = free_port()
    command = [str(dagster_executable()), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=server_env(settings, dagster_home, tmp_dir),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )  # fmt: skip
    return DagsterDev(f"http://127.0.0.1:{port}", process, dagster_home, log_path)


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_dagster_dev(server: DagsterDev, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the server's process group, then SIGKILL whatever is left after ``grace_s``."""
    pgid = server.process.pid  # the leader of its own session and group
    if _signal_group(pgid, signal.SIGTERM):
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _group_alive(pgid):
            server.process.poll()  # reap the leader so the group can empty
            time.sleep(0.2)
        _signal_group(pgid, signal.SIGKILL)
    try:
        server.process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextmanager
def running_dagster_dev(
    settings: Mapping[str, str], dagster_home: Path, work_dir: Path, timeout_s: float = START_TIMEOUT_S
) -> Iterator[DagsterDev]:
    """``dagster dev`` with ``settings`` in its environment, loaded and ready; stopped on exit."""
    write_instance_yaml(dagster_home)
    server = start_dagster_dev(settings, dagster_home, work_dir)
    try:
        wait_until_loaded(server, timeout_s)
        yield server
    finally:
        stop_dagster_dev(server)
