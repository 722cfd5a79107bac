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
from runs.core.crypto import KeyDecryptionError, SealedKey
from runs.core.errors import GatewayError
from runs.core.ratelimit import gateway_requests
from runs.models import GatewayToken, Team, hash_token

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
    """The token the request carries: X-API-Key, or Authorization: Bearer (as RunTools)."""
    key = request.headers.get("X-API-Key", "").strip()
    if key:
        return key
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
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
