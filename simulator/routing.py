"""The route table: handlers register here, and the app matches a request's path against it.

Its own module so handler modules (runs list, activity, billing) can register routes without
importing the app that imports them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from .app import SimulatorApp
    from .runs import StreamResponse
    from .store import KeyStore
    from .web import Request, Response

Reply: TypeAlias = "Response | StreamResponse | None"
Handler: TypeAlias = Callable[["SimulatorApp", "Request", "KeyStore"], Awaitable[Reply]]


@dataclass(frozen=True)
class Route:
    pattern: re.Pattern[str]
    handlers: dict[str, Handler]
    auth: bool = True


ROUTES: list[Route] = []


def route(path: str, method: str, *, auth: bool = True) -> Callable[[Handler], Handler]:
    """Register a handler; `{name}` in the path becomes a parameter matching one segment."""
    pattern = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

    def register(handler: Handler) -> Handler:
        for existing in ROUTES:
            if existing.pattern.pattern == pattern.pattern:
                existing.handlers[method] = handler
                return handler
        ROUTES.append(Route(pattern, {method: handler}, auth))
        return handler

    return register
