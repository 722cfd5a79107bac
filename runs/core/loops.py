"""One object per event loop.

Futures, tasks and clients belong to the event loop that made them; a process normally runs
one loop, but the tests run one per test, so process-wide helpers keep one instance per loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> T:
        """This loop's instance, made on first use."""
        loop = asyncio.get_running_loop()
        instance = self._by_loop.get(loop)
        if instance is None:
            instance = self._by_loop[loop] = self._make()
        return instance
