import csv
import re
from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest

from exporter.config import ConfigError
from exporter.inventory.node import CapacityType, ProviderRef
from exporter.pricing.quote import Basis
from exporter.pricing.sources.offline import OfflinePrices
from tests.conftest import node


def bundled_rows() -> list[dict[str, str]]:
    text = resources.files("exporter.pricing.data").joinpath("offline_prices.csv").read_text("utf-8")
    return list(csv.DictReader(text.splitlines()))


def test_every_bundled_row_is_usable_and_says_where_it_came_from() -> None:
    rows = bundled_rows()
    assert {row["provider"] for row in rows} == {"aws", "gcp", "azure"}
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["as_of"]), row
        assert row["source"].startswith(("github:", "https://")), row
        assert Decimal(row["hourly"]) > 0, row
    assert len(OfflinePrices.load()) == len(rows)  # no duplicate keys, none skipped


def test_known_list_prices_are_exact() -> None:
    table = OfflinePrices.load()
    m5 = table.quote(node())
    assert m5 is not None and (m5.hourly, m5.currency, m5.basis) == (Decimal("0.192"), "USD", Basis.ON_DEMAND)
    gke = node(ref=ProviderRef("gcp", "p", "us-central1-a", "vm"), instance_type="e2-standard-4", region="us-central1")
    assert table.quote(gke).hourly == Decimal("0.13402284")  # type: ignore[union-attr]
    aks = node(ref=ProviderRef("azure", "sub"), instance_type="Standard_D4s_v3", region="eastus")
    assert table.quote(aks).hourly == Decimal("0.192")  # type: ignore[union-attr]


def test_spot_nodes_get_the_on_demand_list_price_flagged_as_such() -> None:
    quote = OfflinePrices.load().quote(node(capacity_type=CapacityType.SPOT))
    assert quote is not None and quote.basis is Basis.ON_DEMAND


@pytest.mark.parametrize(
    "overrides",
    [
        {"instance_type": "m5.nonexistent"},
        {"region": ""},
        {"region": "mars-north-1"},
        {"os": "windows"},  # never priced at the Linux price: Windows licences cost far more
        {"ref": ProviderRef("gcp", "p", "us-east-1a", "vm")},  # same type name, other cloud
    ],
)
def test_what_the_table_does_not_hold_is_not_guessed(overrides: dict[str, object]) -> None:
    assert OfflinePrices.load().quote(node(**overrides)) is None


def test_user_table_replaces_the_bundled_one(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(
        "provider,region,instance_type,os,hourly,currency,as_of,source\n"
        "aws,us-east-1,m5.xlarge,linux,0.2010000000,USD,2026-11-01,internal rate card\n"
        "aws,us-east-1,m5.large,linux,0.09,EUR,2026-11-01,internal rate card\n"
    )
    table = OfflinePrices.load(str(path))
    assert table.quote(node()).hourly == Decimal("0.201")  # type: ignore[union-attr]
    assert len(table) == 1  # the EUR row cannot be mixed into a USD exporter


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("provider,region,instance_type,os,hourly\n", "missing columns currency, as_of, source"),
        (
            "provider,region,instance_type,os,hourly,currency,as_of,source\naws,us-east-1,m5.large,linux,$0.096,USD,x,y\n",
            "line 2: not a plain decimal",
        ),
    ],
)
def test_a_bad_user_table_fails_start_up_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        OfflinePrices.load(str(path))
    assert caught.value.key == "pricing.offline.file"
