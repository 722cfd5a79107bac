"""Logging filters: one line a minute, not a traceback a round, while a dependency is down."""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError


class RepeatedOutageErrors(logging.Filter):
    """Lets the first record of an outage in each interval through as one WARNING line naming
    the error, and drops the rest. Records that are not about the outage pass unchanged.

    A subclass says which errors are the outage (`is_outage`) and how to name it (`what`).
    """

    what = "a dependency is unreachable"

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._next_at = 0.0

    def is_outage(self, error: BaseException) -> bool:
        raise NotImplementedError

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None or not self.is_outage(error):
            return True
        now = time.monotonic()
        if now < self._next_at:
            return False
        self._next_at = now + self.interval
        text = str(error).strip()
        reason = text.splitlines()[0] if text else ""
        record.msg = (
            f"{record.getMessage()}: {self.what} ({type(error).__name__}: {reason}); "
            f"the same error is logged at most once every {self.interval:g} s"
        )
        record.args = ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class RepeatedConnectionErrors(RepeatedOutageErrors):
    """channels_redis's pub/sub layer logs "Unexpected exception in receive task" with a full
    traceback every second for as long as Redis is down."""

    what = "Redis is unreachable"

    def is_outage(self, error: BaseException) -> bool:
        return isinstance(error, RedisError | OSError)
