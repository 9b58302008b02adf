"""The fetch layer on its own: which failures a `Fetcher` retries, how long it sleeps (on the source's clock),
and what it counts on the integration status."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from exporter.health import IntegrationStatus, Reason
from exporter.pricing.sources.fetch import MAX_RETRY_AFTER, Fetcher, FetchError
from tests.conftest import FakeClock


@dataclass(frozen=True)
class Policy:
    retries: int = 2
    backoff_seconds: float = 1.0
    backoff_max_seconds: float = 3.0


def failing(*errors: Exception, result: str = "ok") -> tuple[list[int], Callable[[], str]]:
    """A call that raises `errors` in turn, then returns `result`; and the list counting its attempts."""
    attempts: list[int] = []

    def call() -> str:
        attempts.append(1)
        if len(attempts) <= len(errors):
            raise errors[len(attempts) - 1]
        return result

    return attempts, call


def fetcher(clock: FakeClock, *, count_calls: bool = True) -> Fetcher:
    return Fetcher(IntegrationStatus("test"), clock, Policy(), count_calls=count_calls)


def test_transient_failures_are_retried_with_jittered_doubling_backoff() -> None:
    clock = FakeClock()
    attempts, call = failing(FetchError(Reason.UNAVAILABLE, "503"), FetchError(Reason.TIMEOUT, "slow"))
    run = fetcher(clock)
    assert run.run(call) == "ok"
    assert len(attempts) == 3
    first, second = clock.sleeps
    assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0
    assert (run.status.requests, run.status.errors) == (3, {Reason.UNAVAILABLE: 1, Reason.TIMEOUT: 1})


def test_retry_after_wins_over_a_shorter_backoff_within_reason() -> None:
    clock = FakeClock()
    _, call = failing(
        FetchError(Reason.THROTTLED, "slow down", retry_after=20.0),
        FetchError(Reason.THROTTLED, "slow down", retry_after=10_000.0),
    )
    fetcher(clock).run(call)
    assert clock.sleeps == [20.0, MAX_RETRY_AFTER]


def test_retries_are_bounded_and_the_last_error_raised() -> None:
    clock = FakeClock()
    attempts, call = failing(*[FetchError(Reason.THROTTLED, f"try {i}") for i in range(5)])
    with pytest.raises(FetchError, match="try 2"):
        fetcher(clock).run(call)
    assert len(attempts) == 3 and len(clock.sleeps) == 2


@pytest.mark.parametrize("reason", [Reason.PERMISSION, Reason.AUTH, Reason.NOT_FOUND, Reason.BAD_RESPONSE])
def test_failures_a_retry_cannot_fix_are_raised_at_once(reason: Reason) -> None:
    clock = FakeClock()
    attempts, call = failing(FetchError(reason, "no"))
    with pytest.raises(FetchError):
        fetcher(clock).run(call)
    assert len(attempts) == 1 and clock.sleeps == []


def test_other_exceptions_are_not_retried_nor_counted() -> None:
    clock = FakeClock()
    attempts, call = failing(KeyError("PriceList"))
    run = fetcher(clock)
    with pytest.raises(KeyError):
        run.run(call)
    assert len(attempts) == 1 and run.status.requests == 0


def test_a_fetcher_that_does_not_count_leaves_counting_to_the_source() -> None:
    _, call = failing(FetchError(Reason.UNAVAILABLE, "503"))
    run = fetcher(FakeClock(), count_calls=False)
    run.run(call)
    assert run.status.requests == 0
