"""GCP billed cost: the detailed Cloud Billing export in BigQuery (`gcp_billing_export_resource_v1_…`).

One parameterised query per refresh, aggregated by BigQuery to one row per (project, zone, VM name) and
UTC usage day, over the rows of the VM's instance (`resource.global_name` …/zones/Z/instances/NAME; its
disks, billed under the same `resource.name` as …/disks/…, are left out) whose `cost_type` is 'regular':
- cost: the instance's Compute Engine rows other than egress, `cost` (already after negotiated prices) plus
  their credits of the configured types (committed-use and sustained-use discounts, free tier,
  promotions…; all by default), each committed use discount credit re-priced at its commitment's rate
  (`bigquery_query`): a CUD credit offsets the covered usage's whole on-demand cost, the commitment's fee
  being billed on rows of its own, which this query reads in the same scan to price them;
- covered hours: the hours times the share of the instance's on-demand value a CUD covered;
- hours: the time the VM ran, from its core SKUs' usage in vCPU-seconds divided by its vCPU count x 3600,
  the vCPU count read off the bill itself (its fullest usage hour in the window; see `bigquery_query`), so
  a VM started at 08:14 ran 15.77 h that day;
- network: the instance's egress rows, "… Data Transfer Out …" (service Networking, since 2023) or
  "… Egress …" (Compute Engine, before);
- every export batch of an hour summed, also those exported days late into later `_PARTITIONTIME`
  partitions: partitions are pruned from the window's first day less one, with no upper bound.

A second query per refresh (`commitments_query`) reads each commitment's fee and used part per day, for
the unused-commitment metrics (docs/pricing.md, "Commitments", GCP).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from exporter.config.sources.gcp import GcpBigQuerySettings
from exporter.health import Reason
from exporter.inventory.node import Node
from exporter.pricing.sources.billing import BillingSource, BillRow, CommitmentDay
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import FetchError, reason_for_status, untrusted_tls_error
from exporter.pricing.sources.gcp.catalog import trusting
from exporter.pricing.sources.registry import register
from exporter.tls import untrusted_certificate

if TYPE_CHECKING:  # the SDK itself is imported when a client is built: discovery must stay SDK-free
    from google.api_core import exceptions as google_errors
    from google.cloud import bigquery


_ROLES = (
    "roles/bigquery.jobUser on the job project and roles/bigquery.dataViewer on the billing export dataset"
)


# The detailed export's shapes this query is built to (Google's "Structure of Detailed data export"
# page, cloud.google.com/billing/docs/how-to/export-data-bigquery-tables/detailed-usage, and the 2023
# networking SKU changes):
# - A VM is its rows whose `resource.global_name` is `//compute.googleapis.com/projects/P/zones/Z/
#   instances/…` (matched as '%/zones/%/instances/%', so a project or disk called "instances" is no VM).
#   Its boot and attached disks bill under the same `resource.name` but a `…/disks/…` global name: they are
#   dropped here, so a node's cost is its machine (cores, RAM, GPUs, licences…), not its storage. The zone
#   of the key is read from the global name (a Networking row's `location.zone` need not be the VM's),
#   `location.zone` only where it has none; the project is `project.id`.
# - Only `cost_type = 'regular'` rows count: tax, adjustment and rounding-error rows are not usage.
# - Network: egress SKUs, "… Data Transfer Out …" under service Networking since the 2023 SKU changes and
#   "… Egress …" under Compute Engine before, on the instance's global name; under either service. Every
#   other Networking row of an instance (ingress, external IPs) is neither cost nor network.
# - Hours: Compute Engine core SKUs ("N2 Instance Core running in EMEA", the legacy "… Instance with 1
#   VCPU …" and "Micro Instance with burstable CPU …"; not "Licensing Fee …") have `usage.unit` 'seconds'
#   and an amount of vCPU-seconds. The export has no vCPU count, so a VM's is read off its own bill: the
#   largest core amount of one of its usage hours in the window (an hour's rows from all export batches
#   summed first) is one fully run hour, vCPUs x 3600, and each hour counts its core amount ÷ that. A VM
#   that ran no full hour in the whole window is over-counted (its best partial hour counts as whole), and a
#   VM resized within the window counts its hours on the smaller shape short: both rare for a node.
# - One usage hour can come in several rows from different export batches (`export_time`), some more than
#   a day late; all are summed. `_PARTITIONTIME` is the day a row's batch was exported, which is never
#   before the usage it bills: the partition filter is a lower bound only, the window's first day less one
#   (slack for a partition day that is not the export's UTC day), so that every row exported up to now for
#   the window's usage is read however late it came, while the partitions before are pruned. No upper
#   bound: a late row sits in any later partition. No `export_time` filter either: it is not the
#   partitioning column (a filter on it prunes nothing), and the lower bound it would state is the same.
#   `usage_start_time` then picks the window's usage.
# Each CTE is referenced once (BigQuery would run one referenced twice twice, scanning the table again).
_NETWORK_SKU = (
    "(LOWER(sku.description) LIKE '%data transfer out%' OR LOWER(sku.description) LIKE '%egress%')"
)
_CORE_SKU = (
    "(service.description = 'Compute Engine' AND usage.unit = 'seconds'"
    " AND (sku.description LIKE '%Core%' OR sku.description LIKE '%Instance with%')"
    " AND sku.description NOT LIKE '%Licensing Fee%')"
)

# Committed use discounts (docs/pricing.md, "Commitments"; Google's "Committed use discounts" and "Spend-based
# CUDs data model updates" pages, cloud.google.com/docs/cuds-multiprice and …/cuds-multiprice-datamodel):
# - Credit model (resource-based CUDs, and spend-based ones before their migration): the commitment's fee
#   is billed hourly on its own Compute Engine rows, "Commitment v1: N2 Cpu in Americas for 1 Year" (N1:
#   "Commitment v1: Cpu in …"), on no VM, `usage.amount_in_pricing_units` the committed vCPU-hours or
#   GiB-hours, `location.region` the commitment's region; the covered usage rows stay at on-demand price
#   and carry a COMMITTED_USAGE_DISCOUNT credit of the covered usage's full on-demand cost. Legacy
#   spend-based CUDs: fee "Commitment - dollar based v1: GCE …", credit COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE.
# - New model (Compute flexible CUDs since 2026-01-21): covered usage rows carry their discounted cost and a
#   `consumption_model`, with no credit; the fee rows (Google's sample KPI query lists Compute's fee SKU ids
#   below) cost $1 per unit of hourly commitment, and a FEE_UTILIZATION_OFFSET credit negates the used part.
_FEE_SKU = "(sku.description LIKE 'Commitment v1:%')"
_FLEX_FEE_SKU_IDS = ("5515-81A8-03A2", "B22F-51BE-D599")  # cloud.google.com/docs/cuds-example-queries
_CUD = "COMMITTED_USAGE_DISCOUNT"
_DOLLAR_CUD = "COMMITTED_USAGE_DISCOUNT_DOLLAR_BASE"
# What a CPU or RAM commitment covers: "<region>/<family>/<cpu|ram>", read off a fee row's SKU ("Commitment
# v1: C3 Cpu in Americas for 1 Year" → c3/cpu; no family is N1) or a usage row's ("C3 Instance Core running
# in Americas", "N2 Custom Instance Ram running in EMEA", "N1 Predefined Instance Core …"), with the row's
# region: commitments are regional. NULL for any other SKU (GPUs, local SSD: matched by credits.id only).
_MATCH_KEY = f"""CONCAT(location.region, '/', IF({_FEE_SKU},
      CONCAT(IFNULL(REGEXP_EXTRACT(LOWER(sku.description), r'^commitment v1: (.+) (?:cpu|ram) in '), 'n1'),
             '/', REGEXP_EXTRACT(LOWER(sku.description), r'^commitment v1: (?:.+ )?(cpu|ram) in ')),
      CONCAT(REGEXP_EXTRACT(LOWER(sku.description),
                            r'^(.+?)(?: predefined| custom)? instance (?:core|ram) running in '),
             '/', IF(LOWER(sku.description) LIKE '% instance core running in %', 'cpu', 'ram'))))"""
# A commitment's id: the fee row's `resource.name` where the bill gives one, else its region and SKU.
_COMMITMENT_ID = "IFNULL(resource.name, CONCAT(location.region, ': ', sku.description))"


def _credit_sum(types: str, counted: str = "") -> str:
    """The (positive) sum of a row's credits of these types, `counted` an extra condition."""
    return f"IFNULL((SELECT -SUM(c.amount) FROM UNNEST(credits) AS c WHERE c.type {types}{counted}), 0)"


def bigquery_query(settings: GcpBigQuerySettings) -> str:
    """The node query of a refresh, aggregated per (project, zone, VM) and UTC usage day; its values come as
    parameters.

    CUD credits are re-priced at their commitment's rate: a credit-model row's effective cost is its cost
    plus its counted credits plus, for each counted COMMITTED_USAGE_DISCOUNT credit, |credit| x commitment
    unit price ÷ the row's own on-demand unit price (cost ÷ usage in pricing units), the commitment's unit
    price being Σ fee ÷ Σ committed quantity of its fee rows in the window: those of the commitment the
    credit's `credits.id` names, else those of the same region, family and CPU/RAM. A credit no fee row
    prices stays counted as billed (`unpriced_cud`, logged). A counted DOLLAR_BASE credit is re-priced at
    (1 - spend_based_cud_discount). Fee rows are scanned with the VM's (one scan; window functions price
    every row) and never counted as a VM's cost. To price each credit at its own commitment, rows are
    spread one per credit (`LEFT JOIN UNNEST(credits)`, which keeps a row without credits: Google's
    "Work with arrays" page) with the row's own amounts split evenly over them. Coverage: per row the
    on-demand value (`cost`; consumption-model rows `cost` ÷ (1 - spend_based_cud_discount)) and its
    covered part (CUD credits of any type, at most the cost; consumption-model rows whole).
    """
    table = f"`{settings.project}.{settings.dataset}.{settings.table}`"
    counted = " AND c.type IN UNNEST(@credit_types)" if settings.credit_types else ""
    counted_cc = " AND cc.type IN UNNEST(@credit_types)" if settings.credit_types else ""
    credit_filter = " WHERE c.type IN UNNEST(@credit_types)" if settings.credit_types else ""
    count = range(len(settings.tags))
    row_tags = "".join(
        f",\n    (SELECT l.value FROM UNNEST(labels) AS l WHERE l.key = @tag_{i}) AS tag_{i}" for i in count
    )
    tag_columns = "".join(f", b.tag_{i}" for i in count)
    slot_tags = "".join(f", MAX(tag_{i}) AS tag_{i}" for i in count)
    day_tags = "".join(f",\n  MAX(tag_{i}) AS tag_{i}" for i in count)
    return f"""WITH billed AS (
  SELECT
    project.id AS project_id,
    COALESCE(REGEXP_EXTRACT(resource.global_name, r'/zones/([^/]+)/instances/'), location.zone) AS zone,
    resource.name AS vm, resource.global_name AS global_name,
    usage_start_time, usage_end_time, currency, cost,
    {_FEE_SKU} AS is_fee,
    IFNULL(usage.amount_in_pricing_units, 0) AS units,
    cost + IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c{credit_filter}), 0) AS net_cost,
    {_credit_sum(f"= '{_DOLLAR_CUD}'", counted)} AS dollar_credit,
    {_credit_sum(f"IN ('{_CUD}', '{_DOLLAR_CUD}')")} AS covered_credit,
    IF({_FEE_SKU}, {_COMMITMENT_ID}, NULL) AS fee_id,
    credits, GREATEST(IFNULL(ARRAY_LENGTH(credits), 0), 1) AS parts,
    {_MATCH_KEY} AS match_key,
    consumption_model.id IS NOT NULL AS in_model,
    {_NETWORK_SKU} AS is_network,
    IF({_CORE_SKU}, usage.amount, 0) AS core_seconds{row_tags}
  FROM {table}
  WHERE _PARTITIONTIME >= @partition_start
    AND usage_start_time >= @start AND usage_start_time < @end
    AND cost_type = 'regular'
    AND ((resource.name IN UNNEST(@vms)
          AND resource.global_name LIKE '%/zones/%/instances/%'
          AND (service.description = 'Compute Engine'
               OR (service.description = 'Networking' AND {_NETWORK_SKU})))
         OR (service.description = 'Compute Engine' AND {_FEE_SKU}))
),
exploded AS (
  -- one row per credit (one for a row without): each CUD credit is priced at its own commitment, the
  -- row's own amounts split evenly over its credits' rows so that their sums stay the row's
  SELECT
    b.project_id, b.zone, b.vm, b.global_name, b.usage_start_time, b.usage_end_time, b.currency,
    b.is_fee, b.match_key, b.in_model, b.is_network{tag_columns},
    b.cost / b.parts AS cost, b.units / b.parts AS units, b.net_cost / b.parts AS net_cost,
    b.dollar_credit / b.parts AS dollar_credit, b.covered_credit / b.parts AS covered_credit,
    b.core_seconds / b.parts AS core_seconds,
    IF(cc.type = '{_CUD}'{counted_cc}, -cc.amount, 0) AS cud_credit,
    IF(b.is_fee, b.fee_id, IF(cc.type = '{_CUD}', cc.id, NULL)) AS commitment_id
  FROM billed AS b LEFT JOIN UNNEST(b.credits) AS cc
),
priced AS (
  SELECT *,
    IFNULL(
      SUM(IF(is_fee, cost, 0)) OVER (PARTITION BY commitment_id)
        / NULLIF(SUM(IF(is_fee, units, 0)) OVER (PARTITION BY commitment_id), 0),
      IF(match_key IS NULL, NULL,
         SUM(IF(is_fee, cost, 0)) OVER (PARTITION BY match_key)
           / NULLIF(SUM(IF(is_fee, units, 0)) OVER (PARTITION BY match_key), 0))
    ) AS commitment_price
  FROM exploded
),
effective AS (
  SELECT *,
    net_cost
      + cud_credit * IFNULL(commitment_price * units / NULLIF(cost, 0), 0)
      + dollar_credit * (1 - @spend_discount) AS effective_cost,
    IF(cud_credit > 0 AND (commitment_price IS NULL OR cost = 0), cud_credit, 0) AS unpriced_cud,
    IF(in_model, cost / (1 - @spend_discount), cost) AS on_demand_value,
    IF(in_model, cost / (1 - @spend_discount), LEAST(covered_credit, cost)) AS covered_value
  FROM priced
  WHERE NOT is_fee
),
hourly AS (
  SELECT
    project_id, zone, vm, global_name, usage_start_time,
    SUM(IF(is_network, 0, effective_cost)) AS cost,
    SUM(IF(is_network, net_cost, 0)) AS network_cost,
    SUM(IF(is_network, 0, on_demand_value)) AS on_demand_value,
    SUM(IF(is_network, 0, covered_value)) AS covered_value,
    SUM(IF(is_network, 0, unpriced_cud)) AS unpriced_cud,
    SUM(core_seconds) AS core_seconds,
    MAX(usage_end_time) AS usage_end,
    MAX(currency) AS currency{slot_tags}
  FROM effective
  GROUP BY project_id, zone, vm, global_name, usage_start_time
),
sized AS (
  SELECT *, MAX(core_seconds) OVER (PARTITION BY global_name) AS full_hour_seconds
  FROM hourly
)
SELECT
  project_id, zone, vm,
  DATE(usage_start_time) AS usage_day,
  SUM(cost) AS cost,
  SUM(IF(full_hour_seconds > 0, core_seconds / full_hour_seconds, 0)) AS hours,
  SUM(IF(full_hour_seconds > 0, core_seconds / full_hour_seconds, 0))
    * IFNULL(SUM(covered_value) / NULLIF(SUM(on_demand_value), 0), 0) AS covered_hours,
  SUM(unpriced_cud) AS unpriced_cud,
  SUM(network_cost) AS network_cost,
  MAX(usage_end) AS usage_end,
  MAX(currency) AS currency{day_tags}
FROM sized
GROUP BY project_id, zone, vm, usage_day"""


def commitments_query(settings: GcpBigQuerySettings) -> str:
    """The commitments query of a refresh: the account's commitment fee rows and CUD-credited Compute Engine
    usage in the window, summed per usage hour and commitment (fees) or match key and credit id (usage), so
    that `GcpBigQueryBilling.commitment_days` can match them; one scan, a few rows per commitment and hour.
    `kind`: 'resource' (credit-model fee), 'dollar' (legacy spend-based fee), 'flexible' (new-model fee),
    'usage' (credited usage; `covered_units` its covered quantity in pricing units, `on_nodes` whether a
    cluster VM's)."""
    table = f"`{settings.project}.{settings.dataset}.{settings.table}`"
    flex_ids = ", ".join(f"'{i}'" for i in _FLEX_FEE_SKU_IDS)
    offset = _credit_sum("= 'FEE_UTILIZATION_OFFSET'")
    return f"""WITH billed AS (
  SELECT
    TIMESTAMP_TRUNC(usage_start_time, HOUR) AS hour,
    CASE
      WHEN service.description = 'Compute Engine' AND {_FEE_SKU} THEN 'resource'
      WHEN sku.description LIKE 'Commitment - dollar based v1: GCE%' THEN 'dollar'
      WHEN sku.id IN ({flex_ids}) OR {offset} > 0 THEN 'flexible'
      ELSE 'usage'
    END AS kind,
    {_COMMITMENT_ID} AS fee_id,
    {_MATCH_KEY} AS match_key,
    location.region AS region,
    cost,
    IFNULL(usage.amount_in_pricing_units, 0) AS units,
    {_credit_sum(f"= '{_CUD}'")} AS cud_credit,
    {_credit_sum(f"= '{_DOLLAR_CUD}'")} AS dollar_credit,
    {offset} AS offset_credit,
    service.description = 'Compute Engine' AS compute,
    IFNULL(resource.name IN UNNEST(@vms) AND resource.global_name LIKE '%/zones/%/instances/%', FALSE)
      AS on_node,
    credits, GREATEST(IFNULL(ARRAY_LENGTH(credits), 0), 1) AS parts
  FROM {table}
  WHERE _PARTITIONTIME >= @partition_start
    AND usage_start_time >= @start AND usage_start_time < @end
    AND cost_type = 'regular'
),
exploded AS (
  -- one row per credit (one for a row without), the row's own amounts split evenly over them
  SELECT
    b.hour, b.kind, b.match_key, b.region, b.on_node,
    IF(b.kind = 'usage', NULL, b.fee_id) AS commitment,
    IF(b.kind = 'usage' AND cc.type = '{_CUD}', cc.id, NULL) AS credit_id,
    IF(b.kind = 'usage', 0, b.cost) / b.parts AS fee,
    IF(b.kind = 'usage', 0, b.units) / b.parts AS quantity,
    IF(b.kind = 'usage' AND cc.type = '{_CUD}' AND b.cost > 0, -cc.amount * b.units / b.cost, 0)
      AS covered_units,
    IF(b.kind = 'usage', b.dollar_credit, 0) / b.parts AS dollar_credit,
    b.offset_credit / b.parts AS offset_credit
  FROM billed AS b LEFT JOIN UNNEST(b.credits) AS cc
  WHERE b.kind <> 'usage' OR (b.compute AND (b.cud_credit > 0 OR b.dollar_credit > 0))
)
SELECT
  hour, kind, commitment, credit_id, match_key, region,
  SUM(fee) AS fee,
  SUM(quantity) AS quantity,
  SUM(covered_units) AS covered_units,
  SUM(dollar_credit) AS dollar_credit,
  SUM(offset_credit) AS offset_credit,
  LOGICAL_OR(on_node) AS on_nodes
FROM exploded
GROUP BY hour, kind, commitment, credit_id, match_key, region"""


@dataclass(frozen=True, slots=True)
class _Group:
    """One row of `commitments_query`."""

    hour: datetime
    kind: str
    commitment: str | None
    credit_id: str | None
    match_key: str | None
    region: str | None
    fee: float
    quantity: float
    covered_units: float
    dollar_credit: float
    offset_credit: float
    on_nodes: bool

    @classmethod
    def of(cls, raw: Any) -> _Group:
        def number(name: str) -> float:
            return float(raw[name] or 0)

        return cls(
            raw["hour"],
            str(raw["kind"]),
            raw["commitment"],
            raw["credit_id"],
            raw["match_key"],
            raw["region"],
            number("fee"),
            number("quantity"),
            number("covered_units"),
            number("dollar_credit"),
            number("offset_credit"),
            bool(raw["on_nodes"]),
        )


@dataclass(frozen=True, slots=True)
class CommitmentUsage:
    days: list[CommitmentDay]
    unmatched: set[str]  # credit-model commitments none of whose credits is on a cluster node


def commitment_usage(groups: Sequence[_Group], spend_discount: float) -> CommitmentUsage:
    """Each commitment's fee and used part per UTC day, from the commitments query's hourly groups.

    Credit model: a commitment's unit price is Σ fee ÷ Σ committed quantity of its fee rows in the window; a
    credited usage group's covered quantity goes to the commitment its credit id names, else to the
    commitments of its match key that hour (pro rata by committed quantity), at that commitment's price;
    legacy DOLLAR_BASE credits go to the region's dollar-based commitments that hour (pro rata by fee), at
    |credit| x (1 - spend_discount). Per hour, used = min(that, fee). New model: used = -Σ
    FEE_UTILIZATION_OFFSET credits of the fee rows."""
    fee: dict[tuple[str, datetime], float] = defaultdict(float)
    used: dict[tuple[str, datetime], float] = defaultdict(float)
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    pools: dict[tuple[str, str, datetime], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    credited: set[str] = set()
    for g in groups:
        if g.kind == "usage" or not g.commitment:
            continue
        fee[g.commitment, g.hour] += g.fee
        if g.kind == "flexible":
            used[g.commitment, g.hour] += g.offset_credit
            continue
        credited.add(g.commitment)
        totals[g.commitment][0] += g.fee
        totals[g.commitment][1] += g.quantity
        if g.kind == "resource" and g.match_key:
            pools["resource", g.match_key, g.hour][g.commitment] += g.quantity
        elif g.kind == "dollar" and g.region:
            pools["dollar", g.region, g.hour][g.commitment] += g.fee
    price = {c: cost / quantity for c, (cost, quantity) in totals.items() if quantity > 0}
    matched: set[str] = set()

    def spread(g: _Group, pool: dict[str, float], amount: float, unit_price: dict[str, float] | None) -> None:
        """Spread `amount` (a quantity at `unit_price`, or dollars) over the pool's commitments."""
        weight = sum(pool.values())
        for commitment, share in pool.items():
            if weight > 0:
                rate = 1.0 if unit_price is None else unit_price.get(commitment, 0.0)
                used[commitment, g.hour] += amount * rate * share / weight
                if g.on_nodes:
                    matched.add(commitment)

    for g in groups:
        if g.kind != "usage":
            continue
        if g.covered_units > 0:
            if g.credit_id in price:  # the credit names its commitment
                pool = {g.credit_id: 1.0}
            else:
                pool = pools.get(("resource", g.match_key or "", g.hour), {})
            spread(g, pool, g.covered_units, price)
        if g.dollar_credit > 0:
            pool = pools.get(("dollar", g.region or "", g.hour), {})
            spread(g, pool, g.dollar_credit * (1 - spend_discount), None)
    per_day: dict[tuple[str, date], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for (commitment, hour), paid in fee.items():
        entry = per_day[commitment, hour.date()]
        entry[0] += paid
        entry[1] += min(used.get((commitment, hour), 0.0), paid)
    days = [CommitmentDay(c, day, paid, use) for (c, day), (paid, use) in sorted(per_day.items())]
    return CommitmentUsage(days, credited - matched)


def deadline_session(credentials: Any, seconds: float, verify: str | None = None) -> Any:
    """An authorized HTTP session whose calls never wait longer than `seconds`, its token refreshes
    included, all verifying with `verify` (tls.ca_file's bundle) when set.

    google-cloud-bigquery raises the timeout of every jobs.getQueryResults call to at least 120 s, whatever
    the caller asks, and google-auth gives a token refresh 120 s: a hung BigQuery or token endpoint would
    hold a refresh for minutes past timeout_seconds. Capping at the session keeps one budget for all.
    """
    from google.auth.transport.requests import AuthorizedSession, Request

    def cap(timeout: Any) -> Any:
        if isinstance(timeout, tuple):
            return tuple(seconds if t is None else min(float(t), seconds) for t in timeout)
        return seconds if timeout is None else min(float(timeout), seconds)

    class DeadlineRequest(Request):  # token refreshes
        def __call__(
            self,
            url: str,
            method: str = "GET",
            body: Any = None,
            headers: Any = None,
            timeout: Any = None,
            **kwargs: Any,
        ) -> Any:
            return super().__call__(url, method, body, headers, cap(timeout), **kwargs)  # type: ignore[no-untyped-call]

    class DeadlineSession(AuthorizedSession):  # BigQuery API calls
        def request(  # type: ignore[override]
            self,
            method: str,
            url: str,
            data: Any = None,
            headers: Any = None,
            max_allowed_time: Any = None,
            timeout: Any = None,
            **kwargs: Any,
        ) -> Any:
            return super().request(  # type: ignore[no-untyped-call]
                method, url, data, headers, max_allowed_time, cap(timeout), **kwargs
            )

    import requests

    refresh = DeadlineRequest(trusting(requests.Session(), verify))
    session = DeadlineSession(  # type: ignore[no-untyped-call]
        credentials, refresh_timeout=seconds, auth_request=refresh
    )
    return trusting(session, verify)


@register(
    "gcp.bigquery",
    settings=GcpBigQuerySettings,
    extra="gcp",
    sdk=("google.cloud.bigquery", "google.auth", "google.api_core"),
)
class GcpBigQueryBilling(BillingSource[GcpBigQuerySettings]):
    name = "gcp_bigquery"
    provider = "gcp"
    resource_kind = "Compute Engine VM"
    reports_coverage = True
    reports_commitments = True

    def __init__(self, settings: GcpBigQuerySettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self._verify = context.sdk_verify()
        self._client: bigquery.Client | None = None
        self._vms: list[str] = []  # the VM names of the last node query, for the commitments query
        self._idle: set[str] = set()  # commitments logged as used by no cluster node
        self._unpriced: set[str] = set()  # VMs logged with a CUD credit no commitment fee prices

    def resource(self, node: Node) -> str | None:
        ref = node.ref
        if node.provider != "gcp" or not (ref.account and ref.zone and ref.instance_id):
            return None
        return f"{ref.account}/{ref.zone}/{ref.instance_id}"

    def where(self) -> str:
        return f"BigQuery table {self.settings.project}.{self.settings.dataset}.{self.settings.table}"

    def _bigquery(self) -> bigquery.Client:
        import google.auth
        from google.api_core.client_options import ClientOptions
        from google.auth.exceptions import DefaultCredentialsError
        from google.cloud import bigquery

        if self._client is None:
            options = (
                ClientOptions(api_endpoint=self.settings.endpoint_url) if self.settings.endpoint_url else None
            )
            try:
                credentials, _ = google.auth.default(scopes=bigquery.Client.SCOPE)
            except DefaultCredentialsError as err:
                raise FetchError(
                    Reason.AUTH,
                    "no Google credentials: give the pod a Workload Identity bound to a service account "
                    f"with {_ROLES} (or set GOOGLE_APPLICATION_CREDENTIALS) ({err})",
                ) from err
            self._client = bigquery.Client(
                project=self.settings.job_project or self.settings.project,
                credentials=credentials,
                location=self.settings.location or None,
                client_options=options,
                # the client's documented HTTP-object parameter: a session whose every call, token
                # refreshes included, ends by timeout_seconds (see `deadline_session`)
                _http=deadline_session(credentials, self.settings.timeout_seconds, self._verify),
            )
        return self._client

    def query(self, resources: Sequence[str], start: datetime, end: datetime) -> Iterator[BillRow]:
        from google.cloud import bigquery

        self._vms = sorted({r.rsplit("/", 1)[-1] for r in resources})
        params: list[Any] = [
            *self._window(start, end),
            bigquery.ScalarQueryParameter(
                "spend_discount", "FLOAT64", self.settings.spend_based_cud_discount
            ),
        ]
        if self.settings.credit_types:
            params.append(
                bigquery.ArrayQueryParameter("credit_types", "STRING", list(self.settings.credit_types))
            )
        params += [
            bigquery.ScalarQueryParameter(f"tag_{i}", "STRING", k) for i, k in enumerate(self.settings.tags)
        ]
        for raw in self._run(bigquery_query(self.settings), params):
            row = self._row(raw)
            if row is not None:
                yield row

    def commitment_days(self, start: datetime, end: datetime) -> Iterator[CommitmentDay]:
        """Each commitment's fee and used part per UTC day, from `commitments_query` (a second query per
        refresh, billed like the first: the same partitions, the whole account's rows of the window)."""
        rows = self._run(commitments_query(self.settings), self._window(start, end))
        groups = [_Group.of(raw) for raw in rows]
        days = commitment_usage(groups, self.settings.spend_based_cud_discount)
        for commitment in sorted(days.unmatched - self._idle):
            self.log.info(
                "commitment %s: its fee is billed but none of its credits is on a cluster node's VM "
                "(other workloads may use it)",
                commitment,
            )
        self._idle |= days.unmatched
        yield from days.days

    def _window(self, start: datetime, end: datetime) -> list[Any]:
        from google.cloud import bigquery

        return [
            # the export days to read: from the window's first day less one, onwards (bigquery_query)
            bigquery.ScalarQueryParameter("partition_start", "TIMESTAMP", start - timedelta(days=1)),
            bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
            bigquery.ScalarQueryParameter("end", "TIMESTAMP", end),
            bigquery.ArrayQueryParameter("vms", "STRING", self._vms),
        ]

    def _run(self, sql: str, params: list[Any]) -> Iterator[Any]:
        """The rows of one query job, page by page, its failures as FetchErrors."""
        import requests
        from google.api_core import exceptions as google_errors
        from google.auth.exceptions import RefreshError, TransportError
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=params, labels={"app": "node-cost-exporter"}, use_query_cache=True
        )
        # One retry layer, ours (the Fetcher: its backoff, its retry count): the client's DEFAULT_RETRY and
        # DEFAULT_JOB_RETRY would retry rate limits, 5xx and connection errors for up to 10 minutes (20 for
        # a job) before a failure reached us. timeout_seconds bounds each API call (the client raises a
        # jobs.getQueryResults call's to at least 120 s) and the wait for the job.
        timeout = self.settings.timeout_seconds
        try:
            job = self._bigquery().query(
                sql,
                job_config=config,
                retry=None,  # type: ignore[arg-type]  # annotated Retry; None is documented to disable it
                job_retry=None,
                timeout=timeout,
            )
            rows = job.result(page_size=10_000, timeout=timeout, retry=None, job_retry=None)
            self.scanned_bytes += int(job.total_bytes_billed or 0)
            tokens: set[str] = set()
            for page in rows.pages:  # page by page: the client would follow a repeated pageToken forever
                yield from page
                token = rows.next_page_token
                if token in tokens:
                    raise FetchError(Reason.BAD_RESPONSE, "BigQuery repeated a pageToken; stopped paging")
                if token:
                    tokens.add(token)
        except google_errors.GoogleAPICallError as err:
            raise self._error(err) from err
        except RefreshError as err:
            raise FetchError(Reason.AUTH, f"Google credentials could not be refreshed: {err}") from err
        except TransportError as err:  # the token endpoint could not be reached
            if untrusted_certificate(err):
                raise untrusted_tls_error("the Google token endpoint") from err
            raise FetchError(Reason.UNAVAILABLE, f"cannot reach the Google token endpoint: {err}") from err
        except (TimeoutError, requests.Timeout, google_errors.RetryError) as err:
            raise FetchError(
                Reason.TIMEOUT,
                f"BigQuery did not answer or finish the job within {timeout:g}s "
                "(raise gcp.bigquery.timeout_seconds)",
            ) from err
        except requests.JSONDecodeError as err:  # an OSError too: before the clause below
            raise FetchError(Reason.BAD_RESPONSE, f"unreadable answer from BigQuery: {err}") from err
        except OSError as err:  # requests' connection errors are OSErrors
            if untrusted_certificate(err):
                raise untrusted_tls_error(self.settings.endpoint_url or "bigquery.googleapis.com") from err
            raise FetchError(
                Reason.UNAVAILABLE, f"cannot reach BigQuery ({type(err).__name__}: {err})"
            ) from err

    def _row(self, raw: Any) -> BillRow | None:
        key = f"{raw.get('project_id')}/{raw.get('zone')}/{raw.get('vm')}"
        try:
            day, end = raw["usage_day"], raw["usage_end"]
            if not isinstance(day, date) or not isinstance(end, datetime):
                raise TypeError(f"usage_day {day!r} / usage_end {end!r}")
            tags = tuple((k, str(v)) for i, k in enumerate(self.settings.tags) if (v := raw.get(f"tag_{i}")))
            unpriced = float(raw["unpriced_cud"] or 0)
            if unpriced > 0 and key not in self._unpriced:
                self._unpriced.add(key)
                self.log.warning(
                    "%s: %.4g of committed use discount credits on %s match no commitment fee row of the "
                    "window; counted as billed (the node may look cheaper than its commitment)",
                    key,
                    unpriced,
                    day,
                )
            return BillRow(
                key,
                day,
                end if end.tzinfo else end.replace(tzinfo=UTC),
                float(raw["cost"] or 0),
                float(raw["hours"] or 0),
                0.0,  # `cost` is after the negotiated price: the configured discount never applies on top
                float(raw["network_cost"] or 0),
                str(raw["currency"] or ""),
                tags,
                float(raw["covered_hours"] or 0),
            )
        except (KeyError, ValueError, TypeError) as err:
            self.invalid_row(key, f"unreadable billing export row: {err}")
            return None

    def _error(self, err: google_errors.GoogleAPICallError) -> FetchError:
        from google.api_core import exceptions as google_errors

        said = str(getattr(err, "message", "") or err)[:400]
        reasons = {
            str(e.get("reason", "")) for e in (getattr(err, "errors", None) or []) if isinstance(e, dict)
        }
        if reasons & {"rateLimitExceeded", "quotaExceeded"} or isinstance(err, google_errors.TooManyRequests):
            return FetchError(Reason.THROTTLED, f"BigQuery throttled the query: {said}")
        if isinstance(err, google_errors.Unauthorized):
            return FetchError(Reason.AUTH, f"BigQuery rejected the credentials: {said}")
        if isinstance(err, google_errors.Forbidden):
            return FetchError(Reason.PERMISSION, f"BigQuery denied the query: {said}; grant {_ROLES}")
        if isinstance(err, google_errors.NotFound):
            return FetchError(
                Reason.NOT_FOUND,
                f"{said} (check gcp.bigquery.project, dataset and table: the detailed export is "
                "gcp_billing_export_resource_v1_<BILLING_ACCOUNT>)",
            )
        if isinstance(err, google_errors.BadRequest):
            return FetchError(Reason.CONFIG, f"BigQuery refused the query: {said}")
        if isinstance(err, google_errors.ServerError):
            return FetchError(Reason.UNAVAILABLE, f"BigQuery failed: {said}")
        return FetchError(reason_for_status(int(err.code or 0)), f"BigQuery: {said}")  # e.g. a proxy's 408
