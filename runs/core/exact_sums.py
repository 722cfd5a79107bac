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


def from_nanos(nanos: int | None) -> Decimal:
    """A NanoSum as a Decimal with COST_PLACES places (0 for no rows)."""
    return Decimal(nanos or 0).scaleb(-COST_PLACES)
