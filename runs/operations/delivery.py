"""Sending alerts: e-mail to the members of chosen roles, and signed webhooks.

Each delivery is claimed by a conditional UPDATE before it is tried, so two workers never
send it twice; every try is recorded (AlertAttempt); a failure is retried after
RTDASH_ALERT_RETRY_SECONDS, then twice that, and so on, RTDASH_ALERT_ATTEMPTS times at most.
This runs in a background thread or `manage.py alerts`, never on a run's path.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from datetime import datetime, timedelta

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.db import close_old_connections, connections
from django.utils import timezone

from runs.core.crypto import KeyDecryptionError, SealedKey, encrypt
from runs.models import (
    AlertAttempt,
    AlertDelivery,
    AlertDestination,
    AlertEvent,
    DestinationKind,
    Membership,
)

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Rtdash-Signature"
WEBHOOK_TIMEOUT_SECONDS = 5.0
# A claimed delivery is left alone this long by other workers while it is being tried.
CLAIM_SECONDS = 60
# At most this many deliveries a round, so one round stays short whatever piled up.
DELIVERIES_PER_ROUND = 50


def new_webhook_secret() -> tuple[str, str]:
    """(plaintext to show once, ciphertext to store)."""
    plaintext = "whsec_" + secrets.token_urlsafe(32)
    return plaintext, encrypt(plaintext)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def webhook_body(event: AlertEvent) -> bytes:
    """Slack-compatible (`text`) with the structured fields beside it."""
    rule = event.rule
    payload = {
        "text": event.summary,
        "rtdash": {
            "team": event.team.slug,
            "state": event.state,
            "rule_id": event.rule_id,
            "kind": rule.kind if rule else "",
            "episode": event.episode,
            "value": event.value,
            "at": event.created_at.isoformat(),
        },
    }
    return json.dumps(payload).encode()


def _send_webhook(destination: AlertDestination, event: AlertEvent) -> tuple[bool, int | None, str]:
    body = webhook_body(event)
    try:
        secret = SealedKey(destination.secret_ciphertext).reveal()
    except KeyDecryptionError:
        return False, None, "the signing secret cannot be decrypted with the configured keys"
    headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)}
    try:
        with httpx.Client(timeout=WEBHOOK_TIMEOUT_SECONDS, follow_redirects=False) as client:
            response = client.post(destination.url, content=body, headers=headers)
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        return False, None, f"{type(error).__name__}"
    ok = 200 <= response.status_code < 300
    return ok, response.status_code, "" if ok else f"answered {response.status_code}"


def recipients(destination: AlertDestination) -> list[str]:
    members = Membership.objects.filter(
        team_id=destination.team_id, role__in=destination.role_list
    ).exclude(user__email="")
    return sorted(set(members.values_list("user__email", flat=True)))


def _send_email(destination: AlertDestination, event: AlertEvent) -> tuple[bool, int | None, str]:
    to = recipients(destination)
    if not to:
        return False, None, "no member of those roles has an e-mail address"
    body = f"{event.summary}\n\nSee the team's alerts page in rtdash for the history."
    try:
        send_mail(f"[rtdash] {event.summary[:150]}", body, settings.DEFAULT_FROM_EMAIL, to)
    except OSError as error:  # smtplib's errors are OSErrors, as are refused connections
        return False, None, f"{type(error).__name__}"
    return True, None, ""


def attempt(delivery: AlertDelivery, now: datetime) -> bool:
    """Try one claimed delivery once, record the try, and schedule the next if it failed."""
    destination, event = delivery.destination, delivery.event
    if destination is None:
        ok, code, error = False, None, "the destination was deleted"
    elif destination.kind == DestinationKind.WEBHOOK:
        ok, code, error = _send_webhook(destination, event)
    else:
        ok, code, error = _send_email(destination, event)
    AlertAttempt.objects.create(delivery=delivery, ok=ok, response_code=code, error=error[:300])
    attempts = delivery.attempts + 1
    if ok:
        status, next_at = AlertDelivery.SENT, now
    elif attempts >= settings.RTDASH_ALERT_ATTEMPTS or destination is None:
        status, next_at = AlertDelivery.FAILED, now
    else:
        delay = settings.RTDASH_ALERT_RETRY_SECONDS * 2 ** (attempts - 1)
        status, next_at = AlertDelivery.PENDING, now + timedelta(seconds=delay)
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        status=status, attempts=attempts, next_attempt_at=next_at
    )
    return ok


def deliver_due(now: datetime | None = None) -> int:
    """Try the deliveries that are due; how many were sent."""
    now = now or timezone.now()
    due = AlertDelivery.objects.filter(
        status=AlertDelivery.PENDING, next_attempt_at__lte=now
    ).order_by("next_attempt_at", "pk")
    sent = 0
    for delivery_id in list(due.values_list("pk", flat=True)[:DELIVERIES_PER_ROUND]):
        claimed = AlertDelivery.objects.filter(
            pk=delivery_id, status=AlertDelivery.PENDING, next_attempt_at__lte=now
        ).update(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
        if not claimed:
            continue  # another worker has it
        delivery = AlertDelivery.objects.select_related(
            "destination", "event__team", "event__rule"
        ).get(pk=delivery_id)
        sent += attempt(delivery, now)
    return sent


def alerts_round(now: datetime | None = None) -> tuple[int, int]:
    """Evaluate every rule, then send what is due: (events made, deliveries sent)."""
    from runs.operations.alerts import evaluate_all

    events = evaluate_all(now)
    return len(events), deliver_due(now)


class AlertLoop(threading.Thread):
    """Each worker's alert thread: a round every RTDASH_ALERT_INTERVAL seconds."""

    def __init__(self, interval: float) -> None:
        super().__init__(name="rtdash-alerts", daemon=True)
        self.interval = interval
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                close_old_connections()
                alerts_round()
            except Exception:
                # A database hiccup must not end the thread; the next round tries again.
                logger.exception("rtdash alert round failed")
        connections.close_all()  # this thread's connections, when it is stopped


_loop: AlertLoop | None = None


def start_alert_loop() -> AlertLoop | None:
    """Start this worker's alert thread once (no-op when RTDASH_ALERT_INTERVAL is 0)."""
    global _loop
    if _loop is None and settings.RTDASH_ALERT_INTERVAL > 0:
        _loop = AlertLoop(settings.RTDASH_ALERT_INTERVAL)
        _loop.start()
    return _loop
