"""rtdash's raw SQL (runs.core.sql): what it writes and reads is what the ORM would."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import DatabaseError, connection
from django.forms.models import model_to_dict
from django.utils import timezone

from runs.core import sql as fastsql
from runs.models import GatewayToken, Run, RunStatus, Source, hash_token

pytestmark = pytest.mark.django_db(transaction=True)


def _fields(run: Run) -> dict:
    values = model_to_dict(run)
    values.pop("id")
    return values


def _run_values(team, token) -> dict:
    now = timezone.now()
    return {
        "team": team,
        "source": Source.GATEWAY,  # a TextChoices member, not a plain str
        "token_id": token.pk,
        "agent": "support-chat",
        "prompt": "A prompt with ünïcode and a \\ backslash",
        "messages": [{"role": "user", "content": "hi"}],
        "config": {"maxTurns": 3, "temperature": 0.5},
        "metadata": {"customer": "ç", "n": 1},
        "stream": True,
        "legacy_path": False,
        "upstream_thread_id": "",
        "status": RunStatus.RUNNING,
        "started_at": now,
        "heartbeat_at": now - timedelta(seconds=1),
        "overhead_ms": 1.25,
        "cost": Decimal("0.000123456"),
        "iterations": None,
        "http_status": 200,
        "frame_count": 3,
    }


def test_a_run_inserted_by_the_prepared_statement_reads_back_as_the_orms(acme, acme_token):
    token, _plaintext = acme_token
    values = _run_values(acme, token)
    through_orm = Run.objects.create(**values)
    prepared = fastsql.insert(Run(**values))
    assert prepared.pk != through_orm.pk
    assert _fields(Run.objects.get(pk=prepared.pk)) == _fields(Run.objects.get(pk=through_orm.pk))


def test_a_new_instance_built_positionally_is_the_keyword_ones(acme, acme_token):
    token, _plaintext = acme_token
    values = _run_values(acme, token)
    by_attname = {("team_id" if name == "team" else name): value for name, value in values.items()}
    by_attname["team_id"] = acme.pk
    built, by_keyword = fastsql.new(Run, by_attname), Run(**values)
    assert _fields(built) == _fields(by_keyword)
    assert built._state.adding
    # Only some fields given: the rest at their defaults, a callable one made anew each time.
    few = {"team_id": acme.pk, "source": Source.GATEWAY, "agent": "a", "prompt": "p"}
    first, second = fastsql.new(Run, few), fastsql.new(Run, few)
    expected = _fields(Run(team=acme, source=Source.GATEWAY, agent="a", prompt="p"))
    assert {**_fields(first), "started_at": None} == {**expected, "started_at": None}
    assert first.config == {} and first.config is not second.config  # `dict`, called for each
    with pytest.raises(TypeError, match="'team'"):
        fastsql.new(Run, {"team": acme})


def test_values_of_another_type_than_the_columns_are_converted_as_the_orm_would(acme, acme_token):
    token, _plaintext = acme_token
    odd = {**_run_values(acme, token), "http_status": "201", "frame_count": True}
    prepared = Run.objects.get(pk=fastsql.insert(Run(**odd)).pk)
    through_orm = Run.objects.get(pk=Run.objects.create(**odd).pk)
    assert (prepared.http_status, prepared.frame_count) == (201, 1)
    assert _fields(prepared) == _fields(through_orm)


def test_the_token_lookup_reads_the_row_as_the_orm(acme, acme_key, acme_token):
    token, plaintext = acme_token
    GatewayToken.objects.filter(pk=token.pk).update(
        last_used_at=timezone.now(), requests_per_minute=7
    )
    token.refresh_from_db()
    found = fastsql.find_token(hash_token(plaintext))
    assert (found.id, found.team_id, found.prefix) == (token.pk, token.team_id, token.prefix)
    assert (found.last_used_at, found.expires_at, found.revoked_at) == (
        token.last_used_at,
        None,
        None,
    )
    assert found.requests_per_minute == 7
    assert found.default_key_ciphertext == acme_key.ciphertext
    assert found.has_budget is False
    assert fastsql.find_token(hash_token("not a token")) is None


def test_a_database_error_on_the_drivers_cursor_is_djangos(acme, acme_token):
    """The gateway answers a database failure with a 503 (rtdash.unavailable), which catches
    Django's DatabaseError: the driver's own errors must still come out as Django's."""
    _token, plaintext = acme_token
    table = connection.ops.quote_name(GatewayToken._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO moved_away")
    try:
        with pytest.raises(DatabaseError):
            fastsql.find_token(hash_token(plaintext))
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE moved_away RENAME TO {table}")


def test_an_update_of_a_deferred_field_writes_what_the_orm_would(acme, acme_token):
    """A field left deferred and unassigned is loaded, as save(update_fields=...) loads it."""
    token, _plaintext = acme_token
    run = fastsql.insert(Run(**{**_run_values(acme, token), "result": "kept"}))
    partial = Run.objects.only("id", "status").get(pk=run.pk)
    partial.status = RunStatus.COMPLETED
    fastsql.update(partial, ["status", "result"])
    assert Run.objects.values_list("status", "result").get(pk=run.pk) == ("completed", "kept")


def test_an_instance_from_a_raw_row_keeps_a_foreign_key_named_either_way(acme, acme_token):
    token, _plaintext = acme_token
    run = fastsql.insert(Run(**_run_values(acme, token)))
    for name in ("team", "team_id"):
        sql = f"SELECT id, team_id FROM runs_run WHERE id = {run.pk}"  # noqa: S608 - a test's own id
        found = fastsql.first_instance(Run, sql, [], ("id", name))
        assert "team_id" not in found.get_deferred_fields()  # read, not left to a query
        assert found.team_id == acme.pk


def test_the_finish_loads_no_field_it_writes(acme, acme_token, monkeypatch):
    """finish_run reads the run with FINISH_READS and writes FINISH_WRITES: each written field
    must be assigned first, or writing it would load it with a query of its own."""
    from runs.pipeline.recording import RunOutcome, finish_run

    token, _plaintext = acme_token
    run = fastsql.insert(Run(**_run_values(acme, token)))
    loaded = []
    refresh = Run.refresh_from_db

    def spy(self, *args, **kwargs):
        loaded.append(kwargs.get("fields") or args)
        return refresh(self, *args, **kwargs)

    monkeypatch.setattr(Run, "refresh_from_db", spy)
    usage = {"inputTokens": 3, "outputTokens": 5, "totalTokens": 8}
    finish_run(run.pk, RunOutcome(status=RunStatus.COMPLETED, usage=usage, http_status=200))
    assert Run.objects.values_list("status", flat=True).get(pk=run.pk) == "completed"
    assert loaded == []
