"""The channel layer of a single process (no REDIS_URL): Channels' in-memory layer, made cheap
per message.

Profiled under bench/relay.py at 50 concurrent streams, Channels' InMemoryChannelLayer spent
more of the worker's time than anything else in rtdash: every send and receive walks every
channel and every group looking for expired entries, `group_send` starts a task per member,
and each message is deep-copied through `copy.deepcopy`'s generic machinery. This subclass
keeps the layer's behaviour (capacity, ChannelFull, expiry, a private copy of each message per
receiver) and changes only how often and how expensively that happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

# Expired messages and group memberships are looked for at most this often, not on every call.
CLEAN_INTERVAL_SECONDS = 1.0


def copy_message(value):
    """A deep copy of a message made of dicts, lists and plain values (what layers carry)."""
    if isinstance(value, dict):
        return {key: copy_message(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copy_message(item) for item in value]
    if value is None or isinstance(value, str | int | float | bool | bytes):
        return value
    if isinstance(value, tuple):
        return tuple(copy_message(item) for item in value)
    return copy.deepcopy(value)


class LocalChannelLayer(InMemoryChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._next_clean = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now >= self._next_clean:
            self._next_clean = now + CLEAN_INTERVAL_SECONDS
            super()._clean_expired()

    async def send(self, channel: str, message: dict) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        self._put(channel, message)

    def _put(self, channel: str, message: dict) -> None:
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        if queue.full():
            raise ChannelFull(channel)
        queue.put_nowait((time.time() + self.expiry, copy_message(message)))

    async def receive(self, channel: str) -> dict:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        queue = self.channels.get(channel)
        if queue is None:
            # Channels builds a queue on every receive (setdefault's argument) and drops it
            # when empty; here one is built only when the channel has none.
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    async def group_send(self, group: str, message: dict) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        # Every put is immediate (no awaiting), so no task per member is needed.
        for channel in list(self.groups.get(group, ())):
            # As in Channels: a member whose channel is full misses the message.
            with contextlib.suppress(ChannelFull):
                self._put(channel, message)
