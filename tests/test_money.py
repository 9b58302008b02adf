from decimal import Decimal

import pytest

from exporter.pricing.money import parse_money


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.6720000000", Decimal("3.672")),
        ("32.8", Decimal("32.8")),
        ("0.0000000000", Decimal(0)),
        (" 0.096 ", Decimal("0.096")),
        (".5", Decimal("0.5")),
        (7, Decimal(7)),
    ],
)
def test_plain_decimals_parse_exactly(text: str, expected: Decimal) -> None:
    assert parse_money(text) == expected


@pytest.mark.parametrize("text", ["$32.8", "32,8", "1e3", "NaN", "Infinity", "-0.1", "", "0.096 USD", "1.2.3"])
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="amount"):
        parse_money(text)


def test_float_is_refused_so_binary_rounding_never_sneaks_in() -> None:
    with pytest.raises(ValueError):
        parse_money(0.1)  # type: ignore[arg-type]
