from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field, fields, replace
from decimal import Decimal

import pytest

from exporter.config import DiscountConfig, PricingConfig
from exporter.health import Health
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.pricing.engine import PricingEngine
from exporter.pricing.quote import Basis, Quote
from exporter.pricing.source import PriceSource
from exporter.pricing.sources.offline import OfflinePrices
from tests.conftest import node


@dataclass
class TableSource:
    """A source answering from a dict keyed by node name, for engine tests (no network involved)."""

    name: str
    kind: str
    prices: dict[str, Quote] = field(default_factory=dict)
    refresh_interval_seconds: float | None = None

    def quote(self, n: Node) -> Quote | None:
        return self.prices.get(n.name)

    def wanted(self, nodes: Iterable[Node]) -> None:
        pass

    def pending(self) -> bool:
        return False

    def refresh(self) -> bool:
        return False


class Exploding(TableSource):
    def quote(self, n: Node) -> Quote | None:
        raise KeyError("bug")


def usd(amount: str, basis: Basis = Basis.ON_DEMAND, **units: Decimal) -> Quote:
    return Quote(Decimal(amount), "USD", basis, **units)


def engine(*sources: PriceSource, **config: object) -> tuple[PricingEngine, Health]:
    health = Health()
    return PricingEngine(list(sources), PricingConfig(**config), health), health  # type: ignore[arg-type]


def test_first_source_in_precedence_wins_regardless_of_list_order() -> None:
    n = node()
    offline = TableSource("offline", "offline", {n.name: usd("0.192")})
    shelf = TableSource("aws_pricing", "shelf", {n.name: usd("0.188")})
    custom = TableSource("custom", "custom", {n.name: usd("0.150", Basis.CUSTOM)})
    eng, _ = engine(offline, custom, shelf)
    price = eng.price(n)
    assert price is not None
    assert (price.source, price.hourly, price.basis) == ("aws_pricing", Decimal("0.188"), Basis.ON_DEMAND)


def test_falls_through_to_next_source_and_configured_precedence_is_honoured() -> None:
    n = node()
    shelf = TableSource("aws_pricing", "shelf", {})
    offline = TableSource("offline", "offline", {n.name: usd("0.192")})
    custom = TableSource("custom", "custom", {n.name: usd("0.150", Basis.CUSTOM)})
    eng, _ = engine(shelf, offline, custom)
    assert eng.price(n).source == "custom"  # type: ignore[union-attr]
    eng, _ = engine(shelf, offline, custom, precedence=("shelf", "offline", "custom"))
    assert eng.price(n).source == "offline"  # type: ignore[union-attr]


def test_kinds_left_out_of_precedence_are_off() -> None:
    n = node()
    eng, _ = engine(TableSource("offline", "offline", {n.name: usd("0.192")}), precedence=("custom",))
    assert eng.price(n) is None


def test_nobody_can_price_gives_none_never_a_default() -> None:
    eng, _ = engine(TableSource("offline", "offline", {}))
    assert eng.price(node()) is None


def test_other_currency_is_not_mixed_in() -> None:
    n = node()
    eur = Quote(Decimal("0.17"), "EUR", Basis.ON_DEMAND)
    eng, _ = engine(TableSource("offline", "offline", {n.name: eur}))
    assert eng.price(n) is None


def test_discount_applies_to_on_demand_list_prices_of_that_provider_only() -> None:
    on_demand, spot = node("a"), node("b", uid="b", capacity_type=CapacityType.SPOT)
    gke = node("c", uid="c", ref=node().ref.__class__("gcp", "proj", "us-central1-a", "c"))
    shelf = TableSource(
        "aws_pricing", "shelf", {"a": usd("0.192"), "b": usd("0.0712", Basis.SPOT), "c": usd("0.2")}
    )
    custom_node = node("d", uid="d")
    custom = TableSource("custom", "custom", {"d": usd("0.150", Basis.CUSTOM)})
    eng, _ = engine(shelf, custom, discounts=DiscountConfig(aws=Decimal("0.12")))
    assert eng.price(on_demand).hourly == Decimal("0.16896")  # type: ignore[union-attr]
    assert eng.price(spot).hourly == Decimal("0.0712")  # type: ignore[union-attr]
    assert eng.price(gke).hourly == Decimal("0.2")  # type: ignore[union-attr]
    assert eng.price(custom_node).hourly == Decimal("0.150")  # type: ignore[union-attr]


def test_spot_node_priced_at_on_demand_says_so() -> None:
    spot = node(capacity_type=CapacityType.SPOT)
    eng, _ = engine(
        TableSource("offline", "offline", {spot.name: usd("0.192")}),
        discounts=DiscountConfig(aws=Decimal("0.5")),
    )
    price = eng.price(spot)
    assert price is not None
    assert (price.basis, price.hourly) == (
        Basis.ON_DEMAND,
        Decimal("0.192"),
    )  # no discount: not an on-demand node


def test_split_follows_configured_weights_and_sums_back_to_the_total() -> None:
    n = node(cpu_cores=4.0, memory_bytes=16 * 2**30)
    eng, _ = engine(TableSource("offline", "offline", {n.name: usd("0.192")}))
    price = eng.price(n)
    assert price is not None and price.cpu_core_hourly and price.memory_gib_hourly
    assert price.gpu_hourly is None
    assert price.cpu_core_hourly / price.memory_gib_hourly == Decimal("0.031611") / Decimal("0.004237")
    assert float(4 * price.cpu_core_hourly + 16 * price.memory_gib_hourly) == pytest.approx(0.192)


def test_split_includes_gpus() -> None:
    n = node(instance_type="g4dn.xlarge", cpu_cores=4.0, memory_bytes=16 * 2**30, gpu_count=1)
    eng, _ = engine(TableSource("offline", "offline", {n.name: usd("0.526")}))
    price = eng.price(n)
    assert price is not None and price.gpu_hourly is not None
    total = 4 * price.cpu_core_hourly + 16 * price.memory_gib_hourly + price.gpu_hourly  # type: ignore[operator]
    assert float(total) == pytest.approx(0.526)
    assert float(price.gpu_hourly / price.cpu_core_hourly) == pytest.approx(0.35 / 0.031611)  # type: ignore[operator]


def test_unit_prices_given_by_the_source_win_over_the_split_and_are_discounted() -> None:
    n = node(ref=node().ref.__class__("gcp", "p", "us-central1-a", "vm"), instance_type="n2-standard-4")
    quote = usd("0.194236", cpu_core_hourly=Decimal("0.031611"), memory_gib_hourly=Decimal("0.004237"))
    eng, _ = engine(
        TableSource("gcp_catalog", "shelf", {n.name: quote}), discounts=DiscountConfig(gcp=Decimal("0.1"))
    )
    price = eng.price(n)
    assert price is not None
    assert price.cpu_core_hourly == Decimal("0.031611") * Decimal("0.9")
    assert price.memory_gib_hourly == Decimal("0.004237") * Decimal("0.9")


def test_unknown_capacity_gives_no_unit_prices_rather_than_invented_ones() -> None:
    n = node(cpu_cores=0.0, memory_bytes=0)
    eng, _ = engine(TableSource("offline", "offline", {n.name: usd("0.192")}))
    price = eng.price(n)
    assert price is not None and price.hourly == Decimal("0.192")
    assert (price.cpu_core_hourly, price.memory_gib_hourly) == (None, None)


def test_a_raising_source_is_counted_and_the_next_one_prices_the_node() -> None:
    n = node()
    eng, health = engine(
        Exploding("aws_pricing", "shelf"), TableSource("offline", "offline", {n.name: usd("0.192")})
    )
    assert eng.price(n).source == "offline"  # type: ignore[union-attr]
    assert health.invalid_counts() == {"quote": 1}


@dataclass
class ByCapacity(TableSource):
    """Quotes by (name, capacity type), as the shelf sources key spot and on-demand apart."""

    by_capacity: dict[tuple[str, CapacityType], Quote] = field(default_factory=dict)

    def quote(self, n: Node) -> Quote | None:
        return self.by_capacity.get((n.name, n.capacity_type))


def test_list_price_is_the_on_demand_reference_whatever_priced_the_node() -> None:
    spot = node("s", uid="s", capacity_type=CapacityType.SPOT)
    custom_priced = node("c", uid="c")
    aws_spot = ByCapacity(
        "aws_spot", "shelf", by_capacity={("s", CapacityType.SPOT): usd("0.0712", Basis.SPOT)}
    )
    aws_pricing = ByCapacity(
        "aws_pricing", "shelf", by_capacity={("s", CapacityType.ON_DEMAND): usd("0.192")}
    )
    custom = TableSource("custom", "custom", {"c": usd("0.150", Basis.CUSTOM)})
    offline = TableSource("offline", "offline", {"c": usd("0.192")})
    eng, _ = engine(
        aws_spot,
        aws_pricing,
        custom,
        offline,
        discounts=DiscountConfig(aws=Decimal("0.1")),
        precedence=("shelf", "custom", "offline"),
    )
    price = eng.price(spot)
    assert price is not None
    assert (price.source, price.hourly) == ("aws_spot", Decimal("0.0712"))
    assert (price.list_source, price.list_hourly) == ("aws_pricing", Decimal("0.192"))  # list: no discount
    price = eng.price(custom_priced)
    assert price is not None
    assert (price.source, price.list_source, price.list_hourly) == ("custom", "offline", Decimal("0.192"))


def test_no_list_price_when_no_shelf_or_offline_source_knows_the_type() -> None:
    n = node()
    eng, _ = engine(TableSource("custom", "custom", {n.name: usd("0.150", Basis.CUSTOM)}))
    price = eng.price(n)
    assert price is not None and (price.list_hourly, price.list_source) == (None, "")


def test_a_spot_node_priced_by_a_later_list_source_takes_its_list_price_from_the_first() -> None:
    """The spot node's own (spot) key has no price yet, so the offline table prices it; its list price is
    still the shelf source's on-demand price for the same type, the first list source in precedence."""
    spot = node("s", uid="s", capacity_type=CapacityType.SPOT)
    shelf = ByCapacity("azure_retail", "shelf", by_capacity={("s", CapacityType.ON_DEMAND): usd("0.384")})
    offline = TableSource("offline", "offline", {"s": usd("0.380")})
    eng, _ = engine(shelf, offline)
    price = eng.price(spot)
    assert price is not None
    assert (price.source, price.hourly, price.basis) == ("offline", Decimal("0.380"), Basis.ON_DEMAND)
    assert (price.list_source, price.list_hourly) == ("azure_retail", Decimal("0.384"))


def test_lookups_add_the_on_demand_twin_of_each_spot_node() -> None:
    spot, regular = node("s", uid="s", capacity_type=CapacityType.SPOT), node()
    looked_up = PricingEngine.lookups([spot, regular])
    assert looked_up[:2] == [spot, regular]
    assert [(n.name, n.capacity_type) for n in looked_up[2:]] == [("s", CapacityType.ON_DEMAND)]


def test_the_on_demand_twin_keeps_every_other_field() -> None:
    """The twin is built field by field: a Node field it forgot would silently take its default."""
    spot = node("s", uid="s", capacity_type=CapacityType.SPOT, gpu_count=1, gpu_model="t4", created=1.5e9)
    defaults = {f.name: f.default for f in fields(Node) if f.default is not MISSING}
    assert all(getattr(spot, name) != default for name, default in defaults.items()), "set every field"
    assert PricingEngine.lookups([spot])[1] == replace(spot, capacity_type=CapacityType.ON_DEMAND)


@pytest.mark.parametrize("amount", ["Infinity", "NaN", "10000.01"])
def test_a_price_not_finite_or_beyond_the_bound_is_not_exported_but_counted(amount: str) -> None:
    n = node()
    broken = TableSource("aws_pricing", "shelf", {n.name: usd(amount)})
    offline = TableSource("offline", "offline", {n.name: usd("0.192")})
    eng, health = engine(broken, offline)
    price = eng.price(n)
    assert price is not None
    assert (price.source, price.hourly, price.list_hourly) == ("offline", Decimal("0.192"), Decimal("0.192"))
    assert health.invalid_counts() == {"price": 1}
    eng_alone, health_alone = engine(broken)
    assert eng_alone.price(n) is None and health_alone.invalid_counts() == {"price": 1}


def test_a_per_unit_price_beyond_the_bound_is_not_exported() -> None:
    """A tiny capacity (1n cores, 1 byte) makes a sane hourly price an absurd price per core."""
    n = node(cpu_cores=1e-9, memory_bytes=1)
    eng, health = engine(TableSource("offline", "offline", {n.name: usd("0.192")}))
    assert eng.price(n) is None
    assert health.invalid_counts() == {"price": 1}


def test_the_bound_itself_is_exported() -> None:
    n = node()
    eng, health = engine(TableSource("custom", "custom", {n.name: usd("10000", Basis.CUSTOM)}))
    price = eng.price(n)
    assert price is not None and price.hourly == Decimal("10000") and not health.invalid_counts()


class Waiting(TableSource):
    """A cloud price list that has met a node it never fetched a price for."""

    def pending(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"provider_id": "", "ref": ProviderRef("")}, "no_provider_id"),
        ({"provider_id": "digitalocean://123", "ref": ProviderRef("digitalocean")}, "unknown_provider"),
        ({"instance_type": "m5.nonexistent"}, "unknown_instance_type"),
        ({"region": "mars-north-1", "zone": "mars-north-1a"}, "region_not_covered"),
        ({"region": "", "zone": ""}, "region_not_covered"),
    ],
)
def test_an_unpriced_node_says_why(overrides: dict[str, object], reason: str) -> None:
    eng, _ = engine(OfflinePrices.load())
    n = node(**overrides)
    assert eng.price(n) is None
    assert eng.unpriced_reason(n) == reason


def test_an_unpriced_node_waits_for_a_price_list_that_has_not_answered() -> None:
    n = node(instance_type="m5.brandnew")
    eng, _ = engine(Waiting("aws_pricing", "shelf", refresh_interval_seconds=3600.0), OfflinePrices.load())
    assert eng.unpriced_reason(n) == "no_price_yet"


def test_each_unpriced_node_and_reason_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    eng, _ = engine(OfflinePrices.load())
    lost, other = node(instance_type="m5.nonexistent"), node("other", instance_type="m5.nonexistent")
    for _ in range(3):
        eng.unpriced_reason(lost)
        eng.unpriced_reason(other)
    lines = [r.getMessage() for r in caplog.records if "unpriced" in r.getMessage()]
    assert lines == [
        "node ip-10-0-12-87.ec2.internal is unpriced (unknown_instance_type): no price list has instance type "
        "'m5.nonexistent'",
        "node other is unpriced (unknown_instance_type): no price list has instance type 'm5.nonexistent'",
    ]
