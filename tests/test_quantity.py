from decimal import Decimal

import pytest

from exporter.inventory.quantity import parse_quantity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # forms seen in real node status.capacity / allocatable
        ("3920m", Decimal("3.92")),
        ("1930m", Decimal("1.93")),
        ("8", Decimal(8)),
        ("15896988Ki", Decimal(15896988 * 1024)),
        ("28043041951", Decimal(28043041951)),
        ("0", Decimal(0)),
        ("007Ki", Decimal(7 * 1024)),
        # binary suffixes
        ("1.5Gi", Decimal(3 * 2**29)),
        ("123Mi", Decimal(128974848)),
        ("1Ti", Decimal(2**40)),
        ("2Pi", Decimal(2 * 2**50)),
        ("1Ei", Decimal(2**60)),
        # plain numbers and decimal SI suffixes
        ("128974848", Decimal(128974848)),
        ("129M", Decimal(129_000_000)),
        ("0.5", Decimal("0.5")),
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("-1", Decimal(-1)),
        ("+3k", Decimal(3000)),
        ("100n", Decimal("0.0000001")),
        ("250u", Decimal("0.00025")),
        ("1G", Decimal(10**9)),
        ("1T", Decimal(10**12)),
        ("1P", Decimal(10**15)),
        ("1E", Decimal(10**18)),  # E alone is exa, not an exponent
        # decimal exponents
        ("129e6", Decimal(129_000_000)),
        ("1e3", Decimal(1000)),
        ("12E-3", Decimal("0.012")),
        ("1.5e+2", Decimal(150)),
        # more digits than the default decimal context keeps: still exact
        ("123456789012345678901234567890123Ki", Decimal(123456789012345678901234567890123 * 1024)),
    ],
)
def test_parses(text: str, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Ki",
        "m",
        "1.2.3",
        "12XB",
        "1KiB",
        "1 Gi",
        " 1",
        "1e",
        "1e1.5",
        "1ki",
        "--1",
        "0x10",
        "NaN",
        "Infinity",
        "1e99999999",
        "\u0663Ki",
        "\u00b2",
    ],  # Unicode digits: not the grammar's,
)
def test_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)
