"""Redis stops and comes back: the gateway keeps working and recording, the playground says
clearly that live streaming is unavailable, and both recover.

Most tests here use a private redis-server (never the machine's own) that they kill and start
again on the same port, with the Redis pub/sub channel layer and the Redis cache pointed at it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from asgiref.sync import sync_to_async

from runs.gateway.views import settle
from runs.models import GatewayToken, Run
from runs.playground import consumers
from runs.playground.consumers import CLOSE_UNAVAILABLE
from runs.playground.relay import request_stop
from simulator.testing import HOST
from tests.conftest import PASSWORD
from tests.sockets import (
    HELLO,
    Socket,
    astored,
    reader_on_another_worker,
    run_row,
    running_run,
    with_simulate,
)

DEAD_REDIS = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:9/0",  # the discard port: nothing answers
    }
}
# About 6 s of frames unless something stops it: long enough to kill Redis in the middle.
LONG_RUN = with_simulate(HELLO, deltas=120, dripMs=50)


@pytest.fixture
def redis_layer(settings, private_redis):
    """The production channel layer (settings.py with REDIS_URL set), on the private Redis."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [private_redis.url]},
        }
    }
    return private_redis


@pytest.fixture
def redis_cache(settings, private_redis):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": private_redis.url,
            "KEY_PREFIX": "rtdash",
        }
    }
    return private_redis


@pytest.fixture
def dead_cache(settings):
    # Changing CACHES through the settings fixture makes Django rebuild its cache handlers.
    settings.CACHES = DEAD_REDIS


# --- The gateway ----------------------------------------------------------------------------


async def _gateway_run(async_client, plaintext: str) -> int:
    response = await async_client.post(
        "/v1/run",
        json.dumps({"agent": "support-chat", "prompt": "hi", "stream": False}),
        content_type="application/json",
        headers={"X-API-Key": plaintext},
    )
    await settle()
    return response.status_code


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("acme_key")
async def test_the_gateway_serves_and_records_without_its_cache(
    async_client, upstream, acme_token, dead_cache
):
    token, plaintext = acme_token
    await GatewayToken.objects.filter(pk=token.pk).aupdate(requests_per_minute=5)
    assert await _gateway_run(async_client, plaintext) == 200
    assert (await Run.objects.aget()).status == "completed"


@pytest.mark.django_db
def test_logging_in_works_without_the_cache(client, alice, dead_cache):
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def _away_from_a_minute_boundary() -> None:
    # The gateway counts requests per wall-clock minute: two requests must share one.
    if time.time() % 60 > 55:
        time.sleep(60 - time.time() % 60)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("acme_key")
async def test_the_gateway_rate_limits_again_when_redis_returns(
    async_client, upstream, acme_token, redis_cache
):
    token, plaintext = acme_token
    await GatewayToken.objects.filter(pk=token.pk).aupdate(requests_per_minute=1)

    redis_cache.kill()
    # Down: the limit fails open, every run is served and recorded.
    assert [await _gateway_run(async_client, plaintext) for _ in range(3)] == [200, 200, 200]
    assert await Run.objects.filter(status="completed").acount() == 3

    redis_cache.start()  # empty: the count starts again
    await sync_to_async(_away_from_a_minute_boundary)()
    assert [await _gateway_run(async_client, plaintext) for _ in range(2)] == [200, 429]


@pytest.mark.django_db
def test_login_throttling_comes_back_with_redis(client, alice, settings, redis_cache):
    settings.RTDASH_LOGIN_ATTEMPTS_PER_15_MINUTES = 2
    wrong = {"username": "alice", "password": "wrong"}
    redis_cache.kill()
    for _ in range(4):  # not counted while Redis is down
        assert client.post("/login/", wrong).status_code == 200
    assert client.post("/login/", {"username": "alice", "password": PASSWORD}).status_code == 302

    redis_cache.start()
    client.post("/logout/")
    for _ in range(2):
        client.post("/login/", wrong)
    refused = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert refused.status_code == 429  # the right password, refused: throttled again


@pytest.mark.django_db
@pytest.mark.usefixtures("upstream")
def test_the_playground_page_renders_without_the_cache(client, bob, dead_cache, acme_key):
    client.force_login(bob)
    page = client.get("/playground")
    assert page.status_code == 200
    assert "code-assistant" in page.content.decode()  # asked the upstream directly


# --- The playground's socket ----------------------------------------------------------------


async def _finished_run(run_id: int) -> Run:
    await settle()  # the reader is in this process
    return await run_row(run_id)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_run_started_while_redis_is_down_is_recorded_and_watchable_later(
    application, bob, redis_layer
):
    redis_layer.kill()
    async with Socket(application, "/ws/playground/", bob) as tab:
        # Told before it starts anything, so the page can say so at once.
        notice = await tab.receive()
        assert (
            notice["type"] == "unavailable"
            and "Live streaming is unavailable" in (notice["message"])
        )
        assert "run" not in notice
        run_id = await tab.start(HELLO)
        assert await tab.closed_with() == CLOSE_UNAVAILABLE
    after_start = [message["type"] for message in tab.messages]
    assert after_start == ["unavailable", "started", "unavailable", "run"]
    linked = tab.of_type("unavailable")[1]
    assert linked["run"] == run_id and linked["runUrl"] == f"/runs/{run_id}/"

    run = await _finished_run(run_id)
    assert run.status == "completed" and run.frame_count > 3

    # Redis is back: the page's reconnect gets the whole run, with no notice.
    redis_layer.start()
    async with Socket(application, f"/ws/runs/{run_id}/", bob) as again:
        finished = await again.until("finished")
    assert not again.of_type("unavailable")
    assert finished["status"] == "completed"
    assert again.frames == await astored(run_id)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_tab_on_the_readers_worker_streams_on_through_a_redis_outage(
    application, bob, redis_layer
):
    # The reader hands frames to sockets in its own process directly (runs.playground.relay): losing
    # Redis costs them nothing.
    async with Socket(application, "/ws/playground/", bob) as tab:
        run_id = await tab.start(LONG_RUN)
        await tab.until_frames(5)
        redis_layer.kill()
        finished = await tab.until("finished", timeout=30)
    assert not tab.of_type("unavailable")
    run = await _finished_run(run_id)
    assert finished["status"] == run.status == "completed"
    assert tab.frames == await astored(run_id)
    assert len(tab.frames) == run.frame_count > 100


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_watcher_on_another_worker_loses_redis_mid_run_and_resumes_after_its_last_frame(
    application, bob, redis_layer, monkeypatch
):
    monkeypatch.setattr(consumers, "CHECK_SECONDS", 0.5)  # notice the silence sooner
    async with Socket(application, "/ws/playground/", bob) as starter:
        run_id = await starter.start(LONG_RUN)
        await starter.until_frames(3)
    # From another worker: the watcher follows the run through Redis.
    async with reader_on_another_worker(run_id):
        async with Socket(application, f"/ws/runs/{run_id}/", bob) as tab:
            await tab.until_frames(8)
            redis_layer.kill()
            notice = await tab.until("unavailable")
            assert notice["run"] == run_id
            assert await tab.closed_with() == CLOSE_UNAVAILABLE
        seen = tab.frames
        assert not (await run_row(run_id)).is_finished  # the notice came mid-run

        # Reconnecting while Redis is down: what the database has after the last frame, then
        # 4503.
        async with Socket(application, f"/ws/runs/{run_id}/?after={seen[-1][0]}", bob) as retry:
            assert await retry.closed_with() == CLOSE_UNAVAILABLE
        assert [m["type"] for m in retry.messages][:2] == ["unavailable", "run"]
        seen += retry.frames

        redis_layer.start()
        async with Socket(application, f"/ws/runs/{run_id}/?after={seen[-1][0]}", bob) as back:
            first = await back.receive()
            finished = await back.until("finished")
        assert first["type"] == "run" and not back.of_type("unavailable")
        seen += back.frames

    run = await run_row(run_id)
    assert finished["status"] == run.status == "completed"
    # Every frame exactly once, in order, across the three sockets.
    assert seen == await astored(run_id)
    assert len(seen) == run.frame_count > 100


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_live_follow_after_redis_returns_streams_again(application, bob, redis_layer):
    # The reader started while Redis was down (it could not join its control group); once
    # Redis is back it joins, so a socket that comes back follows live, not only at the end.
    redis_layer.kill()
    async with Socket(application, "/ws/playground/", bob) as tab:
        await tab.receive()
        run_id = await tab.start(LONG_RUN)
        assert await tab.closed_with() == CLOSE_UNAVAILABLE
    redis_layer.start()
    # The socket that comes back is on another worker: it needs the reader's control group.
    async with (
        reader_on_another_worker(run_id),
        Socket(application, f"/ws/runs/{run_id}/", bob) as back,
    ):
        await back.until("run")
        await back.until_frames(len(await astored(run_id)) + 3)
        assert not (await run_row(run_id)).is_finished  # frames came before the end
        await back.until("finished")
    assert back.frames == await astored(run_id)


@pytest.mark.django_db(transaction=True)
async def test_stop_while_redis_is_down_goes_by_the_flag(acme, bob, redis_layer):
    run = await sync_to_async(running_run)(acme, bob)  # its reader is on another worker
    redis_layer.kill()
    assert await request_stop(run.pk)
    assert (await run_row(run.pk)).cancel_requested


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("upstream", "acme_key")
async def test_a_finished_run_needs_no_redis(application, bob, redis_layer):
    async with Socket(application, "/ws/playground/", bob) as tab:
        run_id = await tab.start(HELLO)
        await tab.until("finished")
    redis_layer.kill()
    async with Socket(application, f"/ws/runs/{run_id}/", bob) as later:
        finished = await later.until("finished")
    assert not later.of_type("unavailable")
    assert finished["status"] == "completed"
    assert later.frames == await astored(run_id)


async def test_redis_fixture_sanity(private_redis):
    # The private server really goes away and comes back on the same port.
    private_redis.kill()
    with pytest.raises(OSError):
        socket.create_connection((HOST, private_redis.port), timeout=1).close()
    private_redis.start()
    await asyncio.sleep(0)
    assert private_redis.up
