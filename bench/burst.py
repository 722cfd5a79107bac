"""A burst against one deployed worker (issue 13): 200 `/healthz` (and 200 `/readyz` when the
branch has it) and 100 logins at once. Before the connection pool, 200 concurrent `/healthz`
made one worker open ~100 PostgreSQL connections and 150 logins got 52 "too many clients"
500s. Now the worker's connections must stay within RTDASH_DB_POOL_SIZE and no request may
get a 500; a request that waits longer than RTDASH_DB_POOL_TIMEOUT for a connection gets a
503.

One uvicorn worker, debug off, PostgreSQL (a fresh database of the bench's own) and a
redis-server of the bench's own. The worker is started with PGAPPNAME set, so its
connections are counted in pg_stat_activity by that name, every 10 ms during the burst.
Logins are POST /login/ with a CSRF token from the login page, for one unknown username (the
worker hashes each password at full production cost until the login throttle refuses the
username).

    .venv/bin/python -m bench.burst [--pool 10] [--healthz 200] [--logins 100]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import secrets
import threading
import time
from collections import Counter

import httpx
import psycopg

from bench._results import write_section
from bench.harness import RedisServer, Stack, percentile, production

PG_ADMIN = "postgres://postgres@127.0.0.1:5432/postgres"
BENCH_DB = "rtdash_bench_burst"


def _fresh_postgres() -> str:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB}")
        admin.execute(f"CREATE DATABASE {BENCH_DB}")
    return f"postgres://postgres@127.0.0.1:5432/{BENCH_DB}"


def _drop_postgres() -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")


class ConnectionSampler(threading.Thread):
    """Counts the worker's connections in pg_stat_activity until stopped."""

    def __init__(self, application_name: str) -> None:
        super().__init__(daemon=True)
        self.application_name = application_name
        self.counts: list[int] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        with psycopg.connect(PG_ADMIN, autocommit=True, application_name="burst-sampler") as db:
            while not self.stopping.is_set():
                count = db.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                    [self.application_name],
                ).fetchone()[0]
                self.counts.append(count)
                time.sleep(0.01)


def _login_form(url: str) -> tuple[str, str]:
    """(csrftoken cookie, form token). The cookie is Secure with debug off: sent by hand."""
    with httpx.Client(base_url=url, timeout=30) as client:
        page = client.get("/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    return page.cookies["csrftoken"], token.group(1)


async def _timed(kind: str, request) -> tuple[str, int, float]:
    started = time.perf_counter()
    try:
        answer = await request
        status = answer.status_code
    except httpx.HTTPError:
        status = 0  # no answer at all
    return kind, status, time.perf_counter() - started


async def _burst(url: str, paths: list[str], healthz: int, logins: int) -> list[tuple]:
    cookie, token = _login_form(url)
    form = {"username": "burst-nobody", "password": "wrong", "csrfmiddlewaretoken": token}
    headers = {"Cookie": f"csrftoken={cookie}"}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        requests = [_timed(path, client.get(path)) for path in paths for _ in range(healthz)]
        requests += [
            _timed("POST /login/", client.post("/login/", data=form, headers=headers))
            for _ in range(logins)
        ]
        return await asyncio.gather(*requests)


def _has_readyz(url: str) -> bool:
    with httpx.Client(base_url=url, timeout=30) as client:
        return client.get("/readyz").status_code != 404


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", type=int, default=10, help="RTDASH_DB_POOL_SIZE")
    parser.add_argument("--timeout", type=float, default=10.0, help="RTDASH_DB_POOL_TIMEOUT")
    parser.add_argument("--healthz", type=int, default=200)
    parser.add_argument("--logins", type=int, default=100)
    args = parser.parse_args()

    worker_name = f"rtdash-burst-{secrets.token_hex(4)}"
    redis = RedisServer().start()
    env = {
        **production(redis.url),
        "RTDASH_DB_POOL_SIZE": str(args.pool),
        "RTDASH_DB_POOL_TIMEOUT": str(args.timeout),
        "PGAPPNAME": worker_name,
    }
    try:
        with Stack("uvicorn", _fresh_postgres(), **env) as stack:
            paths = ["/healthz"] + (["/readyz"] if _has_readyz(stack.url) else [])
            with psycopg.connect(PG_ADMIN) as admin:
                max_connections = admin.execute("SHOW max_connections").fetchone()[0]
            sampler = ConnectionSampler(worker_name)
            sampler.start()
            time.sleep(0.2)
            started = time.perf_counter()
            answers = asyncio.run(_burst(stack.url, paths, args.healthz, args.logins))
            elapsed = time.perf_counter() - started
            time.sleep(0.2)
            sampler.stopping.set()
            sampler.join()
    finally:
        redis.stop()
        _drop_postgres()
    _report(args, paths, answers, sampler.counts, elapsed, max_connections)


def _report(args, paths, answers, counts, elapsed, max_connections) -> None:
    kinds = [*paths, "POST /login/"]
    rows = []
    for kind in kinds:
        mine = [answer for answer in answers if answer[0] == kind]
        statuses = Counter(status for _kind, status, _seconds in mine)
        seconds = [duration for _kind, _status, duration in mine]
        rows.append(
            f"| `{kind}` | {len(mine)} | "
            + ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))
            + f" | {percentile(seconds, 0.5):.2f} | {percentile(seconds, 0.95):.2f}"
            f" | {max(seconds):.2f} |"
        )
    server_errors = sum(1 for _kind, status, _seconds in answers if status >= 500 and status != 503)
    sent = " + ".join(f"{args.healthz} `GET {path}`" for path in paths)
    markdown = f"""## Burst against one worker (`bench/burst.py`)

{sent} + {args.logins} logins (`POST /login/`, one unknown username, production password
hashing) fired at once at one uvicorn worker with debug off, PostgreSQL (server
`max_connections` {max_connections}) and Redis; `RTDASH_DB_POOL_SIZE={args.pool}`,
`RTDASH_DB_POOL_TIMEOUT={args.timeout:g}`. The worker's connections were sampled every 10 ms
in `pg_stat_activity` ({len(counts)} samples).

| request | sent | statuses | p50 s | p95 s | max s |
|---|---|---|---|---|---|
{chr(10).join(rows)}

- The worker's PostgreSQL connections: at most **{max(counts, default=0)}** (pool size
  {args.pool}).
- 5xx other than 503: **{server_errors}**. The whole burst took {elapsed:.1f} s.
- A login holds its connection while it hashes the password (CPU-bound, and the same
  username is hashed until the throttle has counted its failures), so logins queue for the
  pool; those still waiting after the pool timeout are answered 503.
- A login's 200 is the login page shown again with its error (the username is unknown).
"""
    write_section("burst", markdown)


if __name__ == "__main__":
    main()
