"""Money as `Decimal`, parsed only from plain decimal strings.

Price feeds hand out strings such as "3.6720000000"; going through float or stripping symbols by hand is
how "$32.8" becomes 0.032 elsewhere. Anything that is not a plain non-negative decimal is refused.
"""

from __future__ import annotations

import re
from decimal import Decimal

_PLAIN_DECIMAL = re.compile(r"\d+(\.\d+)?|\.\d+")


def parse_money(text: str | int | Decimal) -> Decimal:
    """A non-negative amount from a decimal string (or int/Decimal). Raises ValueError otherwise."""
    if isinstance(text, Decimal):
        value = text
    elif isinstance(text, int) and not isinstance(text, bool):
        value = Decimal(text)
    elif isinstance(text, str) and _PLAIN_DECIMAL.fullmatch(text.strip()):
        value = Decimal(text.strip())
    else:
        raise ValueError(f"not a plain decimal amount: {text!r}")
    if not value.is_finite() or value < 0:
        raise ValueError(f"not a non-negative finite amount: {text!r}")
    return value
