"""Readiness checks for /readyz: cheap to call often, and never a cause of load themselves.

A load balancer asks every few seconds, from several places at once. So each check here runs
at most once at a time per worker (callers that arrive meanwhile share its answer), the
upstream's answer is kept for a few seconds (one `GET /agents` per worker per interval, not one
per probe), and the channel layer's round trip uses one channel per worker, made once: with the
Redis pub/sub layer every new channel is a subscription that nothing ever removes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connection

from runs.core import upstream
from runs.playground.relay import LAYER_ERRORS

# How long an upstream answer stands. A setting with this default may be added to settings.py.
UPSTREAM_CACHE_SECONDS = getattr(settings, "RTDASH_READY_UPSTREAM_CACHE_SECONDS", 5.0)
LAYER_TIMEOUT_SECONDS = 2.0


class SharedCheck:
    """An async check with at most one run in flight per event loop (one per worker), its
    answer kept for `ttl` seconds. State belongs to one loop and one `context` (e.g. the
    upstream URL): a different one starts afresh, as tests with a loop per request do."""

    def __init__(self, check: Callable[[], Awaitable[bool]], ttl: float) -> None:
        self.check = check
        self.ttl = ttl
        self._owner: tuple[asyncio.AbstractEventLoop, Hashable] | None = None
        self._running: asyncio.Future[bool] | None = None
        self._answer: bool | None = None
        self._expires = 0.0

    async def __call__(self, context: Hashable = None) -> bool:
        owner = (asyncio.get_running_loop(), context)
        if owner != self._owner:
            self._owner, self._running, self._answer = owner, None, None
        if self._answer is not None and time.monotonic() < self._expires:
            return self._answer
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        # Shielded: a caller that gives up (its client hung up) does not cancel the others'.
        return await asyncio.shield(self._running)

    async def _run(self) -> bool:
        try:
            answer = await self.check()
        finally:
            self._running = None
        self._answer, self._expires = answer, time.monotonic() + self.ttl
        return answer


class _LayerPing:
    """A round trip through the channel layer on one channel of this worker's, made once."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.channel: str | None = None

    async def __call__(self) -> bool:
        layer = get_channel_layer()
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # the pub/sub layer keeps its subscriptions per loop
            self.loop, self.channel = loop, None
        nonce = uuid.uuid4().hex
        try:
            async with asyncio.timeout(LAYER_TIMEOUT_SECONDS):
                if self.channel is None:
                    self.channel = await layer.new_channel("health.")
                await layer.send(self.channel, {"type": "health.ping", "nonce": nonce})
                # A ping from an earlier probe that timed out may still come in: skip it.
                while (await layer.receive(self.channel)).get("nonce") != nonce:
                    pass
                return True
        except TimeoutError:
            # The pub/sub layer unsubscribes a channel whose receive is cancelled, and a ping
            # sent before the next receive subscribed again would be lost: start afresh.
            self.channel = None
            return False
        except LAYER_ERRORS:
            # Redis unreachable: the layer subscribes its channels again when it reconnects,
            # so this one is kept (a new one would leave the old one subscribed).
            return False


def database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except DatabaseError:
        return False


_upstream_check = SharedCheck(upstream.is_reachable, ttl=UPSTREAM_CACHE_SECONDS)
# Not cached: each probe makes a real round trip, but concurrent probes share one.
_layer_check = SharedCheck(_LayerPing(), ttl=0)


async def channel_layer_ok() -> bool:
    return await _layer_check(id(get_channel_layer()))


async def upstream_ok() -> bool:
    return await _upstream_check(upstream.base_url())
