"""Logging filters."""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError


class RepeatedConnectionErrors(logging.Filter):
    """One line a minute instead of a traceback a second while Redis is unreachable.

    channels_redis's pub/sub layer logs "Unexpected exception in receive task" with a full
    traceback every second for as long as Redis is down. The first such record in each
    interval goes through as one WARNING line naming the error; the rest are dropped. Records
    that are not connection errors pass unchanged.
    """

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._next_at = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, RedisError | OSError):
            return True
        now = time.monotonic()
        if now < self._next_at:
            return False
        self._next_at = now + self.interval
        record.msg = (
            f"{record.getMessage()}: Redis is unreachable ({type(error).__name__}: {error}); "
            f"the same error is logged at most once every {self.interval:g} s"
        )
        record.args = ()
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True
