"""The one place a value becomes a CSV cell: every CSV export writes its cells through here.

A spreadsheet opening a CSV runs a cell as a formula when its text starts with `=`, `+`, `-`
or `@`, and Excel and LibreOffice skip leading blanks (and accept the full-width forms) before
deciding. Prompts, results, agent names and thread titles come from users and upstream, so
such a cell gets a leading apostrophe, which spreadsheets show as text (OWASP's advice).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

# The ASCII triggers and their full-width forms (U+FF1D, U+FF0B, U+FF0D, U+FF20).
FORMULA_TRIGGERS = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
# A tab or carriage return first is on OWASP's list by itself: it can hide what follows.
CONTROL_STARTS = ("\t", "\r")
# Skipped before the first real character: any Unicode whitespace (with the ideographic
# space and no-break space) and the invisible zero-width characters and byte-order mark.
_LEADING_BLANKS = re.compile("[\\s\u200b\u200c\u200d\u2060\ufeff]*")


def starts_like_formula(text: str) -> bool:
    if text.startswith(CONTROL_STARTS):
        return True
    first = _LEADING_BLANKS.match(text).end()
    return text[first : first + 1] in FORMULA_TRIGGERS


def csv_cell(value: Any) -> Any:
    """`value` as a safe cell: None as empty, dicts and lists as JSON, formulas as text.

    Numbers (int, float, Decimal) pass unchanged, so a negative count or amount stays a number
    in the spreadsheet; only text can carry a formula.
    """
    if value is None:
        return ""
    if isinstance(value, bool | int | float | Decimal):
        return value
    if isinstance(value, dict | list):
        value = json.dumps(value, ensure_ascii=False)
    text = str(value)
    if starts_like_formula(text):
        return "'" + text
    return text
