"""The gateway's hop to Django's sync thread (runs.core.sync_thread): the thread asgiref would
choose, and what asgiref leaves there for code that calls back into the event loop."""

from __future__ import annotations

import asyncio
import threading

import pytest
import uvloop
from asgiref.sync import async_to_sync, sync_to_async
from django.urls import get_urlconf, set_urlconf
from django.utils import timezone

from runs.core import sync_thread

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture(params=sorted(LOOPS))
def run(request):
    return LOOPS[request.param]


def test_it_runs_in_the_thread_sync_to_async_runs_in(run):
    async def scenario():
        hop = await sync_thread.call(threading.get_ident)
        asgiref = await sync_to_async(threading.get_ident)()
        return hop, asgiref

    hop, asgiref = run(scenario())
    assert hop == asgiref  # Django's connections live in that one thread
    assert hop != threading.get_ident()


def test_inside_async_to_sync_it_is_sync_to_async(run):
    # As Django's test client runs a view: the sync code goes back to the calling thread.
    caller = threading.get_ident()
    assert async_to_sync(sync_thread.call)(threading.get_ident) == caller


def test_code_in_the_thread_can_run_coroutines_on_the_callers_loop(run):
    async def which_loop():
        return asyncio.get_running_loop()

    async def scenario():
        inside = await sync_thread.call(async_to_sync(which_loop))
        return inside is asyncio.get_running_loop()

    assert run(scenario())


@pytest.mark.parametrize("hop", ["call", "sync_to_async"])
def test_a_hop_back_from_inside_runs_in_the_same_thread_as_asgirefs(run, hop):
    # Sync code that runs a coroutine that hops to the sync thread again: asgiref sends the
    # inner hop back to the waiting thread instead of deadlocking on its one thread.
    def outer():
        inner = async_to_sync(sync_to_async(threading.get_ident))()
        return threading.get_ident(), inner

    async def scenario():
        if hop == "call":
            return await asyncio.wait_for(sync_thread.call(outer), timeout=10)
        return await asyncio.wait_for(sync_to_async(outer)(), timeout=10)

    outer_thread, inner_thread = run(scenario())
    assert inner_thread == outer_thread


def test_arguments_go_in_and_exceptions_come_out(run):
    def divide(a, b, *, then=0):
        return a / b + then

    assert run(sync_thread.call(divide, 6, 3, then=1)) == 3
    with pytest.raises(ZeroDivisionError):
        run(sync_thread.call(divide, 1, 0))


def test_what_django_keeps_per_request_is_seen_in_the_thread(run):
    # Django keeps the active time zone and the request's URLconf in asgiref Locals, whose
    # storage asgiref tags with the thread that set it; sync_to_async moves it to its thread,
    # and so must the hop.
    async def scenario():
        timezone.activate("Asia/Tokyo")
        set_urlconf("rtdash.urls")
        try:
            return await sync_thread.call(
                lambda: (timezone.get_current_timezone_name(), get_urlconf())
            )
        finally:
            set_urlconf(None)
            timezone.deactivate()

    assert run(scenario()) == ("Asia/Tokyo", "rtdash.urls")
