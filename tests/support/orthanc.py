"""A real PACS for tests: Orthanc with its DICOMweb plugin, started on a free loopback port.

Orthanc 1.10 (Debian 12) has no bind-address option, so its HTTP server listens on every
interface; ``RemoteAccessAllowed: false`` makes it refuse every client that is not on the
loopback, and HTTP authentication with a random password guards it further. Its DICOM
(C-STORE/C-FIND) server is disabled: the tests use DICOMweb only.

Use the ``orthanc`` fixture (session scope) by importing ``orthanc_fixture`` into a test module. Without Orthanc
or the plugin the tests are skipped, or fail when the environment variable ``CI`` is set.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

PLUGIN_FILE = "libOrthancDicomWeb.so"
FALLBACK_BINARY = Path("/usr/sbin/Orthanc")  # /usr/sbin is not on every user's PATH
FALLBACK_PLUGIN = Path("/usr/share/orthanc/plugins") / PLUGIN_FILE
START_TIMEOUT_S = 20.0
START_ATTEMPTS = 3  # a free port can be taken by another process before Orthanc binds it
PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True)
class OrthancServer:
    """A running Orthanc: its REST base URL, DICOMweb root URL, test credentials and process."""

    base_url: str
    dicomweb_url: str
    username: str
    password: str
    process: subprocess.Popen
    log_path: Path

    @property
    def auth(self) -> tuple[str, str]:
        return self.username, self.password


def orthanc_binary() -> str | None:
    """Path of the Orthanc executable, or None when it is not installed."""
    found = shutil.which("Orthanc")
    if found:
        return found
    return str(FALLBACK_BINARY) if FALLBACK_BINARY.is_file() else None


def dicomweb_plugin() -> Path | None:
    """Path of the DICOMweb plugin from ``dpkg -L orthanc-dicomweb`` (or Debian's usual path)."""
    try:
        listing = subprocess.run(
            ["dpkg", "-L", "orthanc-dicomweb"], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        listing = []
    candidates = [Path(p) for p in listing if Path(p).name == PLUGIN_FILE] + [FALLBACK_PLUGIN]
    return next((p for p in candidates if p.is_file()), None)


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(
    directory: Path, http_port: int, dicom_port: int, plugin: Path, username: str, password: str
) -> Path:
    """Write a minimal Orthanc JSON configuration with its storage under ``directory``."""
    storage = directory / "storage"
    config = {
        "Name": "tomosight-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {username: password},
        "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "SaveJobs": False,
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 8,
    }
    path = directory / "orthanc.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def _die_with_parent() -> None:
    """In the child (Linux): get SIGTERM when the test process dies, even if killed outright."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _log_tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(server: OrthancServer, timeout_s: float) -> bool:
    """Poll ``/system`` until it answers with the DICOMweb plugin loaded (False: Orthanc exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if requests.get(f"{server.base_url}/system", auth=server.auth, timeout=1).ok:
                plugins = requests.get(
                    f"{server.base_url}/plugins", auth=server.auth, timeout=1
                ).json()
                if "dicom-web" not in plugins:
                    raise RuntimeError(f"Orthanc started without the DICOMweb plugin: {plugins}")
                return True
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    tail = _log_tail(server.log_path)
    raise TimeoutError(f"Orthanc did not answer within {timeout_s} s:\n{tail}")


def start_orthanc(directory: Path, binary: str, plugin: Path) -> OrthancServer:
    """Start Orthanc with a fresh configuration in ``directory`` and wait until it answers."""
    directory.mkdir(parents=True, exist_ok=True)
    username, password = "tomosight", secrets.token_urlsafe(16)
    log_path = directory / "orthanc.log"
    for _ in range(START_ATTEMPTS):
        http_port, dicom_port = free_port(), free_port()
        config = write_config(directory, http_port, dicom_port, plugin, username, password)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [binary, str(config)], stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        base = f"http://127.0.0.1:{http_port}"
        server = OrthancServer(base, f"{base}/dicom-web", username, password, process, log_path)
        try:
            ready = _wait_ready(server, START_TIMEOUT_S)
        except BaseException:
            stop_orthanc(server)
            raise
        if ready:
            return server
    raise RuntimeError(f"Orthanc exited during start-up:\n{_log_tail(log_path)}")


def stop_orthanc(server: OrthancServer) -> None:
    """Terminate Orthanc (kill it if it does not stop within 10 s)."""
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def require_orthanc() -> tuple[str, Path]:
    """Orthanc's binary and DICOMweb plugin; skip the test without them (fail when CI is set)."""
    binary, plugin = orthanc_binary(), dicomweb_plugin()
    if binary and plugin:
        return binary, plugin
    message = "Orthanc and its DICOMweb plugin (Debian: orthanc orthanc-dicomweb) are not installed"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; they are required in CI")
    pytest.skip(message)


@pytest.fixture(scope="session", name="orthanc")
def orthanc_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """An empty Orthanc for the test session; yields its ``OrthancServer``."""
    binary, plugin = require_orthanc()
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"), binary, plugin)
    try:
        yield server
    finally:
        stop_orthanc(server)
