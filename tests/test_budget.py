"""Bounded time: with `timeout_seconds: 5` and `retries: 0`, every fault of the contract suite is reported,
with its reason, within 20 s of wall time, on every source, library retries included (docs/pricing.md,
"Time budget"). The harnesses are the contract suite's own, with the deadline and retries overridden, and
faults that hold a request far longer than any deadline.

These wait in real time (a held request ends only at the client's deadline), so they are `slow`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exporter.health import Reason
from fakes.server import Fault
from tests import test_source_contract as contract

BUDGET_SECONDS = 20.0
DEADLINE = 5.0
FAULTS = [
    (Fault.AUTH, Reason.AUTH),
    (Fault.PERMISSION, Reason.PERMISSION),
    (Fault.NOT_FOUND, Reason.NOT_FOUND),
    (Fault.THROTTLED, Reason.THROTTLED),
    (Fault.TIMEOUT, Reason.TIMEOUT),
    (Fault.UNAVAILABLE, Reason.UNAVAILABLE),
    (Fault.DROPPED, Reason.UNAVAILABLE),
    (Fault.CUT, Reason.UNAVAILABLE),
    (Fault.BAD_RESPONSE, Reason.BAD_RESPONSE),
]

pytestmark = pytest.mark.slow


@pytest.fixture
def harness(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A contract harness whose source runs with timeout_seconds 5 and retries 0, having priced once."""
    monkeypatch.setattr(contract, "TIMEOUT", DEADLINE)
    monkeypatch.setattr(contract, "BIGQUERY_TIMEOUT", DEADLINE)
    monkeypatch.setattr(contract, "SHELF", {**contract.SHELF, "retries": 0})
    monkeypatch.setattr(contract, "BILLING", {**contract.BILLING, "retries": 0})
    with contract.HARNESSES[request.param](tmp_path, monkeypatch) as ready:
        ready.refresh()
        assert ready.status.up, ready.status.detail
        ready.fake.hold_seconds = 120.0  # a hung service: far past the deadline
        yield ready


@pytest.mark.timeout(60)
@pytest.mark.parametrize("harness", list(contract.HARNESSES), indirect=True)
@pytest.mark.parametrize(("fault", "reason"), FAULTS, ids=[f.value for f, _ in FAULTS])
def test_every_fault_is_reported_within_the_budget(harness: Any, fault: Fault, reason: Reason) -> None:
    harness.fake.inject(fault, None, retry_after=1.0)
    started = time.monotonic()
    harness.refresh()
    took = time.monotonic() - started
    assert (harness.status.up, harness.status.reason) == (False, reason), harness.status.detail
    assert took <= BUDGET_SECONDS, f"{fault.value} took {took:.1f} s"
    harness.fake.clear_faults()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("harness", ["gcp_bigquery"], indirect=True)
@pytest.mark.parametrize(
    ("fault", "reason"),
    [(Fault.TIMEOUT, Reason.TIMEOUT), (Fault.THROTTLED, Reason.THROTTLED), (Fault.DROPPED, Reason.UNAVAILABLE),
     (Fault.BAD_RESPONSE, Reason.BAD_RESPONSE)],
    ids=["hung", "429", "dropped", "truncated"],
)
def test_bigquery_results_call_faults_are_reported_within_the_budget(harness: Any, fault: Fault, reason: Reason) -> None:
    """The query is accepted, then jobs.getQueryResults fails: the client raises that call's timeout to at
    least 120 s and retries 429s and 5xx for minutes on its own; neither may happen here."""
    harness.fake.inject(fault, None, retry_after=1.0, when=lambda request: "/queries/" in request.path)
    started = time.monotonic()
    harness.refresh()
    took = time.monotonic() - started
    assert (harness.status.up, harness.status.reason) == (False, reason), harness.status.detail
    assert took <= BUDGET_SECONDS, f"{fault.value} on getQueryResults took {took:.1f} s"
    harness.fake.clear_faults()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("harness", ["gcp_bigquery"], indirect=True)
def test_bigquery_backend_error_on_results_is_unavailable_within_the_budget(harness: Any) -> None:
    harness.fake.fail_next("backendError", count=100, on="results")
    started = time.monotonic()
    harness.refresh()
    took = time.monotonic() - started
    assert (harness.status.up, harness.status.reason) == (False, Reason.UNAVAILABLE), harness.status.detail
    assert took <= BUDGET_SECONDS, f"backendError on getQueryResults took {took:.1f} s"
