"""Sums of money in the database that are exactly what adding the rows up in Python gives.

PostgreSQL adds numerics exactly, but SQLite keeps a decimal column as a REAL and its SUM adds
floats, whose error grows with the rows added. `NanoSum` makes each value a whole number of
its column's smallest unit first (nano-dollars for a cost with nine decimal places, the very
number the ORM reads back for the row) and adds those integers, the same SQL on both
databases. `from_nanos` turns the sum back into the Decimal the ORM would have given.
"""

from __future__ import annotations

from decimal import Decimal

from django.db.models import BigIntegerField, Sum

COST_PLACES = 9  # decimal_places of every cost column (runs.models)


class NanoSum(Sum):
    """SUM of a decimal column with COST_PLACES places, in units of its last place."""

    template = f"%(function)s(CAST(ROUND(%(expressions)s * 1{'0' * COST_PLACES}) AS BIGINT))"

    def __init__(self, expression, **extra) -> None:
        super().__init__(expression, output_field=BigIntegerField(), **extra)

    def as_postgresql(self, compiler, connection, **extra_context):
        # PostgreSQL adds numerics exactly: the sum is scaled once rather than every row
        # rounded and cast first, which is most of the cost of summing a metadata key's rows.
        # The result is a numeric with no fractional part, read as an int (read_sums).
        if self.filter is not None:  # FILTER goes after the call: the template as it is
            return self.as_sql(compiler, connection, **extra_context)
        return self.as_sql(
            compiler,
            connection,
            template=f"(%(function)s(%(distinct)s%(expressions)s) * 1{'0' * COST_PLACES})",
            **extra_context,
        )


def from_nanos(nanos: int | Decimal | None) -> Decimal:
    """A NanoSum as a Decimal with COST_PLACES places (0 for no rows)."""
    return Decimal(int(nanos or 0)).scaleb(-COST_PLACES)


def sums_of(names: tuple[str, ...]) -> dict:
    """Annotations summing each named counter column, named `sum_<name>`: the cost with
    NanoSum, the others with Sum."""
    return {f"sum_{name}": NanoSum(name) if name == "cost" else Sum(name) for name in names}


def read_sums(names: tuple[str, ...], values) -> list:
    """The values of `sums_of(names)` as a query returned them, in that order: ints (for no
    rows, or PostgreSQL's SUM of bigints, a numeric), and the cost a Decimal."""
    numbers = [int(value or 0) for value in values]
    if "cost" in names:
        at = names.index("cost")
        numbers[at] = from_nanos(numbers[at])
    return numbers
