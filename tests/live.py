"""rtdash itself as a real ASGI server in a subprocess, sharing the test database.

For what an in-process test client cannot show: a client hanging up mid-stream, websockets
from a real browser, several workers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings

from runs.models import Run
from simulator.testing import HOST, free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """The URL of the database pytest-django created, for another process to open."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{database['NAME']}"
    user = database.get("USER") or "postgres"
    password = f":{database['PASSWORD']}" if database.get("PASSWORD") else ""
    host = database.get("HOST") or "127.0.0.1"
    port = database.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{database['NAME']}"


def server_command(server: str, port: int) -> list[str]:
    """daphne (the default, as `make run` serves) or uvicorn (the production recommendation)."""
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", "rtdash.asgi:application", "--host", HOST,
            "--port", str(port), "--ws", "websockets-sansio", "--loop", "uvloop",
            "--http", "httptools", "--log-level", "warning",
        ]  # fmt: skip
    daphne = Path(sys.executable).parent / "daphne"
    return [str(daphne), "-b", HOST, "-p", str(port), "rtdash.asgi:application"]


def wait_for_finished_run(timeout: float = 20) -> Run:
    """The latest run, once it is no longer running (the live server finishes it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = Run.objects.order_by("-pk").first()
        if run is not None and run.status != "running":
            return run
        time.sleep(0.1)
    raise AssertionError("the run did not finish")


class RtdashServer:
    def __init__(
        self, upstream_url: str, encryption_keys: str, server: str = "daphne", **env: str
    ) -> None:
        self.server = server
        self.upstream_url = upstream_url
        self.encryption_keys = encryption_keys
        self.env = env
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> RtdashServer:
        self.port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "RUNTOOLS_API_URL": self.upstream_url,
            "RTDASH_ENCRYPTION_KEYS": self.encryption_keys,
            "RTDASH_DEBUG": "1",
            **self.env,
        }
        self._process = subprocess.Popen(
            server_command(self.server, self.port),
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"rtdash exited:\n{self.log()}")
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2)  # noqa: S310
                return self
            except urllib.error.HTTPError:
                return self  # it answered (503 is still an answer)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        raise RuntimeError(f"rtdash did not answer within 20 s:\n{self.log()}")

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crashed or OOM-killed worker: nothing gets to clean up."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._log.close()

    def __enter__(self) -> RtdashServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
