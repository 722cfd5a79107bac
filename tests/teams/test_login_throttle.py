"""The login throttle under a parallel burst, against rtdash as a real server.

Each attempt is counted before its password is checked, so a burst sent all at once is refused
past the limit exactly as the same attempts sent one by one are; on the local-memory cache (one
worker) and on Redis (shared by every worker).
"""

from __future__ import annotations

import asyncio
import re
import uuid

import httpx
import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from tests.conftest import PASSWORD, TEST_ENCRYPTION_KEY
from tests.live import RtdashServer

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 5
BURST = 30
REDIS_URL = "redis://127.0.0.1:6379/3"


class _SlowerPBKDF2(PBKDF2PasswordHasher):
    # Enough work per check that a burst overlaps in the server's threads (the race the
    # throttle must win), little enough that the test stays quick.
    iterations = 20_000


@pytest.fixture(params=["locmem", "redis"])
def server(request, simulator):
    env = {"RTDASH_LOGIN_ATTEMPTS_PER_15_MINUTES": str(LIMIT)}
    if request.param == "redis":
        env["REDIS_URL"] = REDIS_URL
    with RtdashServer(simulator.url, TEST_ENCRYPTION_KEY, **env) as live:
        yield live


@pytest.fixture
def target(django_user_model):
    """A user of its own per test: counters on Redis outlive the server that made them."""
    user = django_user_model.objects.create(username=f"target-{uuid.uuid4().hex[:8]}")
    user.password = _SlowerPBKDF2().encode(PASSWORD, _SlowerPBKDF2().salt())
    user.save()
    return user


async def _csrf(client: httpx.AsyncClient) -> str:
    page = await client.get("/login/")
    assert page.status_code == 200
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


async def _burst(url: str, username: str, passwords: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        token = await _csrf(client)

        async def attempt(password: str) -> int:
            form = {"username": username, "password": password, "csrfmiddlewaretoken": token}
            response = await client.post("/login/", data=form)
            return response.status_code

        return list(await asyncio.gather(*(attempt(password) for password in passwords)))


def test_a_parallel_burst_is_refused_past_the_limit(server, target):
    statuses = asyncio.run(_burst(server.url, target.username, ["guess"] * BURST))

    # 200: the password was checked (and was wrong); 429: refused before checking it.
    assert statuses.count(200) == LIMIT, statuses
    assert statuses.count(429) == BURST - LIMIT

    # The right password after the burst is refused too, as after the same attempts in a row.
    assert asyncio.run(_burst(server.url, target.username, [PASSWORD])) == [429]
