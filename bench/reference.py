"""Reference proxies for bench/gateway.py: what a proxy hop costs on this machine, today.

The gateway's targets were set beside figures measured on another machine (a bare ASGI hop
adds about 1 ms, a naive Django async view about 5 ms). Measured in the same run as rtdash,
on the same cores, these two put rtdash's overhead on a scale that does not move with the
machine:

- `bare`: a plain ASGI app that forwards the body to the upstream with one shared
  httpx.AsyncClient and returns its answer (no framework, no database).
- `django`: a Django async view doing the same, through Django's ASGI handler with its
  default middleware (no database, no recording).

Either can wait before each forward (`REFERENCE_WAIT_MS`), asleep or computing
(`REFERENCE_WAIT_MODE=sleep|compute`): the bare hop spending as long as rtdash's own work
before it forwards a run shows what that work alone costs a stream. rtdash's work is some of
each (database calls on its sync thread, and the hops there and back), so the two bracket it.

Both are served by uvicorn, like the simulator; run one with
`python -m bench.reference bare|django PORT UPSTREAM_URL`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import httpx

from bench.harness import ServerProcess, asgi_body
from simulator.testing import HOST, free_port

_client: httpx.AsyncClient | None = None


def _upstream() -> httpx.AsyncClient:
    global _client
    if _client is None:
        _client = httpx.AsyncClient(base_url=os.environ["REFERENCE_UPSTREAM"], timeout=60)
    return _client


async def _forward(body: bytes, key: str) -> httpx.Response:
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    return await _upstream().post("/run", content=body, headers=headers)


async def _wait() -> float:
    """Spend REFERENCE_WAIT_MS asleep or computing; returns how long it really took (uvloop's
    timers count whole milliseconds, so a 1.4 ms sleep takes about 1.1)."""
    wait_ms = float(os.environ.get("REFERENCE_WAIT_MS") or 0)
    if not wait_ms:
        return 0.0
    started = time.perf_counter()
    if os.environ.get("REFERENCE_WAIT_MODE") == "compute":
        until = started + wait_ms / 1000
        while time.perf_counter() < until:
            pass
    else:
        await asyncio.sleep(wait_ms / 1000)
    return (time.perf_counter() - started) * 1000


async def bare_app(scope, receive, send) -> None:
    """POST /v1/run → upstream /run, answered as it comes back (a stream chunk by chunk)."""
    if scope["type"] != "http":
        return
    body = await asgi_body(receive)
    waited_ms = await _wait()
    key = dict(scope["headers"]).get(b"x-api-key", b"").decode()
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    request = _upstream().build_request("POST", "/run", content=body, headers=headers)
    answer = await _upstream().send(request, stream=True)
    try:
        content_type = answer.headers.get("content-type", "").encode()
        await send(
            {
                "type": "http.response.start",
                "status": answer.status_code,
                "headers": [
                    (b"content-type", content_type),
                    (b"x-reference-waited-ms", f"{waited_ms:.3f}".encode()),
                ],
            }
        )
        async for chunk in answer.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        await answer.aclose()


def _django_app():
    from django.conf import settings

    settings.configure(
        DEBUG=False,
        SECRET_KEY="reference-only",  # noqa: S106 - a throwaway benchmark process
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[
            "django.middleware.security.SecurityMiddleware",
            "django.middleware.common.CommonMiddleware",
            "django.middleware.clickjacking.XFrameOptionsMiddleware",
        ],
    )
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


async def run_view(request):
    from django.http import HttpResponse

    await _wait()
    answer = await _forward(request.body, request.headers.get("X-API-Key", ""))
    return HttpResponse(
        answer.content, status=answer.status_code, content_type=answer.headers["content-type"]
    )


def _urlpatterns():
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    return [path("v1/run", csrf_exempt(run_view))]


def __getattr__(name: str):
    # Django reads `urlpatterns` from ROOT_URLCONF (this module) only in the `django` server.
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


class ReferenceServer(ServerProcess):
    """One reference proxy in a subprocess (uvicorn), in front of `upstream_url`."""

    def __init__(
        self, kind: str, upstream_url: str, wait_ms: float = 0, wait_mode: str = "sleep"
    ) -> None:
        super().__init__()
        self.kind, self.upstream_url = kind, upstream_url
        self.wait_ms, self.wait_mode = wait_ms, wait_mode
        self.what = f"the {kind} reference proxy"

    @property
    def url(self) -> str:
        return self.root

    def __enter__(self) -> ReferenceServer:
        self.port = free_port()
        command = [sys.executable, "-m", "bench.reference", self.kind, str(self.port)]
        env = {
            **os.environ,
            "REFERENCE_UPSTREAM": self.upstream_url,
            "REFERENCE_WAIT_MS": str(self.wait_ms),
            "REFERENCE_WAIT_MODE": self.wait_mode,
        }
        self.spawn(command, "/", env)
        return self


def main() -> None:
    import uvicorn

    kind, port = sys.argv[1], int(sys.argv[2])
    app = bare_app if kind == "bare" else _django_app()
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
