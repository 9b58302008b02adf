"""The shared shelf-source machinery, through a minimal in-memory price list (each cloud's wire protocol
is tested in its own file against a local fake)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.cache import PriceCache
from exporter.config import ShelfSettings
from exporter.health import Health, IntegrationStatus, Reason
from exporter.inventory.node import Node
from exporter.pricing.quote import Basis
from exporter.pricing.sources.fetch import FetchError
from exporter.pricing.sources.shelf import Key, ShelfPrice, ShelfSource
from tests.conftest import FakeClock, context, node

FAST = ShelfSettings(enabled=True, backoff_seconds=0.01, backoff_max_seconds=0.05, concurrency=4)


class ListPrices(ShelfSource):
    """Prices from a dict; `script` holds errors to raise on the next calls."""

    name = "test_list"

    def __init__(
        self, table: dict[Key, str], settings: ShelfSettings = FAST, cache: PriceCache | None = None
    ):
        self.clock = FakeClock()
        self.table = table
        self.script: list[FetchError | Exception] = []
        self.calls: list[Key] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._count_lock = threading.Lock()
        super().__init__(settings, context(self.clock, health=Health(), cache=cache))

    def key(self, n: Node) -> Key | None:
        return (n.region, n.instance_type) if n.region else None

    def fetch(self, keys: Sequence[Key]) -> Mapping[Key, ShelfPrice | None]:
        with self._count_lock:
            self.calls.extend(keys)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            error = self.script.pop(0) if self.script else None
        try:
            time.sleep(0.02)  # real time in flight, so concurrent batches overlap
            if error is not None:
                raise error
            return {k: ShelfPrice(Decimal(self.table[k])) for k in keys if k in self.table}
        finally:
            with self._count_lock:
                self.in_flight -= 1


M5 = ("us-east-1", "m5.xlarge")


def test_first_sight_is_pending_then_fetched_once_and_served_from_memory() -> None:
    source = ListPrices({M5: "0.192"})
    assert source.quote(node()) is None
    assert source.pending()
    assert source.refresh() is True
    assert not source.pending()
    quote = source.quote(node())
    assert quote is not None and (quote.hourly, quote.basis, quote.currency) == (
        Decimal("0.192"),
        Basis.ON_DEMAND,
        "USD",
    )
    source.wanted([node()])
    assert source.refresh() is False  # fresh: no call
    assert source.calls == [M5]
    assert source.status.up and source.status.requests == 0  # calls are counted by the cloud modules


def test_unknown_type_is_remembered_as_unpriced_until_the_ttl() -> None:
    source = ListPrices({})
    source.wanted([node(instance_type="m5.nonexistent")])
    source.refresh()
    source.refresh()
    assert source.quote(node(instance_type="m5.nonexistent")) is None
    assert not source.pending()
    assert source.calls == [("us-east-1", "m5.nonexistent")]


def test_stale_prices_are_refetched_after_the_ttl() -> None:
    source = ListPrices({M5: "0.192"}, ShelfSettings(enabled=True, ttl_seconds=0.05))
    source.wanted([node()])
    source.refresh()
    source.table[M5] = "0.200"
    source.clock.advance(0.06)
    assert source.refresh() is True
    assert source.quote(node()).hourly == Decimal("0.200")  # type: ignore[union-attr]


def test_throttling_is_retried_honouring_retry_after() -> None:
    source = ListPrices({M5: "0.192"})
    source.script = [
        FetchError(Reason.THROTTLED, "slow down", retry_after=0.2),
        FetchError(Reason.UNAVAILABLE, "503"),
    ]
    source.wanted([node()])
    source.refresh()
    assert len(source.clock.sleeps) == 2 and source.clock.sleeps[0] >= 0.2  # Retry-After, then backoff
    assert source.calls == [M5, M5, M5]
    assert source.status.up


def test_permission_is_not_retried_and_the_last_good_price_stays() -> None:
    source = ListPrices({M5: "0.192"}, ShelfSettings(enabled=True, ttl_seconds=0.01, backoff_seconds=0.01))
    source.wanted([node()])
    source.refresh()
    source.clock.advance(0.02)
    source.script = [FetchError(Reason.PERMISSION, "pricing:GetProducts denied")]
    assert source.refresh() is False
    assert (source.status.up, source.status.reason) == (False, Reason.PERMISSION)
    assert source.status.detail == "pricing:GetProducts denied"
    assert source.quote(node()).hourly == Decimal("0.192")  # type: ignore[union-attr]
    assert len(source.calls) == 2
    source.clock.advance(0.02)
    source.refresh()  # the fault cleared: recovers by itself
    assert source.status.up


def test_retries_are_bounded() -> None:
    source = ListPrices({M5: "0.192"}, ShelfSettings(enabled=True, retries=2, backoff_seconds=0.01))
    source.script = [FetchError(Reason.TIMEOUT, "read timed out")] * 5
    source.wanted([node()])
    source.refresh()
    assert len(source.calls) == 3
    assert len(source.clock.sleeps) == 2 and all(0.005 <= s <= 0.02 for s in source.clock.sleeps)
    assert source.status.reason is Reason.TIMEOUT


def test_a_bug_in_a_fetch_is_a_bad_response_not_a_crash(caplog: pytest.LogCaptureFixture) -> None:
    source = ListPrices({M5: "0.192"})
    source.script = [KeyError("PriceList")]
    source.wanted([node()])
    with caplog.at_level(logging.ERROR, __name__):
        source.refresh()
    assert source.status.reason is Reason.BAD_RESPONSE
    assert "KeyError" in source.status.detail
    (line,) = caplog.records  # logged once, under the source's module, naming the source as fields
    assert line.getMessage() == "fetching [('us-east-1', 'm5.xlarge')] failed unexpectedly" and line.exc_info
    assert (getattr(line, "integration", None), getattr(line, "source", None)) == ("test_list", "test_list")


def test_batches_run_concurrently_within_the_bound() -> None:
    nodes = [node(f"n{i}", uid=f"u{i}", instance_type=f"m5.{i}xlarge") for i in range(12)]
    source = ListPrices(
        {("us-east-1", n.instance_type): "0.1" for n in nodes}, ShelfSettings(enabled=True, concurrency=3)
    )
    source.wanted(nodes)
    source.refresh()
    assert len(source.calls) == 12
    assert source.max_in_flight == 3


def test_warm_restart_serves_cached_prices_with_no_call(tmp_path: Path) -> None:
    cache = PriceCache(str(tmp_path / "cache.sqlite"), IntegrationStatus("cache"))
    first = ListPrices({M5: "0.192"}, cache=cache)
    first.wanted([node(), node("x", uid="x", instance_type="m5.nonexistent")])
    first.refresh()
    restarted = ListPrices({M5: "9.99"}, cache=cache)
    assert restarted.quote(node()).hourly == Decimal("0.192")  # type: ignore[union-attr]
    assert restarted.quote(node("x", uid="x", instance_type="m5.nonexistent")) is None
    assert not restarted.pending()
    restarted.wanted([node()])
    restarted.refresh()
    assert restarted.calls == []
    assert restarted.status.up and restarted.status.data_timestamp is not None


def test_prices_round_trip_through_the_cache_text_exactly() -> None:
    price = ShelfPrice(Decimal("3.6720000000"), Decimal("0.031611"), Decimal("0.004237"), None)
    assert ShelfPrice.load(price.dump()) == price
    tiny = ShelfPrice(Decimal("1.2E-7"))  # a per-GiB-second rate: str() would write an exponent
    assert ShelfPrice.load(tiny.dump()) == tiny


def test_the_basis_comes_from_the_key() -> None:
    class SpotAware(ListPrices):
        def basis_of(self, key: Key) -> Basis:
            return Basis.SPOT if key[1].endswith("-spot") else Basis.ON_DEMAND

    source = SpotAware({("us-east-1", "m5.xlarge-spot"): "0.07", M5: "0.192"})
    spot, regular = node(instance_type="m5.xlarge-spot"), node()
    source.wanted([spot, regular])
    source.refresh()
    assert source.quote(spot).basis is Basis.SPOT  # type: ignore[union-attr]
    assert source.quote(regular).basis is Basis.ON_DEMAND  # type: ignore[union-attr]


def test_a_failed_key_waits_for_the_interval_instead_of_hammering_the_api() -> None:
    source = ListPrices({M5: "0.192"})
    source.refresh_interval_seconds = 0.1
    source.script = [FetchError(Reason.PERMISSION, "denied")]
    assert source.quote(node()) is None and source.pending()
    source.refresh()
    assert source.quote(node()) is None
    assert not source.pending()  # not re-queued at the next tick
    source.clock.advance(0.11)  # the interval has passed
    assert source.quote(node()) is None and source.pending()
    source.refresh()
    assert source.quote(node()).hourly == Decimal("0.192")  # type: ignore[union-attr]


def test_health_is_stamped_with_the_sources_clock() -> None:
    """Last attempt and last success come from the injected clock, like every other time a source reads."""
    source = ListPrices({M5: "0.192"})
    source.clock.now = 1_700_000_000.0
    source.wanted([node()])
    source.refresh()
    assert (source.status.last_attempt, source.status.last_success) == (1_700_000_000.0, 1_700_000_000.0)
    source.clock.advance(3_600)
    source.script.append(FetchError(Reason.AUTH, "rejected"))
    source.clock.advance(FAST.ttl_seconds)
    source.refresh()
    assert (source.status.last_attempt, source.status.last_success) == (
        1_700_000_000.0 + 3_600 + FAST.ttl_seconds,
        1_700_000_000.0,
    )
