"""Run the simulator as a real server for tests and benchmarks.

    with SimulatorServer() as sim:
        httpx.get(sim.url + "/agents", headers={"X-API-Key": "rt_test_demo"})

A subprocess rather than a thread: the simulator then has its own event loop and GIL, exactly
like the real upstream, and a test cannot accidentally share state with it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
START_TIMEOUT = 15.0
STOP_GRACE = 5.0
# The package's parent directory, so `-m simulator` imports this checkout from any cwd.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class SimulatorServer:
    """Starts `python -m simulator` in a subprocess on a free loopback port."""

    def __init__(
        self,
        keys: tuple[str, ...] = ("rt_test_demo", "rt_test_other"),
        extra_args: Sequence[str] = (),
        *,
        admin_keys: tuple[str, ...] | None = None,
        billing_port: bool = False,
        store_path: str | Path | None = None,
    ) -> None:
        """`admin_keys` default to the first key; `billing_port` serves billing on a port of
        its own as well; `store_path` is the simulator's `--store` file."""
        self.keys = keys
        self.admin_keys = admin_keys
        self.separate_billing = billing_port
        self.store_path = store_path
        self.extra_args = tuple(extra_args)
        self.port: int | None = None
        self.billing_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: tempfile._TemporaryFileWrapper[bytes] | None = None

    @property
    def root(self) -> str:
        """The server's origin, e.g. http://127.0.0.1:53211 (where /healthz lives)."""
        if self.port is None:
            raise RuntimeError("SimulatorServer is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The child's process id (benchmarks read its CPU time), None when not running."""
        return self._process.pid if self._process is not None else None

    @property
    def url(self) -> str:
        """The API base URL, used exactly like https://api.runtools.ai/v1."""
        return self.root + "/v1"

    @property
    def billing_url(self) -> str:
        """The billing base URL, used exactly like https://billing.runtools.ai/v1."""
        if self.billing_port is not None:
            return f"http://{HOST}:{self.billing_port}/v1"
        return self.root + "/billing/v1"

    def start(self) -> SimulatorServer:
        # Another process can grab the free port between our probe and the child's bind, so a
        # child that dies early is retried on a fresh port a couple of times.
        last_error = ""
        for _attempt in range(3):
            self.port = free_port()
            self.billing_port = free_port() if self.separate_billing else None
            self._spawn()
            error = self._wait_ready()
            if error is None:
                return self
            last_error = error
            self._reap()
            if "address already in use" not in error.lower():
                break
        raise RuntimeError(f"simulator did not start: {last_error}")

    def _spawn(self) -> None:
        env = dict(os.environ)
        # Only what this object asks for: a test simulator must never write a developer's
        # store file, nor pick up someone else's admin keys.
        env.pop("SIM_STORE", None)
        env.pop("SIM_ADMIN_KEYS", None)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")])
        )
        command = [
            sys.executable,
            "-m",
            "simulator",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--keys",
            ",".join(self.keys),
            *self._options(),
            *self.extra_args,
        ]
        # stderr goes to a file, not a pipe nobody reads, which could fill up and block the child.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _reap
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            env=env,
        )

    def _options(self) -> list[str]:
        options = []
        if self.admin_keys is not None:
            options += ["--admin-keys", ",".join(self.admin_keys)]
        if self.billing_port is not None:
            options += ["--billing-port", str(self.billing_port)]
        if self.store_path is not None:
            options += ["--store", str(self.store_path)]
        return options

    def _child_stderr(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def _wait_ready(self) -> str | None:
        """None once /healthz answers 200, else why not."""
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return f"exited with {self._process.returncode}:\n{self._child_stderr()}"
            try:
                with urllib.request.urlopen(self.root + "/healthz", timeout=1) as reply:  # noqa: S310
                    if reply.status == 200:
                        return None
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        return (
            f"no answer on {self.root}/healthz within {START_TIMEOUT:g} s:\n{self._child_stderr()}"
        )

    def _reap(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def stop(self) -> None:
        """Terminate the child, then kill it if it has not gone after a grace period."""
        self._reap()

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
