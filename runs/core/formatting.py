"""How numbers, times and enum values read: one rule for every page, export and message.

Pages, CSV exports and the text the API presents go through these functions, so a cost reads
the same on the runs list, in a report, in a budget and in a spreadsheet. JSON APIs keep their
raw numbers (exact decimal strings, integer milliseconds): this module is for people.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

# Under a dollar a run often costs a fraction of a cent: rounding to cents would read $0.00,
# so small amounts keep this many significant digits instead.
MONEY_SIGNIFICANT_DIGITS = 3
CENT = Decimal("0.01")

# Names the code keeps as identifiers whose plain words are not just the spaced-out name.
_ENUM_WORDS = {
    "in_sandbox": "In sandbox",
    "no_sandbox": "No sandbox",
    "maxturns": "Max turns",
    "max_turns": "Max turns",
}


def money_amount(amount: Decimal | float | int) -> Decimal:
    """`amount` rounded to what it means: cents from a dollar up, else three significant
    digits (never fewer than two decimals), so $0.5 reads $0.50 and $0.0012345 reads $0.00123."""
    amount = Decimal(str(amount)) if not isinstance(amount, Decimal) else amount
    if amount == 0:
        return Decimal("0.00")
    if abs(amount) >= 1:
        return amount.quantize(CENT, rounding=ROUND_HALF_UP)
    exponent = amount.adjusted() - MONEY_SIGNIFICANT_DIGITS + 1
    rounded = amount.quantize(Decimal(1).scaleb(min(exponent, -2)), rounding=ROUND_HALF_UP)
    if abs(rounded) >= 1:  # 0.9996 rounds up to a dollar: cents again
        return rounded.quantize(CENT)
    # Drop zeros past the significant digits, keeping at least cents ($0.50, not $0.5).
    text = f"{rounded:f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return Decimal(f"{whole}.{decimals.ljust(2, '0')}")


def money_number(amount: Decimal | float | int | None) -> str:
    """The amount as a plain number for a spreadsheet: "0.00123", "1234.50"; "" when none."""
    if amount is None:
        return ""
    return f"{money_amount(amount):f}"


def money(amount: Decimal | float | int | None) -> str:
    """Dollars for people: "$1,234.50", "$0.00123"; None (no price) reads "unpriced"."""
    if amount is None:
        return "unpriced"
    rounded = money_amount(amount)
    sign = "-" if rounded < 0 else ""
    rounded = abs(rounded)
    if rounded >= 1:
        return f"{sign}${rounded:,.2f}"
    return f"{sign}${rounded:f}"


def duration(milliseconds: float | int | None) -> str:
    """Milliseconds in one style everywhere: "3.7 ms", "850 ms", "12.4 s", "3 min 5 s",
    "2 h 5 min"; None reads "—"."""
    if milliseconds is None:
        return "—"
    value = float(milliseconds)
    if value < 10:
        return f"{value:.1f} ms"
    if value < 1000:
        return f"{value:.0f} ms"
    if value < 60_000:
        seconds = round(value / 1000, 1)
        if seconds < 60:
            return f"{seconds:.1f} s"
    total_seconds = round(value / 1000)
    if total_seconds < 3600:
        minutes, seconds = divmod(total_seconds, 60)
        return f"{minutes} min {seconds} s"
    hours, seconds = divmod(total_seconds, 3600)
    return f"{hours} h {round(seconds / 60)} min"


def token_count(value: int | None) -> str:
    """A count with thousands separators: "12,345"; None reads "—"."""
    return "—" if value is None else f"{int(value):,}"


def enum_label(value: str | None, choices: dict[str, str] | None = None) -> str:
    """An identifier as words: "in_sandbox" → "In sandbox", "completed" → "Completed"."""
    if not value:
        return "—"
    if choices and value in choices:
        return str(choices[value])
    if value in _ENUM_WORDS:
        return _ENUM_WORDS[value]
    words = value.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]


def utc_iso(moment: datetime | None) -> str:
    """A moment in UTC to the second, for machines: "2026-01-31T14:05:09Z"; "" when none."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def utc_text(moment: datetime | None, *, seconds: bool = False) -> str:
    """A moment for people, in UTC and saying so: "2026-01-31 14:05 UTC"."""
    if moment is None:
        return "—"
    pattern = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return f"{moment.astimezone(UTC):{pattern}} UTC"


def csv_number(value: float | int | None, places: int) -> float | int | None:
    """A measured float rounded to the places it means (milliseconds to 0.1, shares to 0.0001)."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    rounded = round(float(value), places)
    return int(rounded) if places == 0 else rounded


def csv_value(value):
    """Booleans as "true"/"false" (not Python's True/False); datetimes as UTC ISO to the second."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return utc_iso(value)
    return value
