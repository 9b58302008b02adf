"""The billing base's rules on their own, cloud aside: when a day's bill is usable for a node (settled,
and its billed hours cover the hours the node was alive), how a shared resource's day is shared out, how
nodes seen leaving still count, and the deadline on reading a query's answer.

The bill comes from a small in-process source (rows given by the test): the clouds' own tests
(test_aws_billing, test_gcp_billing, test_azure_billing) run the same rules over the wire with the SDKs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from exporter.cache import PriceCache
from exporter.config.sources.aws import AwsCurSettings
from exporter.health import Health, Reason
from exporter.inventory.node import Node, ProviderRef
from exporter.pricing.sources.billing import BillingSource, BillRow, CommitmentDay, midnight
from tests.conftest import FakeClock, context, node

NOW = datetime(2024, 6, 6, 10, tzinfo=UTC)  # June 2-4 settled (settle_hours 24), June 5 not


def day(d: int) -> date:
    return date(2024, 6, d)


class ListedBill(BillingSource[AwsCurSettings]):
    """A billing source whose bill is a list of rows; a scale set is any resource starting with "vmss"."""

    name = "aws_cur"
    provider = "aws"
    resource_kind = "instance"

    def __init__(
        self, rows: list[BillRow], clock: FakeClock, *, seconds_per_row: float = 0.0, cache: PriceCache | None = None
    ) -> None:
        settings = AwsCurSettings(enabled=True, database="cur", table="t", retries=0, timeout_seconds=60.0)
        self.health = Health()
        super().__init__(settings, context(clock, health=self.health, cache=cache))
        self.rows, self.seconds_per_row, self._clock = rows, seconds_per_row, clock

    def resource(self, n: Node) -> str | None:
        return n.ref.instance_id or None

    def shared(self, resource: str) -> bool:
        return resource.startswith("vmss")

    def where(self) -> str:
        return "the listed bill"

    def query(self, resources: Sequence[str], start: datetime, end: datetime) -> Iterator[BillRow]:
        for row in self.rows:
            self._clock.advance(self.seconds_per_row)  # a slow page of the answer
            yield row


def row(resource: str, d: int, cost: float, hours: float, network: float = 0.0) -> BillRow:
    return BillRow(resource, day(d), midnight(day(d)) + timedelta(days=1), cost, hours, network_cost=network)


def vm(name: str, resource: str, created: datetime | None = None) -> Node:
    return node(name, ref=ProviderRef("aws", instance_id=resource),
                created=created.timestamp() if created else None)


def test_a_day_still_being_filled_for_one_node_is_skipped_and_pushes_no_older_day_out() -> None:
    full, half = vm("a", "i-a"), vm("b", "i-b")
    rows = [row("i-a", d, 24.0, 24) for d in range(1, 6)]
    rows += [row("i-b", d, 48.0, 24, network=2.4) for d in (1, 2, 3)] + [row("i-b", 4, 22.0, 11, network=9.9)]
    source = ListedBill(rows, FakeClock(NOW))
    source.wanted([full, half])
    assert source.refresh() is True, source.status.detail
    a, b = source.facts(full), source.facts(half)
    assert a is not None and a.day_names == ("2024-06-02", "2024-06-03", "2024-06-04")  # June 5: settling
    assert b is not None and b.day_names == ("2024-06-01", "2024-06-02", "2024-06-03")  # June 4: 11 of 24 h
    assert b.hourly == pytest.approx(2.0) and b.day_costs == (48.0, 48.0, 48.0)
    assert b.network_hourly == pytest.approx(0.1)


def test_the_day_a_node_was_created_counts_with_the_hours_it_was_alive() -> None:
    created = datetime(2024, 6, 3, 14, 30, tzinfo=UTC)
    young = vm("young", "i-y", created)
    rows = [row("i-y", 3, 9.5 * 2, 9.5), row("i-y", 4, 48.0, 24)]
    source = ListedBill(rows, FakeClock(NOW))
    source.wanted([young])
    source.refresh()
    facts = source.facts(young)
    assert facts is not None and facts.day_names == ("2024-06-03", "2024-06-04") and facts.hours == 33.5
    # the same bill, but the node shows 24 h alive on June 3: 9.5 h there is a day still being filled
    source = ListedBill(rows, FakeClock(NOW))
    source.wanted([vm("young", "i-y")])
    source.refresh()
    unknown = source.facts(vm("young", "i-y"))
    assert unknown is not None and unknown.day_names == ("2024-06-04",)


def test_within_a_quarter_hour_of_the_alive_hours_is_complete_beyond_is_not() -> None:
    for billed, usable in ((23.76, True), (23.74, False)):
        source = ListedBill([row("i-a", 4, billed, billed)], FakeClock(NOW))
        source.wanted([vm("a", "i-a")])
        source.refresh()
        assert (source.facts(vm("a", "i-a")) is not None) is usable, billed


def test_no_billed_day_before_a_node_existed() -> None:
    """A name the bill knows from an earlier VM (reused): days before this node's creation are not its."""
    reborn = vm("a", "i-a", datetime(2024, 6, 4, tzinfo=UTC))
    source = ListedBill([row("i-a", d, 24.0, 24) for d in (2, 3, 4)], FakeClock(NOW))
    source.wanted([reborn])
    source.refresh()
    facts = source.facts(reborn)
    assert facts is not None and facts.day_names == ("2024-06-04",)


def test_a_shared_resource_is_shared_by_alive_hours_and_counts_nodes_seen_leaving() -> None:
    """A scale set billed 60 instance-hours on June 4: three nodes alive 24 + 24 + 12 h. The one that left at
    noon was seen leaving, so its hours count: the day is complete, and each node pays rate x its hours."""
    clock = FakeClock(datetime(2024, 6, 4, 11, tzinfo=UTC))
    a, b = vm("a", "vmss-1", datetime(2024, 5, 1, tzinfo=UTC)), vm("b", "vmss-1", datetime(2024, 5, 1, tzinfo=UTC))
    leaving = vm("c", "vmss-1", datetime(2024, 5, 1, tzinfo=UTC))
    rows = [row("vmss-1", 4, 60 * 0.5, 60, network=6.0)]
    source = ListedBill(rows, clock)
    source.wanted([a, b, leaving])
    clock.advance(3600)  # noon: c is gone
    source.wanted([a, b])
    clock.now = NOW.timestamp()
    source.refresh()
    facts = source.facts(a)
    assert facts is not None and facts.day_costs == (12.0,) and facts.hours == 24 and facts.hourly == 0.5
    assert facts.network_hourly == pytest.approx(0.1)
    # billed for only 40 of the 60 instance-hours its nodes lived: still being filled, not used
    source = ListedBill([row("vmss-1", 4, 40 * 0.5, 40)], clock := FakeClock(datetime(2024, 6, 4, 11, tzinfo=UTC)))
    source.wanted([a, b, leaving])
    clock.advance(3600)
    source.wanted([a, b])
    clock.now = NOW.timestamp()
    source.refresh()
    assert source.facts(a) is None and source.status.reason is Reason.NO_DATA
    assert "still being filled in" in source.status.detail


def test_an_answer_read_past_the_deadline_is_a_timeout() -> None:
    rows = [row("i-a", d, 24.0, 24) for d in range(1, 6)]
    source = ListedBill(rows, FakeClock(NOW), seconds_per_row=20.0)  # the fourth row arrives 80 s in
    source.wanted([vm("a", "i-a")])
    source.refresh()
    assert (source.status.up, source.status.reason) == (False, Reason.TIMEOUT)
    assert "aws.cur.timeout_seconds" in source.status.detail


class CommittedBill(ListedBill):
    """A listed bill with commitment days too."""

    reports_commitments = True
    reports_coverage = True

    def __init__(
        self, rows: list[BillRow], days: list[CommitmentDay], clock: FakeClock, cache: PriceCache
    ) -> None:
        super().__init__(rows, clock, cache=cache)
        self.days = days

    def commitment_days(self, start: datetime, end: datetime) -> Iterator[CommitmentDay]:
        yield from self.days


def test_commitments_are_folded_over_their_latest_settled_days_and_survive_a_restart(tmp_path: Path) -> None:
    """A savings plan of $2.40 a day: June 5 is not settled, June 1 is older than lookback_days; over June
    2-4 it covered 2.40 + 1.20 + 2.40 = 6.00 of 7.20, so 1.20 unused over 72 h. Part of a split day counts
    once it is summed (two rows for June 3)."""
    plan = "arn:aws:savingsplans::111122223333:savingsplan/3f1c2a9e-7d6e-4b5a-9c8d-1e2f3a4b5c6d"
    days = [CommitmentDay(plan, day(d), 2.40, used) for d, used in ((1, 0.0), (2, 2.40), (4, 2.40), (5, 0.0))]
    days += [CommitmentDay(plan, day(3), 1.20, 0.60), CommitmentDay(plan, day(3), 1.20, 0.60)]
    rows = [BillRow("i-a", day(d), midnight(day(d)) + timedelta(days=1), 24.0, 24, covered_hours=18)
            for d in range(1, 6)]
    health = Health()
    cache = PriceCache(str(tmp_path / "cache.sqlite"), health.integration("cache"))
    source = CommittedBill(rows, days, clock := FakeClock(NOW), cache)
    source.wanted([vm("a", "i-a")])
    assert source.refresh() is True, source.status.detail
    (commitment,) = source.commitments()
    assert (commitment.provider, commitment.commitment) == ("aws", plan)
    assert commitment.days == ("2024-06-02", "2024-06-03", "2024-06-04")
    assert commitment.unused_hourly == pytest.approx(1.20 / 72) and commitment.utilization == pytest.approx(6 / 7.2)
    facts = source.facts(vm("a", "i-a"))
    assert facts is not None and facts.coverage == pytest.approx(0.75)
    restarted = CommittedBill(rows, [], clock, cache)  # reads the cache as it starts
    assert restarted.commitments() == source.commitments()
    clock.advance(4 * 86400)  # past max_staleness_seconds: neither rates nor commitments are served
    assert restarted.commitments() == ()
