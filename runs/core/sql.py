"""Statements built once, for the few writes every run makes.

A run through the gateway inserts its row, then finishes it: the row, its thread, the daily
rollup and two statistics rows. Profiled on the gateway's path, the ORM spent most of that
time compiling the same queries again for every run (about 1 ms a query on a 2-core machine),
far more than the database spent running them. The helpers here build each statement once per
model and column list and bind values with the fields' own `get_db_prep_save`, so the database
receives exactly what the ORM would have sent it.

Everything else keeps using the ORM: these are for the hot path only.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import DEFERRED, Field, Model


def _connection():
    # The connection itself, not django.db.connection: each attribute read through that proxy
    # goes through asgiref's Local, and preparing one row's values reads it ~20 times.
    return connections[DEFAULT_DB_ALIAS]


def _quote(name: str) -> str:
    return _connection().ops.quote_name(name)


def _fields(model: type[Model], names: Iterable[str]) -> list[Field]:
    return [model._meta.get_field(name) for name in names]


def _db_value(field: Field, instance: Model, add: bool, connection) -> Any:
    return field.get_db_prep_save(field.pre_save(instance, add), connection)


@functools.cache
def _insert_sql(model: type[Model], vendor: str) -> tuple[str, tuple[Field, ...]]:
    fields = tuple(f for f in model._meta.concrete_fields if not f.primary_key)
    columns = ", ".join(_quote(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    pk = _quote(model._meta.pk.column)
    sql = f"INSERT INTO {_quote(model._meta.db_table)} ({columns}) VALUES ({marks}) RETURNING {pk}"  # noqa: S608 - names from the model, values bound
    return sql, fields


def insert(instance: Model) -> Model:
    """INSERT every column of a new instance and set its primary key."""
    connection = _connection()
    sql, fields = _insert_sql(type(instance), connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, [_db_value(f, instance, True, connection) for f in fields])
        instance.pk = cursor.fetchone()[0]
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


@functools.cache
def _update_sql(
    model: type[Model], names: tuple[str, ...], vendor: str
) -> tuple[str, tuple[Field, ...]]:
    fields = tuple(_fields(model, names))
    assignments = ", ".join(f"{_quote(f.column)} = %s" for f in fields)
    pk = _quote(model._meta.pk.column)
    return f"UPDATE {_quote(model._meta.db_table)} SET {assignments} WHERE {pk} = %s", fields  # noqa: S608 - names from the model, values bound


def update(instance: Model, names: Sequence[str]) -> None:
    """UPDATE the named fields of a saved instance (like save(update_fields=...))."""
    connection = _connection()
    sql, fields = _update_sql(type(instance), tuple(names), connection.vendor)
    values = [_db_value(f, instance, False, connection) for f in fields]
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
) -> tuple[str, tuple[Field, ...]]:
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
    return sql, fields


def _upsert(instance: Model, key, added, replaced) -> int | None:
    names = tuple(f.name for f in type(instance)._meta.concrete_fields if not f.primary_key)
    connection = _connection()
    sql, fields = _upsert_sql(
        type(instance), names, tuple(key), tuple(added), tuple(replaced), connection.vendor
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_db_value(f, instance, True, connection) for f in fields])
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
    """Per column, its field and what the ORM's compiler would apply to a fetched value (the
    backend's converters, then the field's), so a raw row reads exactly as a queryset's
    would."""
    connection = _connection()
    result = []
    for field in _fields(model, names):
        column = field.get_col(model._meta.db_table)
        converters = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
        result.append((field, converters))
    return tuple(result)


def select_one(model: type[Model], sql: str, params: Sequence, names: Sequence[str]):
    """The first row of `sql` as an instance: its first len(names) columns are those fields,
    any further columns become extra attributes, in a tuple on `instance.extra`. None when
    there is no row. (A raw queryset costs ~40 µs a row more, resolving its columns anew.)"""
    connection = _connection()
    names = tuple(names)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    by_attname = {}
    columns = _columns(model, names, connection.vendor)
    for (field, converters), value in zip(columns, row[: len(names)], strict=True):
        for convert in converters:
            value = convert(value, None, connection)
        by_attname[field.attname] = value
    # from_db takes values in the model's field order; the rest are left deferred.
    fields = model._meta.concrete_fields
    values = [by_attname.get(f.attname, DEFERRED) for f in fields]
    instance = model.from_db(connection.alias, [f.attname for f in fields], values)
    instance.extra = row[len(names) :]
    return instance


def for_update() -> str:
    """The row-locking suffix for a SELECT, where the database has one (SQLite locks the whole
    database for a write transaction instead: rtdash opens them IMMEDIATE)."""
    return " FOR UPDATE" if _connection().features.has_select_for_update else ""
