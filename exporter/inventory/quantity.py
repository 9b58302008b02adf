"""Kubernetes resource quantities ("3920m", "15896988Ki", "129e6") as exact decimals.

Node capacity arrives in every form the API allows, so anything short of the full grammar misprices some node.
Grammar (k8s.io/apimachinery/pkg/api/resource):

    <quantity> ::= <signedNumber><suffix>
    <suffix>   ::= Ki | Mi | Gi | Ti | Pi | Ei | n | u | m | "" | k | M | G | T | P | E | (e|E)<signedInteger>
    <number>   ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
"""

from __future__ import annotations

import re
from decimal import Context, Decimal

_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[eE][+-]?[0-9]+|[numkMGTPE]?)"
)

_MULTIPLIERS: dict[str, Decimal] = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}

# The binary suffixes as shifts, for whole digits (`parse_quantity`'s fast path): Ki → 10, Mi → 20, …
_BINARY_SHIFTS = {
    suffix: int(m).bit_length() - 1 for suffix, m in _MULTIPLIERS.items() if suffix.endswith("i")
}
_FAST_DIGITS = 30  # int() of a longer digit string is left to the general path (and its limits)

# Wide enough that no quantity a node reports is rounded (the default context keeps only 28 digits).
_CTX = Context(prec=80)


def parse_quantity(s: str) -> Decimal:
    """The exact value of a quantity string; ValueError (naming the input) when it is not one."""
    if not isinstance(s, str):
        raise ValueError(f"quantity must be a string, got {type(s).__name__}")
    # Nearly every capacity is whole digits, bare or in a binary unit ("4", "16009716Ki"): exact as ints.
    shift = _BINARY_SHIFTS.get(s[-2:])
    digits = s if shift is None else s[:-2]
    if digits.isdigit() and digits.isascii() and len(digits) <= _FAST_DIGITS:
        return Decimal(int(digits) << (shift or 0))
    m = _QUANTITY.fullmatch(s)
    if m is None:
        raise ValueError(f"invalid quantity {s[:100]!r}: expected <number><suffix>, e.g. 3920m, 16Gi, 1e3")
    number = Decimal(m["number"])
    suffix = m["suffix"]
    try:
        multiplier = _MULTIPLIERS.get(suffix)
        if multiplier is None:  # e/E exponent ("Ei" and "E" are multipliers)
            return _CTX.scaleb(number, int(suffix[1:]))
        return _CTX.multiply(number, multiplier)
    except ArithmeticError as e:  # decimal.Overflow and friends: an exponent like 1e9999999
        raise ValueError(f"quantity {s[:100]!r} is out of range") from e
