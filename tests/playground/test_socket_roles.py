"""An open playground socket acts with the role its user has *now*, not the one at connect.

Membership and role are read again at every start and stop: a member demoted to viewer, or
removed from the team, while his tab is open cannot start or stop runs through it, and a socket
never slides into another of the user's teams. A socket that sends nothing (watching a run, or
idle) is told of a removal or deactivation and closes at once.
"""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from runs.core.access import SESSION_TEAM_KEY
from runs.gateway.views import settle
from runs.models import Membership, Run
from tests.sockets import HELLO, SLOW

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]


@pytest.fixture
def application(settings, upstream, acme_key):
    # rtdash.asgi refuses laptop settings unless DEBUG is on, and starts the reaper unless 0.
    settings.DEBUG = True
    settings.RTDASH_REAPER_INTERVAL = 0
    from rtdash.asgi import application

    settings.DEBUG = False
    return application


@pytest.fixture(autouse=True)
async def empty_channel_layer():
    yield
    await settle()
    await get_channel_layer().flush()


def _cookie(user, team=None) -> bytes:
    client = Client()
    client.force_login(user)
    if team is not None:
        session = client.session
        session[SESSION_TEAM_KEY] = team.pk
        session.save()
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def _connect(application, path: str, user, team=None) -> WebsocketCommunicator:
    cookie = await sync_to_async(_cookie)(user, team)
    socket = WebsocketCommunicator(application, path, headers=[*HEADERS, (b"cookie", cookie)])
    connected, _ = await socket.connect()
    assert connected
    return socket


async def _until(socket: WebsocketCommunicator, kind: str) -> dict:
    while True:
        message = await socket.receive_json_from(timeout=10)
        if message["type"] == kind:
            return message


async def _closed_with(socket: WebsocketCommunicator) -> int:
    while True:
        output = await socket.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return output["code"]


async def _one_runs_the_other_watches(application, starter_user, watcher_user):
    """A slow run started by one member's socket and followed by the other's: (starter,
    watcher), the watcher past the run's first message."""
    starter = await _connect(application, "/ws/playground/", starter_user)
    await starter.send_json_to({"action": "start", "form": SLOW})
    run_id = (await _until(starter, "started"))["run"]
    watcher = await _connect(application, f"/ws/runs/{run_id}/", watcher_user)
    await _until(watcher, "run")
    return starter, watcher


@sync_to_async
def _set_role(user, team, role: str) -> None:
    Membership.objects.filter(user=user, team=team).update(role=role)


@sync_to_async
def _remove(user, team) -> None:
    Membership.objects.filter(user=user, team=team).delete()


@sync_to_async
def _run_count() -> int:
    return Run.objects.count()


async def test_a_member_demoted_to_viewer_cannot_start(application, bob, acme):
    socket = await _connect(application, "/ws/playground/", bob)
    await _set_role(bob, acme, "viewer")

    await socket.send_json_to({"action": "start", "form": HELLO})

    error = await _until(socket, "error")
    assert error["code"] == "forbidden"
    assert "Viewers" in error["message"]
    assert await _run_count() == 0
    await socket.disconnect()


async def test_a_member_removed_from_the_team_cannot_start(application, bob, acme):
    socket = await _connect(application, "/ws/playground/", bob)
    await _remove(bob, acme)

    await socket.send_json_to({"action": "start", "form": HELLO})

    error = await _until(socket, "error")
    assert error["code"] == "not_a_member"
    assert "no longer a member" in error["message"]
    assert await _closed_with(socket) == 4403
    assert await _run_count() == 0
    await socket.disconnect()


async def test_a_member_demoted_while_following_cannot_stop(application, bob, acme):
    socket = await _connect(application, "/ws/playground/", bob)
    await socket.send_json_to({"action": "start", "form": SLOW})
    run_id = (await _until(socket, "started"))["run"]
    await _set_role(bob, acme, "viewer")

    await socket.send_json_to({"action": "stop"})

    assert (await _until(socket, "error"))["code"] == "forbidden"
    # The run was not stopped: it goes on to complete.
    assert (await _until(socket, "finished"))["status"] == "completed"
    assert (await sync_to_async(Run.objects.get)(pk=run_id)).status == "completed"
    await socket.disconnect()


async def test_a_member_removed_while_watching_cannot_stop(application, alice, bob, acme):
    starter, watcher = await _one_runs_the_other_watches(application, alice, bob)
    await _remove(bob, acme)

    await watcher.send_json_to({"action": "stop"})

    assert (await _until(watcher, "error"))["code"] == "not_a_member"
    assert await _closed_with(watcher) == 4403
    assert (await _until(starter, "finished"))["status"] == "completed"
    await watcher.disconnect()
    await starter.disconnect()


async def test_a_socket_stays_in_its_team_after_removal(application, bob, acme, globex):
    # bob also belongs to globex. Removed from acme, his acme tab must not start a run in
    # globex (the session's fallback team) that the page never showed him.
    await sync_to_async(Membership.objects.create)(user=bob, team=globex, role="member")
    socket = await _connect(application, "/ws/playground/", bob, team=acme)
    await _remove(bob, acme)

    await socket.send_json_to({"action": "start", "form": HELLO})

    assert (await _until(socket, "error"))["code"] == "not_a_member"
    assert await _run_count() == 0
    await socket.disconnect()


async def test_a_team_switch_in_another_tab_keeps_the_socket_on_its_team(
    application, bob, acme, globex
):
    # The page was drawn for acme; a switch to globex elsewhere does not move this tab's runs.
    await sync_to_async(Membership.objects.create)(user=bob, team=globex, role="viewer")
    socket = await _connect(application, "/ws/playground/", bob, team=acme)

    await socket.send_json_to({"action": "start", "form": HELLO})

    started = await _until(socket, "started")
    run = await sync_to_async(Run.objects.select_related("team").get)(pk=started["run"])
    assert run.team == acme
    await _until(socket, "finished")
    await socket.disconnect()


async def test_a_promoted_viewer_can_start_without_reconnecting(application, victor, acme):
    socket = await _connect(application, "/ws/playground/", victor)
    await _set_role(victor, acme, "member")

    await socket.send_json_to({"action": "start", "form": HELLO})

    assert (await _until(socket, "started"))["run"]
    await _until(socket, "finished")
    await socket.disconnect()


async def test_a_watcher_removed_from_the_team_is_closed_at_once_without_a_word_from_it(
    application, alice, bob, acme
):
    starter, watcher = await _one_runs_the_other_watches(application, alice, bob)
    await _until(watcher, "frames")  # watching live

    await _remove(bob, acme)  # bob's tab sends nothing

    assert (await _until(watcher, "error"))["code"] == "not_a_member"
    assert await _closed_with(watcher) == 4403
    # Nothing more reaches the removed watcher while the run goes on to its end.
    assert (await _until(starter, "finished"))["status"] == "completed"
    assert await watcher.receive_nothing(timeout=0.5)
    await watcher.disconnect()
    await starter.disconnect()


async def test_an_idle_playground_socket_is_closed_when_its_user_is_removed(application, bob, acme):
    socket = await _connect(application, "/ws/playground/", bob)
    await _remove(bob, acme)
    assert (await _until(socket, "error"))["code"] == "not_a_member"
    assert await _closed_with(socket) == 4403
    await socket.disconnect()


async def test_a_deactivated_user_s_socket_is_closed(application, bob, acme):
    socket = await _connect(application, "/ws/playground/", bob)
    bob.is_active = False
    await sync_to_async(bob.save)()
    assert (await _until(socket, "error"))["code"] == "not_a_member"
    assert await _closed_with(socket) == 4403
    await socket.disconnect()


async def test_a_watcher_demoted_to_viewer_keeps_watching(application, alice, bob, acme):
    # Viewers may watch runs: a demotion changes what the socket may do, not what it sees.
    starter, watcher = await _one_runs_the_other_watches(application, alice, bob)
    membership = await sync_to_async(Membership.objects.get)(user=bob, team=acme)
    membership.role = "viewer"
    await sync_to_async(membership.save)()

    assert (await _until(watcher, "finished"))["status"] == "completed"
    await starter.disconnect()
    await watcher.disconnect()
