"""Who is calling the gateway: the rtdash token on the request, checked and rate limited.

A token is looked up with its team's default RunTools key (still sealed) and whether the team
has budgets, in one query (runs.core.sql.find_token): every gateway request starts here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.http import HttpRequest
from django.utils import timezone

from runs.core import sql as fastsql
from runs.core.access import current_membership
from runs.core.crypto import KeyDecryptionError, SealedKey
from runs.core.errors import GatewayError
from runs.core.ratelimit import gateway_requests
from runs.models import GatewayToken, Membership, Team, hash_token

TOKEN_TOUCH_INTERVAL = timedelta(seconds=60)


@dataclass
class Caller:
    token: fastsql.TokenRow
    # Still encrypted: opened only inside runs.core.upstream, on the outbound request.
    runtools_key: SealedKey

    @property
    def team(self) -> Team:
        return Team(pk=self.token.team_id)


def credential(request: HttpRequest) -> str:
    """The token the request carries: X-API-Key, or Authorization: Bearer (as RunTools).

    Read from META, where the server's headers are: `request.headers` would first build a
    mapping of every header, on every gateway request."""
    key = request.META.get("HTTP_X_API_KEY", "").strip()
    if key:
        return key
    scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def check_rate(token_id: int, requests_per_minute: int | None) -> None:
    """Count this request against the token's limit; GatewayError 429 past it.

    Counted before the request is served, atomically, so a parallel burst is refused past the
    limit exactly as a serial one. When the cache is down requests are served unmetered:
    that beats refusing every request.
    """
    if not requests_per_minute:
        return
    window = gateway_requests(token_id, requests_per_minute)
    if not window.admit():
        raise GatewayError(
            429,
            "rate_limited",
            f"This token allows {requests_per_minute} requests per minute.",
            {"Retry-After": str(window.retry_after)},
        )


def find_usable_token(plaintext: str) -> fastsql.TokenRow:
    """The request's token, usable and within its rate; GatewayError otherwise."""
    if not plaintext:
        raise GatewayError(401, "unauthorized", "Send an rtdash token in X-API-Key.")
    token = fastsql.find_token(hash_token(plaintext))
    now = timezone.now()
    if token is None or not token.is_usable(now):
        raise GatewayError(401, "invalid_token", "The token is unknown, revoked or expired.")
    check_rate(token.id, token.requests_per_minute)
    if token.last_used_at is None or now - token.last_used_at > TOKEN_TOUCH_INTERVAL:
        # At most one write a minute per token, not one per request.
        GatewayToken.objects.filter(pk=token.id).update(last_used_at=now)
    return token


def authenticate(plaintext: str) -> Caller:
    """Token → the team's default key, sealed and checked; GatewayError otherwise."""
    token = find_usable_token(plaintext)
    if token.default_key_ciphertext is None:
        raise GatewayError(
            503, "no_runtools_key", "The team has no RunTools key; an owner can add one."
        )
    runtools_key = SealedKey(token.default_key_ciphertext)
    try:
        # Checked now so an unreadable key refuses the request before a run is recorded.
        runtools_key.check()
    except KeyDecryptionError:
        raise GatewayError(
            503, "runtools_key_unreadable", "The team's RunTools key cannot be decrypted."
        ) from None
    return Caller(token=token, runtools_key=runtools_key)


@dataclass
class ApiCaller:
    """Who calls a team-scoped JSON endpoint (`/api/...`): a token, or a logged-in member."""

    team: Team
    token: GatewayToken | None = None
    membership: Membership | None = None

    @property
    def user(self):
        return self.membership.user if self.membership is not None else None


def api_caller(request: HttpRequest) -> ApiCaller:
    """The rtdash token's team, else the session's current team; GatewayError otherwise.

    A token is read as the gateway reads it (X-API-Key or Authorization: Bearer) and counts
    against its rate limit; unlike a gateway call, no RunTools key is needed.
    """
    plaintext = credential(request)
    if plaintext:
        token = (
            GatewayToken.objects.select_related("team")
            .filter(token_hash=hash_token(plaintext))
            .first()
        )
        if token is None or not token.is_usable():
            raise GatewayError(401, "invalid_token", "The token is unknown, revoked or expired.")
        check_rate(token.pk, token.requests_per_minute)
        return ApiCaller(team=token.team, token=token)
    membership = current_membership(request)
    if membership is None:
        if request.user.is_authenticated:
            raise GatewayError(404, "not_found", "You are not a member of any team.")
        raise GatewayError(401, "unauthorized", "Log in, or send an rtdash token in X-API-Key.")
    return ApiCaller(team=membership.team, membership=membership)
