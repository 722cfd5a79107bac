"""Shared pieces for benchmarks: a scratch rtdash (own SQLite file or PostgreSQL) with a team,
its key and a token, served by a real ASGI server next to the simulator."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from cryptography.fernet import Fernet

from simulator.testing import HOST, SimulatorServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SIM_KEY = "rt_test_demo"


# A team with the simulator's key and a token; prints the token.
SETUP_TEAM = f"""
from runs.models import GatewayToken, RunToolsKey, Team
team, _ = Team.objects.get_or_create(slug="bench", defaults={{"name": "Bench"}})
if not team.runtools_keys.exists():
    key = RunToolsKey(team=team, label="simulator", is_default=True)
    key.set_secret("{SIM_KEY}")
    key.save()
print(GatewayToken.issue(team, "bench")[1])
"""


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def production(redis_url: str | None) -> dict[str, str]:
    """Settings as a deployment runs them (debug off, Redis for the channel layer and the
    cache), minus HTTPS, which the benchmark's loopback clients do not speak. With debug on,
    Django wraps every query to log it (on SQLite, with an extra query to quote each
    statement's parameters): that is not the cost rtdash has in production.

    Without `redis_url`: a single-worker install that has silenced the check refusing the
    in-process channel layer (RTDASH_SILENCED_CHECKS=rtdash.E003)."""
    env = {
        "RTDASH_DEBUG": "0",
        "RTDASH_SECRET_KEY": secrets.token_urlsafe(50),
        "RTDASH_ALLOWED_HOSTS": f"{HOST},localhost",
        "RTDASH_SSL_REDIRECT": "0",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    else:
        env["RTDASH_SILENCED_CHECKS"] = "rtdash.E003"
    return env


def worker_command(server: str, port: int) -> list[str]:
    if server == "uvicorn":
        return [
            sys.executable, "-m", "uvicorn", "rtdash.asgi:application", "--host", HOST,
            "--port", str(port), "--log-level", "warning", "--no-access-log",
            # As the README deploys it: websockets need the `websockets` package, and the
            # loop and the HTTP parser are uvloop and httptools (all dependencies); naming
            # them makes a missing package fail at start instead of running slower.
            "--ws", "websockets-sansio", "--loop", "uvloop", "--http", "httptools",
        ]  # fmt: skip
    # Twisted listens with a backlog of 50 unless told otherwise: 200 clients connecting at
    # once overflowed it (SYN cookies, reset connections) in bench/load.py.
    endpoint = f"tcp:port={port}:interface={HOST}:backlog=1024"
    return [str(Path(sys.executable).parent / "daphne"), "-e", endpoint,
            "rtdash.asgi:application"]  # fmt: skip


def wait_until_answers(url: str, what: str = "rtdash", seconds: float = 20) -> None:
    """Poll `url` until a server answers it (any HTTP status counts as an answer)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310
            return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start at {url}")


async def asgi_body(receive) -> bytes:
    """The whole request body of an ASGI HTTP request (for the benchmarks' small servers)."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


class ServerProcess:
    """A helper server in a subprocess on a free loopback port, stopped on exit."""

    what = "a helper server"

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def root(self) -> str:
        return f"http://{HOST}:{self.port}"

    def spawn(self, command: list[str], probe: str, env: dict | None = None) -> None:
        """Start `command` (it reads the port from self.port) and wait until `probe` answers."""
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
        wait_until_answers(self.root + probe, self.what)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)

    def __exit__(self, *exc_info) -> None:
        self.stop()


def process_stats(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, resident memory in bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
    return cpu, rss


class RedisServer:
    """A throwaway redis-server on a free port: a channel layer and cache of the benchmark's
    own (pub/sub channels are not per database number, so a shared server would mix the
    bench's groups with those of anything else using the same names)."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        command = [server, "--bind", HOST, "--port", str(self.port), "--save", ""]
        command += ["--appendonly", "no"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)


class Stack:
    """Simulator + migrated scratch database + N rtdash workers under daphne (or uvicorn)."""

    def __init__(
        self,
        server: str = "daphne",
        database_url: str | None = None,
        workers: int = 1,
        **env: str,
    ):
        self.server = server
        self.workers = workers
        self.scratch = tempfile.TemporaryDirectory(prefix="rtdash-bench-")
        self.database_url = database_url or f"sqlite:///{self.scratch.name}/bench.sqlite3"
        self.env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "RTDASH_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "RTDASH_DEBUG": "1",
            "RTDASH_LOG_LEVEL": "WARNING",
            **env,
        }
        self.simulator = SimulatorServer()
        self.processes: list[subprocess.Popen] = []
        self.ports: list[int] = []
        self.token = ""

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def urls(self) -> list[str]:
        return [f"http://{HOST}:{port}" for port in self.ports]

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def manage(self, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.strip()

    def start(self) -> Stack:
        self.simulator.start()
        self.env["RUNTOOLS_API_URL"] = self.simulator.url
        self.manage("migrate", "--noinput")
        self.token = self.manage("shell", "-c", SETUP_TEAM).splitlines()[-1]
        for _ in range(self.workers):
            port = free_port()
            self.ports.append(port)
            self.processes.append(
                subprocess.Popen(
                    worker_command(self.server, port),
                    cwd=ROOT,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for url in self.urls:
            wait_until_answers(url + "/healthz")
        return self

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(10)
        self.simulator.stop()
        self.scratch.cleanup()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
