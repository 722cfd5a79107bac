"""The websocket origin check compares the whole origin (scheme, host and port) with the
site's own and with RTDASH_CSRF_TRUSTED_ORIGINS, not just the host.

Through rtdash.asgi.application (the real middleware stack) with WebsocketCommunicator.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def application(settings):
    # rtdash.asgi refuses laptop settings unless DEBUG is on, and starts the reaper unless 0.
    settings.DEBUG = True
    settings.RTDASH_REAPER_INTERVAL = 0
    from rtdash.asgi import application

    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["127.0.0.1", "dash.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = None
    settings.CSRF_TRUSTED_ORIGINS = []
    return application


def _cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _opens(application, user, *, origin, host, scheme="ws", path="/ws/playground/", **h):
    """Whether a logged-in user's socket opens (True) or is refused with a 403 (False)."""
    headers = [(b"host", host.encode()), (b"cookie", await sync_to_async(_cookie)(user))]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(name.replace("_", "-").encode(), value.encode()) for name, value in h.items()]
    socket = WebsocketCommunicator(application, path, headers=headers)
    socket.scope["scheme"] = scheme
    connected, _ = await socket.connect()
    await socket.disconnect()
    return connected


async def test_it_accepts_the_sites_own_origin(application, bob):
    assert await _opens(application, bob, origin="http://127.0.0.1:8000", host="127.0.0.1:8000")
    assert await _opens(application, bob, origin="http://127.0.0.1", host="127.0.0.1")


async def test_it_refuses_another_port_on_the_same_host(application, bob):
    # The attack: any other page on the machine (here port 9999) driving a user's socket.
    assert not await _opens(application, bob, origin="http://127.0.0.1:9999", host="127.0.0.1:8000")
    assert not await _opens(application, bob, origin="http://127.0.0.1:9999", host="127.0.0.1")


async def test_it_refuses_another_port_watching_a_run(application, bob, acme):
    from runs.models import Run

    run = await sync_to_async(Run.objects.create)(team=acme, agent="support-chat", prompt="hi")
    path = f"/ws/runs/{run.pk}/"
    assert not await _opens(
        application, bob, origin="http://127.0.0.1:9999", host="127.0.0.1:8000", path=path
    )
    assert await _opens(
        application, bob, origin="http://127.0.0.1:8000", host="127.0.0.1:8000", path=path
    )


async def test_it_refuses_another_scheme(application, bob):
    assert not await _opens(application, bob, origin="https://127.0.0.1", host="127.0.0.1")
    assert not await _opens(
        application, bob, origin="http://dash.example.com", host="dash.example.com", scheme="wss"
    )
    assert await _opens(
        application, bob, origin="https://dash.example.com", host="dash.example.com", scheme="wss"
    )


async def test_it_follows_the_proxys_scheme_when_configured(application, bob, settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    forwarded = {"x_forwarded_proto": "https"}
    assert await _opens(
        application, bob, origin="https://dash.example.com", host="dash.example.com", **forwarded
    )
    assert not await _opens(
        application, bob, origin="http://dash.example.com", host="dash.example.com", **forwarded
    )


async def test_it_ignores_a_forwarded_scheme_unless_configured(application, bob):
    assert not await _opens(
        application,
        bob,
        origin="https://dash.example.com",
        host="dash.example.com",
        x_forwarded_proto="https",
    )


async def test_it_refuses_a_host_outside_allowed_hosts(application, bob):
    assert not await _opens(application, bob, origin="http://evil.test", host="evil.test")


async def test_it_refuses_a_socket_without_an_origin(application, bob):
    assert not await _opens(application, bob, origin=None, host="127.0.0.1")


async def test_it_accepts_trusted_origins_exactly(application, bob, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://ops.example.com", "https://*.tools.example.com"]
    host = "127.0.0.1:8000"
    assert await _opens(application, bob, origin="https://ops.example.com", host=host)
    assert await _opens(application, bob, origin="https://a.tools.example.com", host=host)
    assert not await _opens(application, bob, origin="https://ops.example.com:8443", host=host)
    assert not await _opens(application, bob, origin="http://ops.example.com", host=host)
    assert not await _opens(application, bob, origin="http://a.tools.example.com", host=host)
