"""What a source says about a node (`Quote`) and what the engine decides (`NodePrice`)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum


class Basis(StrEnum):
    """What kind of rate a price is, so a spot node priced at on-demand is visible as such."""

    ON_DEMAND = "on_demand"  # a public on-demand list price
    SPOT = "spot"  # a spot/preemptible market price
    BILLED = "billed"  # the customer's own bill
    CUSTOM = "custom"  # the user's price table


@dataclass(frozen=True, slots=True)
class Quote:
    """One source's hourly price for one node. Per-unit prices only when the source itself has them."""

    hourly: Decimal
    currency: str
    basis: Basis
    cpu_core_hourly: Decimal | None = None
    memory_gib_hourly: Decimal | None = None
    gpu_hourly: Decimal | None = None
    on_demand_hourly: Decimal | None = None  # of a billed rate, the part billed at undiscounted list rates


@dataclass(frozen=True, slots=True)
class BillFacts:
    """What the bill says about a node beyond its rate: shown whichever source prices the node.

    Amounts are floats: they are only ever exposed (as float64), and at 15,000 nodes Decimals would
    cost several MiB more.
    """

    source: str
    hourly: float  # Σ cost ÷ Σ billed hours over `days`
    on_demand_hourly: float  # the part of `hourly` billed at undiscounted on-demand rates
    hours: float  # Σ billed hours over the days used
    day_names: tuple[str, ...]  # the complete UTC days used, oldest first (one tuple shared by most nodes)
    day_costs: tuple[float, ...]  # the billed cost of each of those days
    network_hourly: float | None = None  # data transfer cost ÷ billed hours, where the cloud attributes it
    tags: tuple[tuple[str, str], ...] = ()  # allowlisted billing tags of the node's resource
    coverage: float | None = None  # the share of its billed usage a commitment covered (RI, SP, CUD…)

    @property
    def days(self) -> tuple[tuple[str, float], ...]:
        """(UTC day, billed cost) of each usable day used, oldest first."""
        return tuple(zip(self.day_names, self.day_costs, strict=True))


@dataclass(frozen=True, slots=True)
class Commitment:
    """One commitment (reservation, savings plan, committed use discount) over a billing source's latest
    settled days: what of it went unused. The unused part is never spread onto nodes."""

    provider: str  # "aws", "gcp", "azure"
    commitment: str  # its id on the bill: an RI or SP ARN, a GCP commitment, an Azure reservation or plan
    unused_hourly: float  # Σ unused cost ÷ the hours of the days used, in the source's cost basis
    utilization: float  # Σ used ÷ Σ committed over those days
    days: tuple[str, ...]  # the UTC days used, oldest first


@dataclass(frozen=True, slots=True)
class NodePrice:
    """The engine's verdict for a node: total and per-unit hourly prices, and who said so."""

    hourly: Decimal
    currency: str
    source: str
    basis: Basis
    cpu_core_hourly: Decimal | None
    memory_gib_hourly: Decimal | None
    gpu_hourly: Decimal | None
    list_hourly: Decimal | None = None  # the on-demand list price, before discount: the reference
    list_source: str = ""
    billed: BillFacts | None = None
