"""rtdash.logs: a Redis outage is one line a minute in the log, not a traceback a second."""

from __future__ import annotations

import logging
import sys

from redis.exceptions import ConnectionError as RedisConnectionError

from rtdash.logs import RepeatedConnectionErrors


def _record(error: BaseException | None) -> logging.LogRecord:
    exc_info = None
    if error is not None:
        try:
            raise error
        except BaseException:
            exc_info = sys.exc_info()
    return logging.LogRecord(
        "channels_redis.pubsub", logging.ERROR, __file__, 1, "Unexpected exception in %s",
        ("receive task",), exc_info,
    )  # fmt: skip


def test_the_first_connection_error_is_one_warning_line_and_repeats_are_dropped():
    keep = RepeatedConnectionErrors(interval=60)
    first = _record(RedisConnectionError("Connection refused"))
    assert keep.filter(first)
    assert first.levelname == "WARNING" and first.exc_info is None
    assert "Unexpected exception in receive task" in first.getMessage()
    assert "Connection refused" in first.getMessage()
    assert not keep.filter(_record(RedisConnectionError("Connection refused")))
    assert not keep.filter(_record(OSError("unreachable")))


def test_after_the_interval_the_error_is_logged_again():
    keep = RepeatedConnectionErrors(interval=0)
    assert keep.filter(_record(RedisConnectionError("down")))
    assert keep.filter(_record(RedisConnectionError("still down")))


def test_other_errors_pass_unchanged():
    keep = RepeatedConnectionErrors()
    record = _record(ValueError("a bug"))
    assert keep.filter(record)
    assert record.levelname == "ERROR" and record.exc_info is not None
    assert keep.filter(_record(None))


def test_settings_put_it_on_channels_redis():
    filters = logging.getLogger("channels_redis.pubsub").filters
    assert any(isinstance(item, RepeatedConnectionErrors) for item in filters)
