"""rtdash.layers.LocalChannelLayer behaves as Channels' in-memory layer does, only cheaper."""

from __future__ import annotations

import asyncio

import pytest
from channels.exceptions import ChannelFull

from rtdash.layers import LocalChannelLayer, copy_message


async def test_group_send_reaches_every_member_with_a_copy_of_its_own():
    layer = LocalChannelLayer()
    first, second = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("run.1", first)
    await layer.group_add("run.1", second)
    message = {"type": "run.frames", "frames": [[1, "delta", '{"d": "hi"}']]}
    await layer.group_send("run.1", message)
    got_first, got_second = await layer.receive(first), await layer.receive(second)
    assert got_first == got_second == message
    got_first["frames"][0][1] = "changed"
    assert got_second["frames"][0][1] == "delta"
    assert message["frames"][0][1] == "delta"


async def test_a_full_channel_refuses_a_send_and_misses_a_group_send():
    layer = LocalChannelLayer(capacity=2)
    channel, other = await layer.new_channel(), await layer.new_channel()
    await layer.send(channel, {"type": "a"})
    await layer.send(channel, {"type": "b"})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "c"})
    await layer.group_add("g", channel)
    await layer.group_add("g", other)
    await layer.group_send("g", {"type": "d"})  # no error: the full member just misses it
    assert (await layer.receive(other))["type"] == "d"
    assert [(await layer.receive(channel))["type"] for _ in range(2)] == ["a", "b"]


async def test_expired_messages_and_their_channels_are_still_cleaned_up():
    layer = LocalChannelLayer(expiry=0)
    channel, fresh = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.send(channel, {"type": "stale"})
    await asyncio.sleep(0.01)
    layer._next_clean = 0  # the clean-up is due
    await layer.group_send("g", {"type": "x"})  # cleans first, as Channels does
    assert channel not in layer.groups.get("g", {})
    await layer.send(fresh, {"type": "ok"})
    assert (await layer.receive(fresh))["type"] == "ok"


def test_copy_message_copies_containers_and_keeps_plain_values():
    original = {"a": [1, 2.5, None, True, b"x", ("t", {"n": [1]})], "s": "text"}
    copied = copy_message(original)
    assert copied == original
    assert copied["a"] is not original["a"]
    assert copied["a"][5][1] is not original["a"][5][1]
    marker = object()
    assert copy_message({"o": marker})["o"] is not marker  # unknown types: copy.deepcopy
