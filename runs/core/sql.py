"""rtdash's raw SQL, all of it: statements built once, for what every run does.

A run through the gateway inserts its row, then finishes it: the row, its thread, the daily
rollup and two statistics rows. Profiled on the gateway's path, the ORM spent most of that
time compiling the same queries again for every run,
far more than the database spent running them. The helpers here build each statement once per
model and column list and bind values with the fields' own `get_db_prep_save`, so the database
receives exactly what the ORM would have sent it.

Everything else keeps using the ORM: these are for the hot path only (docs/performance.md,
"Prepared statements", says which pay and by how much), plus one INSERT … SELECT the ORM
cannot express.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models import DEFERRED, Field, Model, QuerySet


def _connection():
    # The connection itself, not django.db.connection: each attribute read through that proxy
    # goes through asgiref's Local, and preparing one row's values reads it ~20 times.
    return connections[DEFAULT_DB_ALIAS]


def _quote(name: str) -> str:
    return _connection().ops.quote_name(name)


def _fields(model: type[Model], names: Iterable[str]) -> list[Field]:
    return [model._meta.get_field(name) for name in names]


def _db_value(field: Field, instance: Model, connection, add: bool) -> Any:
    return field.get_db_prep_save(field.pre_save(instance, add), connection)


def _in_driver_style(sql: str, vendor: str) -> str:
    """The statement with the driver's own placeholders: sqlite3 takes `?` (Django's cursor
    rewrites `%s` with a regular expression on every call), psycopg takes `%s`."""
    return sql.replace("%s", "?") if vendor == "sqlite" else sql


@contextlib.contextmanager
def _driver_cursor():
    """The database driver's own cursor, for the statements on the gateway's path before a run
    goes upstream: Django's cursor wrapper (placeholder rewriting, execute wrappers, query
    logging) cost more there than the statements themselves. What Django's `cursor()` does
    that matters is kept: the health check, the connection, and its database errors."""
    connection = _connection()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = connection.connection.cursor()
        try:
            yield cursor
        finally:
            cursor.close()


# Fields whose value Django sends to the database unchanged when it is already of this type
# (their get_db_prep_save converts to it, and their pre_save only reads the attribute).
_UNCHANGED = (
    (models.CharField, str),
    (models.TextField, str),
    (models.BooleanField, bool),
    (models.IntegerField, int),
    (models.ForeignKey, int),
)


def _value_reader(field: Field, add: bool = True) -> Callable[[Model, Any], Any]:
    """How one column's value is read from an instance to be written (inserted when `add`,
    else updated), given the connection: the attribute itself where Django would send it as
    it is, Django's conversion otherwise."""
    kind = next((kind for cls, kind in _UNCHANGED if isinstance(field, cls)), None)
    if kind is None or isinstance(field, models.AutoField):
        return functools.partial(_db_value, field, add=add)
    attname, null = field.attname, field.null

    def read(instance: Model, connection) -> Any:
        # A deferred field is not in __dict__: Django's own path loads it (one query).
        value = instance.__dict__.get(attname, DEFERRED)
        if type(value) is kind or (value is None and null):
            return value
        return _db_value(field, instance, connection, add)

    return read


@functools.cache
def _defaults(model: type[Model]) -> tuple[tuple[str, Callable[[], Any] | None, Any], ...]:
    """Per concrete field, in order: its attribute name, and its default as a callable to
    call (a default that is one) or as the value itself (every other default, made once, as
    Django hands the same object to every instance)."""
    result = []
    for field in model._meta.concrete_fields:
        if field.has_default() and callable(field.default):
            result.append((field.attname, field.get_default, None))
        else:
            result.append((field.attname, None, field.get_default()))
    return tuple(result)


def new(model: type[Model], values: dict[str, Any]) -> Model:
    """A new, unsaved instance: `values` by attribute name (`team_id`, not `team`) and every
    other field at its default, as `model(**values)` makes it; built from positional
    arguments, as the ORM builds a fetched row. The keyword path looks each field up by name:
    for a Run, 22 µs against 9 (bench/prepared.py), on the gateway's path before a run goes
    upstream."""
    unused = set(values)
    args = []
    for attname, make, default in _defaults(model):
        if attname in values:
            args.append(values[attname])
            unused.discard(attname)
        else:
            args.append(make() if make is not None else default)
    if unused:
        raise TypeError(f"{model.__name__} has no field {sorted(unused)[0]!r}")
    return model(*args)


@functools.cache
def _insert_sql(model: type[Model], vendor: str) -> tuple[str, tuple[Callable, ...]]:
    fields = tuple(f for f in model._meta.concrete_fields if not f.primary_key)
    columns = ", ".join(_quote(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    pk = _quote(model._meta.pk.column)
    sql = f"INSERT INTO {_quote(model._meta.db_table)} ({columns}) VALUES ({marks}) RETURNING {pk}"  # noqa: S608 - names from the model, values bound
    return _in_driver_style(sql, vendor), tuple(_value_reader(f) for f in fields)


def insert(instance: Model) -> Model:
    """INSERT every column of a new instance and set its primary key."""
    connection = _connection()
    sql, readers = _insert_sql(type(instance), connection.vendor)
    values = [read(instance, connection) for read in readers]
    with _driver_cursor() as cursor:
        cursor.execute(sql, values)
        instance.pk = cursor.fetchone()[0]
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


@functools.cache
def _update_sql(
    model: type[Model], names: tuple[str, ...], vendor: str
) -> tuple[str, tuple[Callable, ...]]:
    fields = tuple(_fields(model, names))
    assignments = ", ".join(f"{_quote(f.column)} = %s" for f in fields)
    pk = _quote(model._meta.pk.column)
    sql = f"UPDATE {_quote(model._meta.db_table)} SET {assignments} WHERE {pk} = %s"  # noqa: S608 - names from the model, values bound
    return sql, tuple(_value_reader(f, add=False) for f in fields)


def update(instance: Model, names: Sequence[str]) -> None:
    """UPDATE the named fields of a saved instance (like save(update_fields=...))."""
    connection = _connection()
    sql, readers = _update_sql(type(instance), tuple(names), connection.vendor)
    values = [read(instance, connection) for read in readers]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, instance.pk])


@functools.cache
def _upsert_sql(
    model: type[Model],
    names: tuple[str, ...],
    key: tuple[str, ...],
    added: tuple[str, ...],
    replaced: tuple[str, ...],
    vendor: str,
) -> tuple[str, tuple[Callable, ...]]:
    fields = tuple(_fields(model, names))
    table = _quote(model._meta.db_table)
    columns = ", ".join(_quote(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    conflict = ", ".join(_quote(f.column) for f in _fields(model, key))
    sets = [
        f"{_quote(f.column)} = {table}.{_quote(f.column)} + EXCLUDED.{_quote(f.column)}"
        for f in _fields(model, added)
    ] + [f"{_quote(f.column)} = EXCLUDED.{_quote(f.column)}" for f in _fields(model, replaced)]
    action = f"DO UPDATE SET {', '.join(sets)}" if sets else "DO NOTHING"
    pk = _quote(model._meta.pk.column)
    sql = (
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) "  # noqa: S608 - names from the model, values bound
        f"ON CONFLICT ({conflict}) {action} RETURNING {pk}"
    )
    return sql, tuple(_value_reader(f) for f in fields)


def _upsert(instance: Model, key, added, replaced) -> int | None:
    names = tuple(f.name for f in type(instance)._meta.concrete_fields if not f.primary_key)
    connection = _connection()
    sql, readers = _upsert_sql(
        type(instance), names, tuple(key), tuple(added), tuple(replaced), connection.vendor
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [read(instance, connection) for read in readers])
        row = cursor.fetchone()
    return None if row is None else row[0]


def upsert_adding(
    instance: Model,
    key: Sequence[str],
    added: Sequence[str],
    replaced: Sequence[str] = (),
) -> int:
    """Insert the instance, or if a row with the same `key` (a unique constraint) exists, add
    its `added` counters to that row's and overwrite `replaced`. One statement, safe against a
    concurrent insert of the same key. Returns the row's primary key.
    """
    return _upsert(instance, key, added, replaced)


def insert_if_absent(instance: Model, key: Sequence[str]) -> int | None:
    """Insert the instance unless a row with the same `key` exists; its primary key, or None
    when the row was already there."""
    return _upsert(instance, key, (), ())


@functools.cache
def _add_sql(
    model: type[Model], added: tuple[str, ...], replaced: tuple[str, ...], vendor: str
) -> str:
    sets = [f"{_quote(f.column)} = {_quote(f.column)} + %s" for f in _fields(model, added)]
    sets += [f"{_quote(f.column)} = %s" for f in _fields(model, replaced)]
    pk = _quote(model._meta.pk.column)
    return f"UPDATE {_quote(model._meta.db_table)} SET {', '.join(sets)} WHERE {pk} = %s"  # noqa: S608 - names from the model, values bound


def add_to_row(model: type[Model], pk: int, added: dict[str, int], replaced: dict[str, Any]):
    """Add to a row's counters and overwrite other columns, by primary key, in one UPDATE."""
    connection = _connection()
    sql = _add_sql(model, tuple(added), tuple(replaced), connection.vendor)
    prepped = [
        model._meta.get_field(name).get_db_prep_save(value, connection)
        for name, value in replaced.items()
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*added.values(), *prepped, pk])


@functools.cache
def _columns(model: type[Model], names: tuple[str, ...], vendor: str) -> tuple[tuple, ...]:
    """Per column, its expression and what the ORM's compiler would apply to a fetched value
    (the backend's converters, then the field's, each given that expression, as a decimal's
    reads its places from it), so a raw row reads exactly as a queryset's would."""
    connection = _connection()
    result = []
    for field in _fields(model, names):
        column = field.get_col(model._meta.db_table)
        converters = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
        result.append((column, converters))
    return tuple(result)


def _instance(model: type[Model], names: tuple[str, ...], row: Sequence) -> Model:
    """An instance from a raw row that starts with the columns of `names` (field names),
    built as the ORM builds a fetched row (Model.from_db); the other fields stay deferred.

    A raw queryset would resolve the row's columns against the model anew on every call: on
    the finish's path that cost twice what building the instance does."""
    converted = _converted(model, names, row[: len(names)])
    # Keyed by attribute name, whichever name (`team` or `team_id`) the caller gave.
    found = {
        field.attname: value for field, value in zip(_fields(model, names), converted, strict=True)
    }
    values = [found.get(field.attname, DEFERRED) for field in model._meta.concrete_fields]
    return model.from_db(_connection().alias, tuple(found), values)


def _first_row(sql: str, params: Sequence) -> tuple | None:
    with _connection().cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def first_instance(model: type[Model], sql: str, params: Sequence, names: tuple[str, ...]):
    """The first row of `sql`, which selects the columns of `names` (field names) in that
    order, as an instance (see `_instance`); None when there is no row."""
    row = _first_row(sql, params)
    return None if row is None else _instance(model, names, row)


def _converted(model: type[Model], names: tuple[str, ...], row: Sequence) -> list[Any]:
    """A raw row's values for these fields, as a queryset would have read them."""
    connection = _connection()
    values = []
    for (column, converters), value in zip(
        _columns(model, names, connection.vendor), row, strict=True
    ):
        for convert in converters:
            value = convert(value, column, connection)
        values.append(value)
    return values


def for_update() -> str:
    """The row-locking suffix for a SELECT, where the database has one (SQLite locks the whole
    database for a write transaction instead: rtdash opens them IMMEDIATE)."""
    return " FOR UPDATE" if _connection().features.has_select_for_update else ""


# --- the gateway's token lookup ------------------------------------------------------------


@dataclass(frozen=True)
class TokenRow:
    """A gateway token as its request needs it, with its team's default key (still sealed:
    the ciphertext) and whether the team has any budget, all from one query."""

    id: int
    team_id: int
    prefix: str
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    requests_per_minute: int | None
    default_key_ciphertext: bytes | None
    has_budget: bool

    def is_usable(self, now: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now


TOKEN_FIELDS = (
    "id", "team", "prefix", "last_used_at", "expires_at", "revoked_at", "requests_per_minute",
)  # fmt: skip


@functools.cache
def _token_sql(vendor: str) -> str:
    from runs.models import Budget, GatewayToken, RunToolsKey

    token, key, budget = (_quote(m._meta.db_table) for m in (GatewayToken, RunToolsKey, Budget))
    columns = ", ".join(f"t.{_quote(f.column)}" for f in _fields(GatewayToken, TOKEN_FIELDS))
    sql = (
        f"SELECT {columns}, "  # noqa: S608 - names from the models, the value is bound
        f"(SELECT k.ciphertext FROM {key} k WHERE k.team_id = t.team_id AND k.is_default "
        "AND k.revoked_at IS NULL LIMIT 1), "
        f"EXISTS (SELECT 1 FROM {budget} b WHERE b.team_id = t.team_id) "
        f"FROM {token} t WHERE t.token_hash = %s"
    )
    return _in_driver_style(sql, vendor)


def find_token(token_hash: str) -> TokenRow | None:
    """The token with this hash, its team's default key and budget flag, in one query."""
    from runs.models import GatewayToken

    connection = _connection()
    with _driver_cursor() as cursor:
        cursor.execute(_token_sql(connection.vendor), [token_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    fields = _converted(GatewayToken, TOKEN_FIELDS, row[: len(TOKEN_FIELDS)])
    ciphertext, has_budget = row[len(TOKEN_FIELDS) :]
    return TokenRow(*fields, default_key_ciphertext=ciphertext, has_budget=bool(has_budget))


# --- a run's frames and its finish -----------------------------------------------------------


FrameRow = tuple[int, int, str, str, Any]  # (run id, sequence, event, data, received at)


@functools.cache
def _frame_sql(vendor: str) -> tuple[str, str]:
    from runs.models import Run, RunEvent

    insert = (
        f"INSERT INTO {_quote(RunEvent._meta.db_table)} "  # noqa: S608 - names from the model, values bound
        "(run_id, sequence, event, data, created_at) VALUES (%s, %s, %s, %s, %s)"
    )
    heartbeat = f"UPDATE {_quote(Run._meta.db_table)} SET heartbeat_at = %s WHERE id IN "  # noqa: S608 - names from the model, values bound
    return insert, heartbeat


def insert_frames(rows: list[FrameRow], run_ids: Sequence[int], heartbeat_at: Any) -> None:
    """Insert frames (values already adapted for the database) in one executemany, and stamp
    their runs' heartbeats, in one transaction."""
    connection = _connection()
    insert, heartbeat = _frame_sql(connection.vendor)
    marks = ", ".join(["%s"] * len(run_ids))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(insert, rows)
        cursor.execute(f"{heartbeat}({marks})", [heartbeat_at, *run_ids])


@functools.cache
def _run_read_sql(names: tuple[str, ...], vendor: str) -> str:
    from runs.models import Run, Team

    columns = ", ".join(_quote(f.column) for f in _fields(Run, ("id", *names)))
    run, team = _quote(Run._meta.db_table), _quote(Team._meta.db_table)
    # The team's time zone rides along (a lookup by primary key), so the finish step knows
    # the run's day without a query of its own (runs.core.days.run_day).
    zone = f"(SELECT t.timezone FROM {team} t WHERE t.id = {run}.team_id) AS team_timezone"  # noqa: S608 - names from the models
    return f"SELECT {columns}, {zone} FROM {run} WHERE id = %s" + for_update()  # noqa: S608 - names from the model, the value bound


def run_for_update(run_id: int, names: Sequence[str]):
    """The run, locked, with only the named columns (the others stay deferred), and its
    team's time zone as `team_timezone`.

    Built as the ORM builds a fetched row (Model.from_db), from the driver's row: a raw
    queryset resolved its columns against the model anew on every finish."""
    from runs.models import Run

    row = _first_row(_run_read_sql(tuple(names), _connection().vendor), [run_id])
    if row is None:
        raise Run.DoesNotExist(f"run {run_id} does not exist")
    run = _instance(Run, ("id", *names), row)
    run.team_timezone = row[-1]
    return run


@functools.cache
def _stats_row_sql(vendor: str) -> str:
    from runs.models import DailyRunStats

    return (
        "SELECT id, duration_buckets, first_byte_buckets "  # noqa: S608 - names from the model, values bound
        f"FROM {_quote(DailyRunStats._meta.db_table)} "
        "WHERE team_id = %s AND day = %s AND dimensions = %s" + for_update()
    )


def stats_row_for_update(team_id: int, day: date, dimensions: str) -> tuple | None:
    """A DailyRunStats row's id and bucket texts, locked; None when there is none yet."""
    connection = _connection()
    with connection.cursor() as cursor:
        cursor.execute(
            _stats_row_sql(connection.vendor),
            [team_id, connection.ops.adapt_datefield_value(day), dimensions],
        )
        return cursor.fetchone()


def insert_from_select(model: type[Model], names: Sequence[str], select: QuerySet) -> int:
    """INSERT INTO the model's table (these columns) the rows of a values_list queryset, in the
    database; returns the rows inserted. Only the model's own names go into the text."""
    sql, params = select.query.sql_with_params()
    columns = ", ".join(_quote(f.column) for f in _fields(model, names))
    with _connection().cursor() as cursor:
        cursor.execute(f"INSERT INTO {_quote(model._meta.db_table)} ({columns}) {sql}", params)
        return cursor.rowcount
