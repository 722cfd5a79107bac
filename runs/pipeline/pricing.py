"""What a run cost. Prices are the team's own configuration (RunTools publishes none).

How usage is priced (RunTools does not say how its usage fields relate, so this is rtdash's
documented choice, the one its simulator and the OpenAI-style APIs RunTools wraps follow):

- `inputTokens` **includes** `cachedInputTokens`. The cached part is billed at the cached-input
  price, the rest at the input price. A cached count larger than the input count is capped at
  the input count (the input total is what was sent; never bill more input than that).
- `reasoningTokens` are **not** part of `outputTokens` (the simulator's `totalTokens` is input +
  output). They are billed on top, at the reasoning price.
- A blank cached-input price means "the input price"; a blank reasoning price means "the
  output price".
- cost = ((input - cached) * input + cached * cached-input + output * output
  + reasoning * reasoning) / 1,000,000, in exact decimals: prices have at most three decimals,
  so every token costs a whole number of nano-dollars and nothing is rounded.

Cost status:
- `unpriced`: no price applies (no agent price and no team default in force on the run's
  start date in the team's time zone: a price takes effect at the team's midnight). Cost is
  NULL and is shown as "unpriced", never as $0.
- `partial`: a price applies but the usage is incomplete — `inputTokens` or `outputTokens`
  missing, or no usage at all from a run that reached RunTools (a cut stream, an error frame).
  Cost is what the known fields cost: a lower bound.
- `computed`: both input and output are known (a missing `cachedInputTokens` means no cache
  discount, a missing `reasoningTokens` means none). A run RunTools refused with an HTTP error
  status before it started has no usage and costs exactly 0.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db import connection

from runs.core import sql as fastsql
from runs.core.days import run_day
from runs.models import CostStatus, Price, Run

PER_MILLION_EXPONENT = -6


@dataclass(frozen=True)
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_input_tokens: int | None = None
    reasoning_tokens: int | None = None

    @classmethod
    def of(cls, run: Run) -> Usage:
        # finish_run loads only some columns; a usage column it did not set is still NULL.
        deferred = run.get_deferred_fields()
        return cls(
            *(
                None if name in deferred else getattr(run, name)
                for name in (
                    "input_tokens",
                    "output_tokens",
                    "cached_input_tokens",
                    "reasoning_tokens",
                )
            )
        )

    @property
    def is_empty(self) -> bool:
        return all(
            value is None
            for value in (
                self.input_tokens,
                self.output_tokens,
                self.cached_input_tokens,
                self.reasoning_tokens,
            )
        )


def cost_of(
    usage: Usage, price: Price | None, *, refused: bool = False
) -> tuple[Decimal | None, str]:
    """(cost, cost status) of `usage` at `price`; see the module docstring for the rules."""
    if price is None:
        return None, CostStatus.UNPRICED
    if usage.is_empty:
        return Decimal(0), CostStatus.COMPUTED if refused else CostStatus.PARTIAL
    complete = True
    cached = usage.cached_input_tokens or 0
    total = Decimal(0)
    if usage.input_tokens is None:
        complete = False
        total += cached * price.cached_rate  # the cached part is still known
    else:
        cached = min(cached, usage.input_tokens)
        total += (usage.input_tokens - cached) * price.input_per_million
        total += cached * price.cached_rate
    if usage.output_tokens is None:
        complete = False
    else:
        total += usage.output_tokens * price.output_per_million
    total += (usage.reasoning_tokens or 0) * price.reasoning_rate
    status = CostStatus.COMPUTED if complete else CostStatus.PARTIAL
    return total.scaleb(PER_MILLION_EXPONENT), status


@functools.cache
def _price_sql(vendor: str) -> tuple[str, tuple[str, ...]]:
    """The statement, and the fields its columns are, in order."""
    quote = connection.ops.quote_name
    fields = Price._meta.concrete_fields
    columns = ", ".join(quote(field.column) for field in fields)
    # "" (the default) sorts before any agent name, so descending puts the override first.
    sql = (
        f"SELECT {columns} FROM {quote(Price._meta.db_table)} "  # noqa: S608 - names from the model, values bound
        "WHERE team_id = %s AND agent IN (%s, '') "
        "AND effective_from <= %s ORDER BY agent DESC, effective_from DESC LIMIT 1"
    )
    return sql, tuple(field.attname for field in fields)


def price_in_force(team_id: int, agent: str, day: date) -> Price | None:
    """The agent's price on `day`, else the team default's; None when neither exists yet.

    Prepared SQL: every finished run asks (runs.core.sql says why that matters).
    """
    sql, names = _price_sql(connection.vendor)
    params = [team_id, agent, connection.ops.adapt_datefield_value(day)]
    return fastsql.first_instance(Price, sql, params, names)


class PriceBook:
    """All of a team's prices in memory, for re-pricing many runs without a query each."""

    def __init__(self, team_id: int) -> None:
        self._prices: dict[str, list[Price]] = {}
        for price in Price.objects.filter(team_id=team_id).order_by("-effective_from"):
            self._prices.setdefault(price.agent, []).append(price)

    def price_for(self, agent: str, day: date) -> Price | None:
        for scope in (agent, ""):
            for price in self._prices.get(scope, ()):
                if price.effective_from <= day:
                    return price
        return None


def run_was_refused(run: Run) -> bool:
    """RunTools answered with an error status before the run started: nothing was used."""
    return run.http_status is not None and run.http_status >= 400


def price_run(run: Run, book: PriceBook | None = None) -> tuple[Decimal | None, str]:
    """Return (cost, cost status) for a finished run, with the price in force at its start.

    Unpriced usage is never reported as zero: with no price, cost is None and the status says
    "unpriced".
    """
    day = run_day(run)  # the team's day: a price takes effect at its local midnight
    if book is None:
        price = price_in_force(run.team_id, run.agent, day)
    else:
        price = book.price_for(run.agent, day)
    return cost_of(Usage.of(run), price, refused=run_was_refused(run))
