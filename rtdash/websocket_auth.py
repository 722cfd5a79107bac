"""Who a websocket belongs to: Channels' AuthMiddlewareStack, without its wrapper on `send`.

Channels' SessionMiddleware wraps `send` to save a session changed before an HTTP response
starts. A websocket sends no HTTP response, so the wrapper never saves anything, yet it reads
the session's state (through a lazy object) on every message the socket sends: every live
frame paid for it (docs/performance.md, Playground relay). Sockets read the session, never
change it.
"""

from __future__ import annotations

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, InstanceSessionWrapper, SessionMiddleware


class ReadOnlySessionMiddleware(SessionMiddleware):
    """The session (from the cookie) in the scope; `send` passed on as it is."""

    async def __call__(self, scope, receive, send):
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send)


def WebsocketAuthStack(inner):  # named like Channels' AuthMiddlewareStack
    return CookieMiddleware(ReadOnlySessionMiddleware(AuthMiddleware(inner)))
