"""A redis-server of the tests' own, never the machine's: to kill and to start again."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

from simulator.testing import HOST, free_port


class PrivateRedis:
    """A redis-server of our own on a free port, to kill and to start again on that port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.process = subprocess.Popen(
            [
                *(shutil.which("redis-server"), "--bind", HOST, "--port", str(self.port)),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL, as a crash: every connection to it breaks."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    @property
    def up(self) -> bool:
        return self.process is not None and self.process.poll() is None
