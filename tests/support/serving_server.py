"""``tomosight serve`` in a subprocess on a free loopback port, for the serving tests.

The server gets its own process group; leaving the context sends SIGINT (LitServe's graceful
shutdown stops its workers) and kills the group if it is still there after a while.  Everything
the server prints goes to a log file the tests can read (e.g. to look for planted PHI).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

STARTUP_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port nothing listens on right now (LitServe wants 1024-65535; ephemeral ports are)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    """A started server: where it listens, its process, its log, and the readiness answers seen at start."""

    url: str
    process: subprocess.Popen
    log: Path
    readiness: list[int] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Poll ``/readyz`` (recording every status) until it answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log_text()[-4000:]}")
            try:
                status = httpx.get(f"{self.url}/readyz", timeout=5).status_code
            except httpx.TransportError:
                time.sleep(0.2)
                continue
            self.readiness.append(status)
            if status == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"not ready after {timeout_s:.0f} s:\n{self.log_text()[-4000:]}")


@contextmanager
def running_server(home: Path, args: Sequence[str], env: dict[str, str], log: Path, *,
                   wait: bool = True) -> Iterator[RunningServer]:  # fmt: skip
    """Start ``tomosight serve --home HOME --port P --accelerator cpu ARGS`` and stop it afterwards."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("tomosight")), "serve", "--home", str(home), "--port", str(port),
               "--accelerator", "cpu", *args]  # fmt: skip
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOMOSIGHT_HOME": str(home), **env}
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    server = RunningServer(f"http://127.0.0.1:{port}", process, log)
    try:
        if wait:
            server.wait_ready()
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group started above: its inference workers too
    except ProcessLookupError:
        pass
    process.wait(timeout=10)
