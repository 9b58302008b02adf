"""The refresh scheduler, one pass at a time on a fake clock: due times, first sight, re-pricing, faults."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import pytest

from exporter.inventory.node import Node
from exporter.pricing.quote import Quote
from exporter.scheduler import RefreshScheduler
from tests.conftest import FakeClock, node, wait_until


class Source:
    """A price source that records what the scheduler asked of it."""

    def __init__(
        self, name: str, log: list[str], interval: float | None = 60.0, *, changes: bool = False, kind: str = "shelf"
    ) -> None:
        self.name = name
        self.kind = kind
        self.refresh_interval_seconds = interval
        self.changes = changes
        self.is_pending = False
        self.fails = False
        self.seen: list[str] = []
        self._log = log

    def quote(self, node: Node) -> Quote | None:
        return None

    def wanted(self, nodes: Iterable[Node]) -> None:
        self.seen = [n.name for n in nodes]

    def pending(self) -> bool:
        return self.is_pending

    def refresh(self) -> bool:
        self._log.append(self.name)
        self.is_pending = False
        if self.fails:
            raise RuntimeError("a bug")
        return self.changes


class Harness:
    def __init__(self, *sources: Source, tick_seconds: float = 1.0) -> None:
        self.clock = FakeClock()
        self.priced = threading.Event()
        self.reprices = 0
        self.lookups = 0
        self.scheduler = RefreshScheduler(
            sources, self._nodes, self._reprice, self.priced, self.clock, tick_seconds=tick_seconds
        )

    def _nodes(self) -> list[Node]:
        self.lookups += 1
        return [node("a"), node("b")]

    def _reprice(self) -> None:
        self.reprices += 1


def test_each_source_refreshes_first_then_on_its_own_interval() -> None:
    log: list[str] = []
    fast, slow, static = Source("fast", log, 10.0), Source("slow", log, 60.0), Source("static", log, None)
    h = Harness(fast, slow, static)
    h.scheduler.tick()
    assert log == ["fast", "slow"]  # in order; a source without an interval is never refreshed
    assert fast.seen == ["a", "b"] and h.lookups == 1  # the nodes, gathered once for the pass
    h.clock.advance(9.9)
    h.scheduler.tick()
    assert log == ["fast", "slow"] and h.lookups == 1  # nothing due: the nodes are not even gathered
    h.clock.advance(0.1)
    h.scheduler.tick()
    assert log == ["fast", "slow", "fast"]
    h.clock.advance(50.0)
    h.scheduler.tick()
    assert log == ["fast", "slow", "fast", "fast", "slow"]


def test_a_source_with_pending_keys_refreshes_before_its_interval() -> None:
    log: list[str] = []
    shelf = Source("shelf", log, 3600.0)
    h = Harness(shelf)
    h.scheduler.tick()
    shelf.is_pending = True  # it met a node type it has no price for
    h.scheduler.tick()
    h.scheduler.tick()
    assert log == ["shelf", "shelf"]


def test_reprices_on_the_first_pass_then_only_when_quotes_changed() -> None:
    log: list[str] = []
    quiet, moving = Source("quiet", log, 10.0), Source("moving", log, 30.0, changes=True)
    h = Harness(quiet, moving)
    assert not h.priced.is_set()
    h.scheduler.tick()
    assert (h.reprices, h.priced.is_set()) == (1, True)
    h.clock.advance(10.0)
    h.scheduler.tick()  # only the quiet one was due
    assert h.reprices == 1
    h.clock.advance(20.0)
    h.scheduler.tick()
    assert h.reprices == 2


def test_a_failing_source_is_logged_and_the_others_still_refresh(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    broken, shelf = Source("broken", log, 10.0), Source("shelf", log, 10.0)
    broken.fails = True
    h = Harness(broken, shelf)
    with caplog.at_level(logging.ERROR, logger="exporter.scheduler"):
        h.scheduler.tick()
    assert log == ["broken", "shelf"]
    assert "refresh of price source broken failed" in caplog.text
    assert h.priced.is_set()
    h.scheduler.tick()
    assert log == ["broken", "shelf"]  # a failed refresh waits for its interval too, not every tick


def test_run_waits_for_the_node_list_then_ticks_until_stopped() -> None:
    log: list[str] = []
    h = Harness(Source("shelf", log, 0.0), tick_seconds=0.001)  # due on every tick
    stop, synced = threading.Event(), threading.Event()
    thread = threading.Thread(target=h.scheduler.run, args=(stop, synced), daemon=True)
    thread.start()
    try:
        assert not h.priced.wait(0.05) and log == []  # no pass before the first full node list
        synced.set()
        wait_until(lambda: len(log) >= 3)
        assert h.priced.is_set()
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


class Hung(Source):
    """A source whose refresh hangs until `release` is set, as a stuck BigQuery job does."""

    def __init__(self, name: str, log: list[str], kind: str) -> None:
        super().__init__(name, log, 0.0, kind=kind)
        self.release = threading.Event()

    def refresh(self) -> bool:
        self._log.append(f"{self.name} started")
        self.release.wait(10)
        return super().refresh()


def running(h: Harness) -> tuple[threading.Event, threading.Thread]:
    """The scheduler's threads, started after the first node list."""
    stop, synced = threading.Event(), threading.Event()
    synced.set()
    thread = threading.Thread(target=h.scheduler.run, args=(stop, synced), daemon=True)
    thread.start()
    return stop, thread


def test_a_hung_bill_holds_up_neither_the_shelf_nor_readiness() -> None:
    log: list[str] = []
    bill, shelf = Hung("bill", log, "billing"), Source("shelf", log, 0.0, changes=True)
    h = Harness(bill, shelf, tick_seconds=0.001)
    stop, thread = running(h)
    try:
        assert h.priced.wait(5), "ready while the bill still hangs"
        wait_until(lambda: log.count("shelf") >= 3)  # the shelf keeps refreshing on its own thread
        assert "bill started" in log and "bill" not in log
        reprices = h.reprices
        wait_until(lambda: h.reprices > reprices)  # and its changed quotes are re-priced meanwhile
    finally:
        bill.release.set()
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_readiness_waits_for_every_price_list_but_not_for_bills() -> None:
    """A hung price list does hold readiness (up to its deadline): its first answer is what prices nodes."""
    log: list[str] = []
    price_list, bill = Hung("list", log, "shelf"), Source("bill", log, 0.0, kind="billing")
    h = Harness(price_list, bill, tick_seconds=0.001)
    stop, thread = running(h)
    try:
        wait_until(lambda: "list started" in log and "bill" in log)
        assert not h.priced.wait(0.05)
        price_list.release.set()
        assert h.priced.wait(5)
    finally:
        price_list.release.set()
        stop.set()
        thread.join(5)


def test_a_failing_reprice_or_node_list_ends_no_thread(caplog: pytest.LogCaptureFixture) -> None:
    """Re-pricing and gathering the nodes run on the scheduler's threads: a failure in either is logged,
    and the threads go on (the next change is re-priced)."""
    log: list[str] = []
    shelf = Source("shelf", log, 0.0, changes=True)
    h = Harness(shelf, tick_seconds=0.001)
    failures = {"reprice": 2, "nodes": 2}
    reprice, nodes = h._reprice, h._nodes  # the harness's own callbacks, made to fail

    def flaky(kind: str, call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            if failures[kind] > 0:
                failures[kind] -= 1
                raise RuntimeError(f"{kind} broke")
            return call()

        return run

    h.scheduler._reprice = flaky("reprice", reprice)
    h.scheduler._lookups = flaky("nodes", nodes)
    stop, thread = running(h)
    try:
        with caplog.at_level(logging.ERROR, logger="exporter.scheduler"):
            wait_until(lambda: h.reprices >= 2 and log.count("shelf") >= 2)
        assert "re-pricing the nodes failed" in caplog.text
        assert "refresh of price source shelf failed" in caplog.text
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive()


def test_with_no_price_list_to_wait_for_the_listed_nodes_are_ready_without_a_second_pricing() -> None:
    """The list priced every node with the bundled tables; pricing them all again would only delay readiness
    (0.65 s at 16,000 nodes). A bill, never waited for, re-prices when its refresh changes quotes."""
    log: list[str] = []
    bill = Source("bill", log, 0.0, kind="billing")
    for sources in ((), (bill,)):
        h = Harness(*sources, tick_seconds=0.001)
        stop, thread = running(h)
        try:
            assert h.priced.wait(5)
            if sources:
                wait_until(lambda: "bill" in log)
            assert h.reprices == 0
            if sources:
                bill.changes = True
                wait_until(lambda h=h: h.reprices > 0)
        finally:
            stop.set()
            thread.join(5)
