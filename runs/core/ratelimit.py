"""Fixed-window counters in the cache: the login throttle and the gateway's per-token limit.

Counting is atomic (one Redis transaction, or the local cache's lock), and callers count an
event *before* acting on it (`admit()`), so parallel events are limited exactly as serial ones.

With REDIS_URL set the cache is Redis and the counts are shared by every worker; without it
the cache is per process, so with several workers the effective limit is the limit times the
number of workers. When Redis is down the counters fail open (and say so in the log): a
throttle must not take logins or the gateway down with it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.conf import settings
from django.core.cache import cache

try:
    from redis.exceptions import RedisError as CacheUnavailable
except ImportError:  # no Redis client installed: the local cache cannot be unavailable

    class CacheUnavailable(Exception):  # type: ignore[no-redef]
        pass


logger = logging.getLogger(__name__)

LOGIN_WINDOW_SECONDS = 15 * 60


class FixedWindow:
    """Counts events for one identity in a window that starts with the first event."""

    def __init__(self, scope: str, identity: str, *, limit: int, window: int) -> None:
        # Hashed so any username (spaces, unicode, 500 characters) makes a valid cache key.
        digest = hashlib.sha256(identity.encode()).hexdigest()
        self.key = f"rtdash:rl:{scope}:{digest}"
        self.limit = limit
        self.window = window
        # Seconds until the window of the last counted event ends: a refusal's Retry-After.
        self.retry_after = window

    def hit(self) -> int:
        """Count one event and return the count so far in this window (0: the cache is down).

        Atomic on both caches, so parallel events each get their own count.
        """
        try:
            if cache.__class__.__name__ == "RedisCache":
                return self._hit_redis()
            return self._hit_local()
        except CacheUnavailable:
            logger.warning("Cache unavailable: not counting %s", self.key.split(":")[2])
            return 0

    def _hit_local(self) -> int:
        # add() only sets the keys when they are missing, so the window starts at the first
        # event and incr() keeps its expiry; each holds the local cache's lock. The window's
        # end is kept beside the count: the local cache cannot say when a key expires.
        ends = f"{self.key}:ends"
        cache.add(ends, time.time() + self.window, timeout=self.window)
        cache.add(self.key, 0, timeout=self.window)
        try:
            count = cache.incr(self.key)
        except ValueError:
            # The key expired between add() and incr(): this event opens a new window.
            cache.set(self.key, 1, timeout=self.window)
            cache.set(ends, time.time() + self.window, timeout=self.window)
            count = 1
        self._set_retry_after(cache.get(ends, time.time() + self.window) - time.time())
        return count

    def _hit_redis(self) -> int:
        # Django's RedisCache.incr() is EXISTS then INCR: a key expiring between the two is
        # recreated by INCR without an expiry, a lockout that never ends. SET NX EX and INCR
        # in one MULTI cannot be split; PTTL in the same MULTI is this window's end.
        # (Django stores ints as plain Redis integers.)
        key = cache.make_and_validate_key(self.key)
        pipeline = cache._cache.get_client(key, write=True).pipeline(transaction=True)
        pipeline.set(key, 0, ex=self.window, nx=True)
        pipeline.incr(key)
        pipeline.pttl(key)
        _created, count, ttl_ms = pipeline.execute()
        self._set_retry_after(ttl_ms / 1000 if ttl_ms > 0 else self.window)
        return count

    def _set_retry_after(self, seconds: float) -> None:
        # Whole seconds, rounded up (a client retrying sooner would be refused again), and
        # at least 1, within the window.
        self.retry_after = min(self.window, max(1, math.ceil(seconds)))

    def admit(self) -> bool:
        """Count one attempt and say whether it is within the limit.

        Counted *before* the attempt is made, so that a burst of parallel attempts is refused
        past the limit exactly as the same attempts one after another are. Fails open when the
        cache is down.
        """
        return self.hit() <= self.limit

    def reset(self) -> None:
        try:
            cache.delete(self.key)
        except CacheUnavailable:
            logger.warning("Cache unavailable: could not reset %s", self.key.split(":")[2])


def login_attempts(ip: str | None, username: str) -> FixedWindow:
    """Failed logins for one username from one address, per 15 minutes.

    Keyed on both so that someone guessing from one address cannot lock the real user out
    from everywhere else.
    """
    identity = f"{ip or '-'}|{username.strip().lower()}"
    return FixedWindow(
        "login",
        identity,
        limit=settings.RTDASH_LOGIN_ATTEMPTS_PER_15_MINUTES,
        window=LOGIN_WINDOW_SECONDS,
    )


GATEWAY_WINDOW_SECONDS = 60


def gateway_requests(token_id: int, requests_per_minute: int) -> FixedWindow:
    """Requests made with one gateway token, per minute from the first of them."""
    return FixedWindow(
        "gateway", str(token_id), limit=requests_per_minute, window=GATEWAY_WINDOW_SECONDS
    )
