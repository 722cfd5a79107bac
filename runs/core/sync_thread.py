"""The hop to Django's sync thread on a run's path, without asgiref's bookkeeping.

`asgiref.sync.sync_to_async` runs thread-sensitive code in one thread, where Django's
database connections live. On a run's path it costs ~30 µs more per hop than the executor
call underneath it (a scratch loop of 3,000 hops under uvloop: 101-104 µs against 70-75),
spent working out which thread to use, wrapping the call and copying the context back
afterwards, and the run's hop before it goes upstream is on the critical path. `call` runs the
function in the same thread, the way asgiref would, when asgiref would choose its one shared
thread (a worker under uvicorn or daphne); anywhere else (inside `async_to_sync`, as Django's
test client runs views, or a ThreadSensitiveContext) it is `sync_to_async` itself.

What Django keeps per request in asgiref Locals (the active time zone and language, the
URLconf) is seen in the thread, as sync_to_async makes it seen: asgiref tags a Local's storage
with the thread that set it, and moves it to the thread it hands work to. Unlike
sync_to_async, context variables the function changes are not carried back to the caller:
none of the steps that use this hop changes one.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import AsyncToSync, SyncToAsync, sync_to_async

try:
    # asgiref's own step for moving a context's Locals to the thread it runs in (3.12 on).
    from asgiref.sync import _restore_context as _move_locals_here
except ImportError:  # an asgiref whose Locals are not tagged with a thread

    def _move_locals_here(context: contextvars.Context) -> None:
        pass


P = ParamSpec("P")
R = TypeVar("R")


def _shared_thread_is_asgirefs_choice(loop: asyncio.AbstractEventLoop) -> bool:
    # The conditions under which SyncToAsync.__call__ (thread_sensitive) picks its
    # single_thread_executor, in its own order.
    return (
        getattr(AsyncToSync.executors, "current", None) is None
        and SyncToAsync.thread_sensitive_context.get(None) is None
        and loop not in AsyncToSync.loop_thread_executors
        and not SyncToAsync.deadlock_context.get(False)
    )


async def call(func: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """func(*args, **kwargs) in Django's sync thread (see the module's docstring)."""
    loop = asyncio.get_running_loop()
    if not _shared_thread_is_asgirefs_choice(loop):
        return await sync_to_async(func)(*args, **kwargs)
    context = contextvars.copy_context()
    # As asgiref marks it: a thread-sensitive sync_to_async from inside (through
    # async_to_sync) would wait for this very thread, and raises instead of deadlocking.
    context.run(SyncToAsync.deadlock_context.set, True)
    return await loop.run_in_executor(
        SyncToAsync.single_thread_executor,
        context.run,
        _in_thread,
        context,
        loop,
        func,
        args,
        kwargs,
    )


def _in_thread(context, loop, func, args, kwargs):
    _move_locals_here(context)
    # What asgiref's thread_handler leaves for an async_to_sync called inside: the loop to
    # run its coroutine on.
    SyncToAsync.threadlocal.main_event_loop = loop
    SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
    SyncToAsync.threadlocal.task_context = []
    return func(*args, **kwargs)
