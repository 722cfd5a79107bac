"""The only code that speaks HTTP to RunTools. No ORM here.

One pooled `httpx.AsyncClient` per event loop (an AsyncClient cannot be shared across loops),
with timeouts from settings. Transport failures become one `UpstreamError`; HTTP error
statuses are returned as responses, because the gateway passes them through unchanged.
"""

from __future__ import annotations

import asyncio
import traceback
import weakref
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from urllib.parse import quote

import httpx
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from runs.core import network
from runs.core.crypto import SealedKey

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)
# In place of the network, for tests that need what no server produces (see use_transport).
_transport: httpx.AsyncBaseTransport | None = None


@dataclass
class UpstreamError(Exception):
    """The upstream could not be talked to, or answered in a way we cannot use.

    `permanent` is False where trying again later may work (timeouts, connection failures).
    The message never contains a key: it is shown to users and stored on runs.
    """

    code: str
    message: str
    permanent: bool = False
    # What the gateway answers: 502 for RunTools' failures, 503 when rtdash itself is full.
    status: int = 502

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class _NoJar(CookieJar):
    def set_cookie(self, cookie) -> None:
        return None  # every way of adding a cookie ends here: none is kept


class _KeepNoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing. One client carries every team's calls, so a cookie set
    on one team's answer (by RunTools, or a load balancer before it) must never ride on the
    next request, another team's perhaps. Not parsing each answer's headers into urllib's
    cookie machinery also spares the gateway's path ~5% of its event loop's time."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


_NO_COOKIES = _KeepNoCookies(_NoJar())


class _UpstreamClient(httpx.AsyncClient):
    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES


def base_url() -> str:
    return settings.RUNTOOLS_API_URL.rstrip("/")


def _timeout(read: float) -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.RTDASH_UPSTREAM_CONNECT_TIMEOUT,
        read=read,
        write=settings.RTDASH_UPSTREAM_READ_TIMEOUT,
        pool=settings.RTDASH_UPSTREAM_CONNECT_TIMEOUT,
    )


def client() -> httpx.AsyncClient:
    loop = asyncio.get_running_loop()
    existing = _clients.get(loop)
    if existing is not None and not existing.is_closed:
        return existing
    timeout = _timeout(settings.RTDASH_UPSTREAM_READ_TIMEOUT)
    limits = httpx.Limits(
        max_connections=settings.RTDASH_UPSTREAM_MAX_CONNECTIONS,
        max_keepalive_connections=min(settings.RTDASH_UPSTREAM_MAX_CONNECTIONS, 50),
        keepalive_expiry=30,
    )
    new = _UpstreamClient(
        timeout=timeout,
        limits=limits,  # for the transports httpx makes itself (network.transport)
        follow_redirects=False,
        transport=_transport or network.transport(limits),
    )
    _clients[loop] = new
    return new


def use_transport(transport: httpx.AsyncBaseTransport | None) -> None:
    """Send every later request through `transport` (an httpx.MockTransport in a test), or
    through the network again with None. Clients already made are forgotten."""
    global _transport
    _transport = transport
    _clients.clear()


def endpoint(*segments: str) -> str:
    """An upstream path from its segments, each percent-encoded whole: an id holding `/`,
    `?`, `#` or `%` stays one segment and cannot reach another endpoint or add a query.
    Dot segments are encoded too, so no client ever sees `.` or `..` to resolve (callers
    should refuse such ids first: they name nothing upstream)."""
    encoded = []
    for segment in segments:
        escaped = quote(segment, safe="")
        if segment in (".", ".."):
            escaped = escaped.replace(".", "%2E")
        encoded.append(escaped)
    return "/" + "/".join(encoded)


class _KeyAuth(httpx.Auth):
    """Puts the key on the request inside httpx, at the last moment: no frame of rtdash's
    ever holds it in a local variable that a debug page could print."""

    def __init__(self, key: SealedKey | str) -> None:
        self.key = key

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        key = self.key
        request.headers["X-API-Key"] = key.reveal() if isinstance(key, SealedKey) else key
        yield request

    def __repr__(self) -> str:
        return "_KeyAuth(****)"


def translate(error: httpx.HTTPError, silence: float | None = None) -> UpstreamError:
    """Map httpx's exceptions to what a person can act on. Never includes request headers.
    `silence`: how long the request let RunTools stay silent, when not the usual."""
    if isinstance(error, httpx.ConnectTimeout):
        return UpstreamError("upstream_unreachable", "RunTools did not accept a connection in time")
    if isinstance(error, httpx.ReadTimeout):
        silence = silence or settings.RTDASH_UPSTREAM_READ_TIMEOUT
        return UpstreamError("upstream_timeout", f"RunTools sent nothing for {silence:g} s")
    if isinstance(error, httpx.PoolTimeout):
        # rtdash's own limit, not RunTools': every pooled connection was busy for too long.
        return UpstreamError(
            "upstream_pool_full",
            f"All {settings.RTDASH_UPSTREAM_MAX_CONNECTIONS} connections this rtdash worker may "
            "open to RunTools are busy (RTDASH_UPSTREAM_MAX_CONNECTIONS)",
            status=503,
        )
    if isinstance(error, httpx.TimeoutException):
        return UpstreamError("upstream_timeout", "RunTools timed out")
    if isinstance(error, httpx.ConnectError):
        return UpstreamError("upstream_unreachable", "Could not connect to RunTools")
    if isinstance(error, httpx.RemoteProtocolError | httpx.ReadError):
        # A close and a reset mid-response are one outcome to the caller, and which of the two
        # a dropped connection raises depends on timing.
        return UpstreamError("upstream_disconnected", "RunTools closed the connection mid-way")
    if isinstance(error, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return UpstreamError("upstream_misconfigured", "RUNTOOLS_API_URL is not usable", True)
    return UpstreamError("upstream_error", type(error).__name__)


@sensitive_variables("key")
async def open_stream(
    key: SealedKey | str,
    method: str,
    path: str,
    *,
    content: bytes | None = None,
    params: dict | None = None,
    accept: str | None = None,
    uncompressed: bool = False,
    silence: float | None = None,
) -> httpx.Response:
    """Send a request and return the response with its body still unread.

    The caller must `aclose()` the response. Raises UpstreamError on transport failure, and
    KeyDecryptionError if a SealedKey cannot be opened. `key` is a SealedKey; a plaintext
    string is accepted for a key that is not stored. `uncompressed` asks for the body as it
    is (`Accept-Encoding: identity`), for a body relayed byte for byte. `silence` is how long
    RunTools may send nothing before the request fails, when not RTDASH_UPSTREAM_READ_TIMEOUT.
    """
    headers: dict[str, str] = {}
    if content is not None:
        headers["Content-Type"] = "application/json"
    if accept:
        headers["Accept"] = accept
    if uncompressed:
        headers["Accept-Encoding"] = "identity"
    request = client().build_request(
        method,
        base_url() + path,
        content=content,
        params=params,
        headers=headers,
        timeout=_timeout(silence) if silence else httpx.USE_CLIENT_DEFAULT,
    )
    try:
        return await client().send(request, stream=True, auth=_KeyAuth(key))
    except httpx.HTTPError as error:
        raise translate(error, silence) from None
    except Exception as error:
        # Not a transport failure but a bug: it goes on unchanged, but the locals of the
        # frames it came through (httpx's and httpcore's hold the request's headers, key
        # included) are dropped, so no debug page can show them.
        traceback.clear_frames(error.__traceback__)
        raise


@sensitive_variables("key")
async def call(
    key: SealedKey | str,
    method: str,
    path: str,
    *,
    content: bytes | None = None,
    params: dict | None = None,
) -> httpx.Response:
    """Send a request and read the whole response. Raises UpstreamError on transport failure."""
    response = await open_stream(key, method, path, content=content, params=params)
    try:
        await response.aread()
    except httpx.HTTPError as error:
        raise translate(error) from None
    finally:
        await response.aclose()
    return response


# Errors of a pooled connection the server closed as it was being reused: the server's
# keep-alive ran out between the last answer and this request.
_STALE_CONNECTION = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


async def is_reachable() -> bool:
    """Whether anything answers HTTP at RUNTOOLS_API_URL (any status counts, even 401).

    Asked again once on a pooled connection's close: a readiness check that said "down" for
    that would take a healthy worker out of its load balancer (seen against the simulator,
    whose keep-alive runs out after 5 s, the check's own interval)."""
    for last_try in (False, True):
        try:
            async with asyncio.timeout(3):
                response = await client().get(base_url() + "/agents")
                return response.status_code < 500
        except _STALE_CONNECTION:
            if last_try:
                return False
        except (httpx.HTTPError, TimeoutError):
            return False
    return False


# --- Run lookups and billing ------------------------------------------------------------------


def billing_base_url() -> str:
    return settings.RUNTOOLS_BILLING_URL.rstrip("/")


def _short_timeout() -> httpx.Timeout:
    # Lookups and billing are small answers read by a page or a background round: a hang
    # fails after RTDASH_BILLING_TIMEOUT rather than the streaming read timeout.
    seconds = settings.RTDASH_BILLING_TIMEOUT
    return httpx.Timeout(seconds, connect=min(seconds, settings.RTDASH_UPSTREAM_CONNECT_TIMEOUT))


@sensitive_variables("key")
async def _read(key: SealedKey | str, url: str, params: dict | None) -> httpx.Response:
    """GET `url` with the key and a short timeout, and read the whole answer."""
    request = client().build_request("GET", url, params=params, timeout=_short_timeout())
    try:
        response = await client().send(request, auth=_KeyAuth(key))
    except httpx.HTTPError as error:
        raise translate(error) from None
    except Exception as error:
        traceback.clear_frames(error.__traceback__)  # as in open_stream: no key in a frame
        raise
    return response


@sensitive_variables("key")
async def look_up_run(key: SealedKey | str, run_id: str) -> httpx.Response:
    """`GET /v1/run/{id}`: one run as RunTools recorded it (status, output, usage)."""
    return await _read(key, base_url() + endpoint("run", run_id), None)


@sensitive_variables("key")
async def list_runs(key: SealedKey | str, *, limit: int = 500, everyone: bool = False):
    """`GET /v1/run`: the key's recent runs (every member's with `everyone`, admin keys only)."""
    params: dict[str, str | int] = {"limit": limit}
    if everyone:
        params["all"] = "true"
    return await _read(key, base_url() + "/run", params)


@sensitive_variables("key")
async def call_billing(key: SealedKey | str, path: str, params: dict | None = None):
    """A GET on RunTools' billing host (RUNTOOLS_BILLING_URL), e.g. `/billing/my-usage`."""
    return await _read(key, billing_base_url() + path, params)
