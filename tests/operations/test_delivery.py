"""Alert destinations: a real SMTP server and a real webhook receiver on loopback, retries with
backoff, the signature, and the settings and alerts pages."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from aiosmtpd.controller import Controller
from django.test import Client
from django.utils import timezone

from runs.models import (
    AlertAttempt,
    AlertDelivery,
    AlertDestination,
    AlertKind,
    AlertRule,
    AuditEvent,
    Budget,
)
from runs.operations.delivery import SIGNATURE_HEADER, alerts_round
from simulator.testing import HOST, free_port
from tests.operations.helpers import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = re.compile(r'value="(whsec_[^"]+)"')


class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp(settings):
    """A real SMTP server on loopback, started by the test (so it can be down at first)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = HOST, free_port()
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname=HOST, port=settings.EMAIL_PORT)
    yield mailbox, controller
    if controller._thread is not None:
        controller.stop()


@pytest.fixture
def retry_now(settings):
    settings.RTDASH_ALERT_RETRY_SECONDS = 0
    settings.RTDASH_ALERT_ATTEMPTS = 3


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def add_webhook(client: Client, url: str, name: str = "ops") -> tuple[int, str]:
    response = client.post(
        "/settings/alerts/destinations/", {"kind": "webhook", "name": name, "url": url}
    )
    assert response.status_code == 200, response.content.decode()[:2000]
    destination = AlertDestination.objects.get(name=name)
    return response, destination, SECRET.search(response.content.decode()).group(1)


def firing_rule(team) -> AlertRule:
    """A rule whose condition holds at once: any cost in the last hour over -$1."""
    return AlertRule.objects.create(team=team, kind=AlertKind.HOURLY_COST, amount=Decimal(-1))


# --- webhooks -------------------------------------------------------------------------------


@pytest.mark.usefixtures("retry_now")
def test_a_webhook_is_signed_retried_and_recorded(acme, alice):
    client = logged_in(alice)
    with Receiver(failures=1) as receiver:
        _response, destination, secret = add_webhook(client, receiver.url)
        assert destination.secret_ciphertext and secret not in destination.secret_ciphertext
        rule = firing_rule(acme)

        assert alerts_round() == (1, 0)  # the receiver answers 500 first
        assert alerts_round() == (0, 1)  # then recovers: retried and sent
        assert alerts_round() == (0, 0)  # nothing more: one alert per episode

    assert len(receiver.requests) == 2
    headers, body = receiver.requests[-1]
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers[SIGNATURE_HEADER], expected)
    payload = receiver.bodies()[-1]
    assert payload["text"].startswith("Alert: cost in the last hour")
    assert payload["rtdash"] == payload["rtdash"] | {
        "team": "acme",
        "state": "firing",
        "rule_id": rule.pk,
        "kind": "hourly_cost",
        "episode": 1,
    }
    delivery = AlertDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("sent", 2)
    attempts = list(AlertAttempt.objects.order_by("pk").values_list("ok", "response_code"))
    assert attempts == [(False, 500), (True, 200)]
    # The alerts page shows each try; the secret is nowhere but in the one response.
    page = client.get("/alerts/").content.decode()
    assert "failed 500" in page and "ok 200" in page
    assert secret not in client.get("/settings/alerts/").content.decode()


@pytest.mark.usefixtures("retry_now")
def test_a_resolved_notice_follows(acme, alice):
    with Receiver() as receiver:
        add_webhook(logged_in(alice), receiver.url)
        rule = firing_rule(acme)
        alerts_round()
        AlertRule.objects.filter(pk=rule.pk).update(amount=Decimal(1000))
        assert alerts_round() == (1, 1)
    assert [body["rtdash"]["state"] for body in receiver.bodies()] == ["firing", "resolved"]
    assert receiver.bodies()[-1]["text"].startswith("Resolved:")


def test_retries_back_off_and_stop(acme, alice, settings):
    settings.RTDASH_ALERT_RETRY_SECONDS = 60
    settings.RTDASH_ALERT_ATTEMPTS = 2
    with Receiver(failures=10) as receiver:
        add_webhook(logged_in(alice), receiver.url)
        firing_rule(acme)
        alerts_round()
        delivery = AlertDelivery.objects.get()
        wait = delivery.next_attempt_at - timezone.now()
        assert timedelta(seconds=50) < wait <= timedelta(seconds=60)
        assert alerts_round() == (0, 0)  # not yet due
        alerts_round(timezone.now() + timedelta(seconds=61))
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert len(receiver.requests) == 2


@pytest.mark.usefixtures("retry_now")
def test_an_unreachable_webhook_is_recorded_as_failed(acme, alice):
    url = f"http://{HOST}:{free_port()}/nobody-listens"
    add_webhook(logged_in(alice), url)
    firing_rule(acme)
    alerts_round()
    attempt = AlertAttempt.objects.get()
    assert not attempt.ok and attempt.response_code is None and attempt.error == "ConnectError"


# --- e-mail ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("retry_now")
def test_email_reaches_the_chosen_roles_after_the_server_comes_back(acme, alice, bob, smtp):
    mailbox, controller = smtp
    client = logged_in(alice)
    response = client.post(
        "/settings/alerts/destinations/", {"kind": "email", "name": "owners", "roles": ["owner"]}
    )
    assert response.status_code == 200
    firing_rule(acme)

    alerts_round()  # the SMTP server is down
    controller.start()
    alerts_round()

    attempts = list(AlertAttempt.objects.order_by("pk").values_list("ok", flat=True))
    assert attempts == [False, True]
    assert len(mailbox.messages) == 1
    message = mailbox.messages[0]
    assert message.rcpt_tos == [alice.email]  # bob is a member, not an owner
    assert b"cost in the last hour" in message.content


# --- the forms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://127.0.0.1/hook",  # rtdash itself: the test client's port is 80
        "http://localhost:80/hook",
        "https://rtdash.example.com/hook",  # one of its ALLOWED_HOSTS
        "https://RTDASH.example.com./hook",
    ],
)
def test_it_refuses_webhook_urls_outside_http_or_at_rtdash_itself(alice, settings, url):
    settings.ALLOWED_HOSTS = ["rtdash.example.com", "testserver"]
    response = logged_in(alice).post(
        "/settings/alerts/destinations/", {"kind": "webhook", "name": "bad", "url": url}
    )
    assert response.status_code == 400
    assert "errorlist" in response.content.decode()
    assert not AlertDestination.objects.exists()


def test_it_accepts_a_loopback_receiver_on_another_port(alice):
    _response, destination, _secret = add_webhook(
        logged_in(alice), f"http://{HOST}:{free_port()}/hook"
    )
    assert destination.kind == "webhook"
    assert AuditEvent.objects.filter(action="alert_destination_added").exists()


def test_a_rule_needs_what_its_kind_needs(alice, acme):
    client = logged_in(alice)
    soft = Budget.objects.create(team=acme, monthly_limit=Decimal(10))
    for data in (
        {"kind": "budget_percent", "percent": "80"},
        {"kind": "budget_hard", "budget": soft.pk},
        {"kind": "error_rate", "percent": "150", "window_minutes": "5"},
        {"kind": "hourly_cost"},
        {"kind": "nonsense"},
    ):
        response = client.post("/settings/alerts/rules/", data)
        assert response.status_code == 400, data
    assert not AlertRule.objects.exists()


def test_owners_add_and_delete_rules_with_an_audit_trail(alice, acme):
    client = logged_in(alice)
    budget = Budget.objects.create(team=acme, monthly_limit=Decimal(10))
    response = client.post(
        "/settings/alerts/rules/", {"kind": "budget_percent", "budget": budget.pk, "percent": 80}
    )
    assert response.status_code == 302
    rule = AlertRule.objects.get()
    assert (rule.team, rule.budget, rule.percent) == (acme, budget, 80)
    assert "reached 80% of $10.00" in client.get("/settings/alerts/").content.decode()
    assert client.post(f"/settings/alerts/rules/{rule.pk}/delete/").status_code == 302
    assert not AlertRule.objects.exists()
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"alert_rule_added", "alert_rule_deleted"} <= actions


def test_another_teams_budget_cannot_be_chosen(alice, globex):
    foreign = Budget.objects.create(team=globex, monthly_limit=Decimal(10))
    response = logged_in(alice).post(
        "/settings/alerts/rules/", {"kind": "budget_percent", "budget": foreign.pk, "percent": 5}
    )
    assert response.status_code == 400
    assert not AlertRule.objects.exists()


# --- who may see what -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/settings/alerts/", "/alerts/"])
def test_anonymous_people_are_sent_to_log_in(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_members_read_alerts_but_not_their_settings(bob):
    client = logged_in(bob)
    assert client.get("/alerts/").status_code == 200
    assert client.get("/settings/alerts/").status_code == 404
    assert client.post("/settings/alerts/rules/", {"kind": "hourly_cost"}).status_code == 404


def test_outsiders_cannot_touch_a_teams_rules_or_destinations(acme, alice, charlie):
    rule = firing_rule(acme)
    _response, destination, _secret = add_webhook(
        logged_in(alice), f"http://{HOST}:{free_port()}/hook"
    )
    client = logged_in(charlie)
    assert client.post(f"/settings/alerts/rules/{rule.pk}/delete/").status_code == 404
    assert client.post(f"/settings/alerts/destinations/{destination.pk}/delete/").status_code == 404
    assert AlertRule.objects.filter(pk=rule.pk).exists()
    assert AlertDestination.objects.filter(pk=destination.pk).exists()
    alerts_round()
    assert "cost in the last hour" not in client.get("/alerts/").content.decode()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/settings/alerts/"),
        ("post", "/alerts/"),
        ("get", "/settings/alerts/rules/"),
        ("get", "/settings/alerts/destinations/"),
    ],
)
def test_it_rejects_the_wrong_method(alice, method, path):
    assert getattr(logged_in(alice), method)(path).status_code == 405


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "error_rate", "percent": "NaN", "window_minutes": "5"},
        {"kind": "error_rate", "percent": "Infinity", "window_minutes": "5"},
        {"kind": "error_rate", "percent": "10", "window_minutes": "1e9"},
        {"kind": "budget_percent", "budget": "1 OR 1=1", "percent": "10"},
        {"kind": "hourly_cost", "amount": "-5"},
        {"kind": "hourly_cost", "amount": "9" * 40},
        {"kind": ["hourly_cost", "error_rate"], "amount": "\x00"},
    ],
)
def test_hostile_rule_forms_are_form_errors(alice, data):
    response = logged_in(alice).post("/settings/alerts/rules/", data)
    assert response.status_code == 400
    assert not AlertRule.objects.exists()


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "email", "name": "x", "roles": ["superuser"]},
        {"kind": "email", "name": "x"},
        {"kind": "webhook", "name": "x"},
        {"kind": "webhook", "name": "x", "url": "http://[::1"},
        {"kind": "webhook", "name": "x", "url": "http://example.com:99999/"},
        {"kind": "pigeon", "name": "x", "url": "https://example.com/"},
        {"kind": "webhook", "name": "", "url": "https://example.com/"},
    ],
)
def test_hostile_destination_forms_are_form_errors(alice, data):
    response = logged_in(alice).post("/settings/alerts/destinations/", data)
    assert response.status_code == 400
    assert not AlertDestination.objects.exists()


def test_a_secret_that_cannot_be_decrypted_is_a_failed_attempt(acme, alice, settings):
    from cryptography.fernet import Fernet

    add_webhook(logged_in(alice), f"http://{HOST}:{free_port()}/hook")
    firing_rule(acme)
    settings.RTDASH_ENCRYPTION_KEYS = Fernet.generate_key().decode()  # the old key is gone
    alerts_round()
    attempt = AlertAttempt.objects.get()
    assert not attempt.ok and "cannot be decrypted" in attempt.error


def test_each_worker_runs_alert_rounds_on_its_own_thread(acme):
    from runs.operations.delivery import AlertLoop

    rule = firing_rule(acme)
    loop = AlertLoop(0.05)
    loop.start()
    try:
        deadline = timezone.now() + timedelta(seconds=10)
        while not rule.events.exists() and timezone.now() < deadline:
            loop.stopping.wait(0.05)
    finally:
        loop.stopping.set()
        loop.join(5)
    assert list(rule.events.values_list("state", flat=True)) == ["firing"]
