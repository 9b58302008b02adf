"""A local fake of the Azure Cost Management Query API
(`POST {scope}/providers/Microsoft.CostManagement/query`), served over HTTPS so the real
`azure-mgmt-costmanagement` client (whose bearer-token policy refuses plain http) talks to it unchanged.

What it models, because a cost source depends on each of these:
- ARM bearer auth: `Authorization: Bearer <token>` must equal the configured token, else 401 with ARM's
  `{"error":{"code","message"}}` body and a `WWW-Authenticate: Bearer ...` challenge (no `claims`, so the
  SDK's CAE handling gives up and returns the 401: `ClientAuthenticationError`);
- `api-version` required and checked against the versions the service publishes;
- scopes: whatever the SDK puts before `/providers/Microsoft.CostManagement/query` (leading/trailing slashes
  stripped, compared case-insensitively with `scopes`; unknown → 404 `SubscriptionNotFound` /
  `ResourceGroupNotFound` / `NotFound`). A `subscriptions/...` scope, resource group scopes included (the AKS
  node resource group `MC_...` too), sees only records whose resource id lies under it, case-insensitively;
  any other scope (billing account, management group) sees every record. Every scope queried, resource
  groups included, must itself be in `scopes`;
- the query body: `type` ActualCost | AmortizedCost (picks `UsageRecord.actual_cost` / `amortized_cost`);
  `timeframe` Custom (`timePeriod.from`/`to`, ISO datetimes, whole days, both ends inclusive), MonthToDate,
  TheLastMonth, TheCurrentMonth (and BillingMonthToDate / TheLastBillingMonth as calendar months) relative
  to `today`; `dataset.granularity` Daily (`UsageDate` Number column, 20240601), Monthly (`BillingMonth`
  Datetime column, "2024-06-01T00:00:00") or None/absent (no date column); `dataset.aggregation` up to two
  `{alias: {"name": "Cost"|"PreTaxCost"|"UsageQuantity", "function": "Sum"}}` (UsageQuantity sums
  `UsageRecord.quantity`, in the meter's unit: hours for Virtual Machines, GB for Bandwidth; the same in
  both cost types); `dataset.grouping` up to two Dimensions;
  `dataset.filter` trees of `and`/`or` (at least two items each, as the spec says) over `dimensions` and
  `tags` comparisons with operator `In`. JSON keys are matched case-insensitively, as ARM's deserializer does;
- the response as the service shapes it (see the published BillingAccountQuery example and a real
  response quoted in Azure/azure-sdk-for-go#3765): columns in the order aggregations, date, groupings,
  `Currency`; **an aggregated column is named after the column it aggregates (`name`), not after the
  alias** (alias "totalCost" with name "PreTaxCost" yields a "PreTaxCost" column, "totalQuantity" with
  name "UsageQuantity" a "UsageQuantity" column; with no aggregation the column is "PreTaxCost", as in
  the published example); rows summed per (date, grouping values, currency) with `math.fsum`, zero-cost
  rows kept, costs and quantities as JSON numbers, ResourceId values lower-cased as the service
  returns them (ResourceGroupName values keep the record's case); rows sorted by date then grouping
  values (the real order is unspecified);
- paging: more rows than `page_size` → `properties.nextLink` =
  `{url}/{scope}/providers/Microsoft.CostManagement/query?api-version=...&$skiptoken=<url-quoted base64>`, to
  be POSTed with the same body (the fake refuses a skiptoken presented with a different body: 400). Each page
  re-runs the query on the current `records`;
- throttling as Cost Management really does it: 429 with `x-ms-ratelimit-microsoft.costmanagement-
  {qpu,entity,tenant}-retry-after` (seconds) and `...-qpu-remaining`, and no standard Retry-After; 200s carry
  `...-qpu-consumed` / `...-qpu-remaining` (static values, no QPU accounting);
- a `FakeServer`: generic faults (`inject`) in ARM's shapes, plus the older controls: `fail_next`
  (401/403/429/503/400 canned faults), `delay_seconds`, `no_content` (204 with no body, which the service
  sends when it has no data), `mangle` (rewrite the result rows), `today`; every request is recorded
  (`requests`, and as dicts in `calls`).

Use from the SDK (see tests/test_cost_management_fake.py):
    client = CostManagementClient(StaticToken(fake.token), base_url=fake.url, retry_total=0,
                                  connection_verify=fake.ca_file)      # or fake.client()
    result = client.query.usage(scope, definition)                     # QueryResult, or None on a 204
    response = client.send_request(HttpRequest("POST", result.next_link, json=definition.as_dict()))
    page = QueryResult(response.json())                                # after response.raise_for_status()
`connection_verify` (a CA file path) reaches requests' `verify` through azure-core's ConnectionConfiguration;
`retry_total=0` keeps azure-core from retrying (by default it retries a POST only on 500/503/504, or when a
standard Retry-After header is present, so a Cost Management 429 is never retried by the SDK itself).

Where each shape comes from:
- request body, `properties.columns`/`rows`, `nextLink`, the `UsageDate` number (20180331) and the
  no-aggregation "PreTaxCost" column: the published example `BillingAccountQuery.json`
  (Azure/azure-rest-api-specs, specification/cost-management/.../stable/2023-03-01/examples/; a copy is
  /work/shared/fixtures/real/azure_pricing/cost_management_query_BillingAccountQuery.example.json), and the
  QueryDefinition/QueryAggregation/QueryGrouping models of the same spec (at most two groupings, `Sum`);
- the `UsageQuantity` aggregation and what a quantity means: the Query API's QueryAggregation `name`
  (the column to aggregate) over the usage details' `Quantity`; AKS scale-set rows of the `Virtual
  Machines` meter category, one per scale set ResourceId with `AdditionalInfo.UsageType` "ComputeHR", and
  `Bandwidth` rows on the same ResourceId, as in opencost's cost-export template (a copy is
  /work/shared/fixtures/real/billing/azure_cost_export_template_aks_vmss.csv; that export has no quantity
  column, so the hour unit of the VM meters comes from the Retail Prices API's `unitOfMeasure` "1 Hour");
- the 429 headers: learn.microsoft.com, "Cost Management API latency and rate limits"; ARM error bodies:
  the ErrorResponse shared by every ARM API.

- commitments: the `ChargeType` dimension (Usage, UnusedReservation, UnusedSavingsPlan, Purchase, Refund),
  `ReservationId`/`ReservationName` and `BenefitId`/`BenefitName` (the usage-details fields of the
  purchased reservation and savings plan: learn.microsoft.com, "Understand the terms in your Azure usage
  and charges file"; the same names are Query API grouping dimensions). Unused* rows exist only in the
  AmortizedCost view and carry no resource ("View amortized benefit costs": a reservation's unused part of
  a day is a charge of type UnusedReservation, "Unused reservation costs can be seen only when viewing
  amortized cost"; the savings-plan charge-back article the same for UnusedSavingsPlan); the fake shows
  them at their subscription's scope and wider, never at a resource group's. Purchase and Refund rows are
  ActualCost only (the amortized view spreads a purchase over the term). The CSV exports under
  /work/shared/fixtures/real/billing/ show none of these columns (they are pay-as-you-go and template
  exports), so the docs above are the only source for these shapes;

Not modelled: TagKey grouping, UnitOfMeasure (a quantity is summed as given), dimensions other than those
in `DIMENSIONS`, sorting, `configuration.columns`, the QPU budget itself, query range limits, the legacy `Usage` type (real service: ≈ ActualCost; here 400).
Error messages for body validation are "Invalid query definition: ..." (code BadRequest); the exact wording
of the service's messages for each case is not published.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from azure.core.credentials import AccessToken

from fakes.server import Answer, FakeServer, Fault, Request, header_seconds, self_signed_cert

if TYPE_CHECKING:
    from azure.mgmt.costmanagement import CostManagementClient

API_VERSION = "2025-03-01"  # what azure-mgmt-costmanagement 5.0.0 sends
API_VERSIONS = (  # published stable and preview versions of Microsoft.CostManagement that have the query API
    "2025-03-01",
    "2024-08-01",
    "2023-11-01",
    "2023-09-01",
    "2023-08-01",
    "2023-07-01-preview",
    "2023-04-01-preview",
    "2023-03-01",
    "2022-10-01",
    "2021-10-01",
    "2019-11-01",
)
QUERY_SUFFIX = "/providers/microsoft.costmanagement/query"
TENANT_ID = "72f988bf-0000-4000-8000-00000000fa4e"  # made up, stable
CLIENT_OBJECT_ID = "0b1f6a3c-5d7e-4f80-9a1b-2c3d4e5f6a7b"  # the object id a 403 names; made up, stable
PRICING_MODELS = ("OnDemand", "Reservation", "SavingsPlan", "Spot")
COST_COLUMNS = ("Cost", "PreTaxCost")  # cost columns, both in the billing currency
QUANTITY_COLUMN = "UsageQuantity"  # the usage quantity, in each meter's unit
AGGREGATABLE = (*COST_COLUMNS, QUANTITY_COLUMN)
MAX_GROUPINGS = 2
MAX_AGGREGATIONS = 2
QPU = "x-ms-ratelimit-microsoft.costmanagement"
FAULTS = ("unauthenticated", "forbidden", "throttled", "unavailable", "bad_request")

JSONObj = dict[str, Any]
Rows = list[list[Any]]


@dataclass(frozen=True)
class UsageRecord:
    """One day of one resource at one pricing model: the fake's ground truth.

    A commitment's unused part is a record with `resource_id` "" (no resource, no resource group), the
    `subscription` it is billed to, `charge_type` UnusedReservation / UnusedSavingsPlan and its
    reservation or benefit id: visible at that subscription's scope or wider, never at a resource group's.
    """

    date: datetime.date
    resource_id: str  # "/subscriptions/<sub>/resourceGroups/MC_rg_aks_eastus/providers/Microsoft.Compute/..."
    pricing_model: str  # "OnDemand" | "Reservation" | "SavingsPlan" | "Spot"
    amortized_cost: float
    actual_cost: float  # ActualCost view: a reservation purchase is a lump on its day, covered usage is 0
    meter_category: str = "Virtual Machines"
    quantity: float = 0.0  # UsageQuantity: instance-hours for Virtual Machines meters, GB for Bandwidth
    resource_group: str = ""  # derived from resource_id when empty
    currency: str = "USD"
    tags: dict[str, str] = field(default_factory=dict)
    charge_type: str = "Usage"  # | "UnusedReservation" | "UnusedSavingsPlan" | "Purchase" | "Refund"
    reservation_id: str = ""  # /providers/Microsoft.Capacity/reservationOrders/<o>/reservations/<r>
    reservation_name: str = ""
    benefit_id: str = ""  # /providers/Microsoft.BillingBenefits/savingsPlanOrders/<o>/savingsPlans/<p>
    benefit_name: str = ""
    subscription: str = ""  # derived from resource_id when empty

    def __post_init__(self) -> None:
        if not self.resource_group:
            object.__setattr__(self, "resource_group", _id_part(self.resource_id, "resourcegroups"))
        if not self.subscription:
            object.__setattr__(self, "subscription", _id_part(self.resource_id, "subscriptions"))

    def in_view(self, cost_field: str) -> bool:
        """Unused* rows exist only in AmortizedCost, Purchase and Refund rows only in ActualCost (the
        amortized view spreads them over the term instead)."""
        if cost_field == "actual_cost":
            return not self.charge_type.startswith("Unused")
        return self.charge_type not in ("Purchase", "Refund")


def _id_part(resource_id: str, key: str) -> str:
    """The segment after `key` (case-insensitive) in an ARM id, or ""."""
    parts = resource_id.strip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() == key:
            return parts[i + 1]
    return ""


def _resource_type(resource_id: str) -> str:
    """`microsoft.compute/virtualmachinescalesets`, lower-cased as the service reports it."""
    parts = resource_id.strip("/").split("/")
    lowered = [p.lower() for p in parts]
    if "providers" not in lowered:
        return ""
    i = len(lowered) - 1 - lowered[::-1].index("providers")
    namespace, rest = parts[i + 1 : i + 2], parts[i + 2 :]
    return "/".join(namespace + rest[0::2]).lower()


# Dimensions the fake can group and filter by: column name, value of a record, compared case-insensitively.
DIMENSIONS: dict[str, tuple[str, Callable[[UsageRecord], str], bool]] = {
    "resourceid": ("ResourceId", lambda r: r.resource_id.lower(), True),
    "resourcegroupname": ("ResourceGroupName", lambda r: r.resource_group, True),
    "resourcegroup": ("ResourceGroup", lambda r: r.resource_group, True),
    "subscriptionid": ("SubscriptionId", lambda r: r.subscription.lower(), True),
    "resourcetype": ("ResourceType", lambda r: _resource_type(r.resource_id), True),
    "pricingmodel": ("PricingModel", lambda r: r.pricing_model, False),
    "metercategory": ("MeterCategory", lambda r: r.meter_category, False),
    "chargetype": ("ChargeType", lambda r: r.charge_type, False),
    "reservationid": ("ReservationId", lambda r: r.reservation_id, True),
    "reservationname": ("ReservationName", lambda r: r.reservation_name, True),
    "benefitid": ("BenefitId", lambda r: r.benefit_id, True),
    "benefitname": ("BenefitName", lambda r: r.benefit_name, True),
}


class StaticToken:
    """A TokenCredential (azure-core protocol) handing out one fixed bearer token; records scopes asked."""

    def __init__(self, token: str, *, lifetime_seconds: int = 3600) -> None:
        self.token = token
        self.lifetime_seconds = lifetime_seconds
        self.requests: list[tuple[str, ...]] = []

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        self.requests.append(scopes)
        return AccessToken(self.token, int(time.time()) + self.lifetime_seconds)


class QueryError(ValueError):
    """A request the service refuses: status, ARM error code, message."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def _invalid(detail: str) -> QueryError:
    return QueryError(400, "BadRequest", f"Invalid query definition: {detail}")


def _ci(obj: Any, what: str) -> dict[str, Any]:
    """A JSON object with lower-cased keys (ARM binds request JSON case-insensitively)."""
    if not isinstance(obj, dict):
        raise _invalid(f"'{what}' must be an object")
    return {str(k).lower(): v for k, v in obj.items()}


# -- the query ---------------------------------------------------------------------------------------------


Predicate = Callable[[UsageRecord], bool]


@dataclass
class _Query:
    cost_field: str  # "actual_cost" | "amortized_cost"
    first: datetime.date
    last: datetime.date
    granularity: str  # "daily" | "monthly" | "none"
    cost_columns: list[str]  # the aggregated columns in order: cost columns and UsageQuantity
    groupings: list[tuple[str, Callable[[UsageRecord], str]]]
    predicate: Predicate


def parse_query(body: Any, today: datetime.date) -> _Query:
    """Validate a query body as the service does; raise QueryError (400) for what it refuses."""
    top = _ci(body, "body")
    kind = str(top.get("type", ""))
    cost_field = {"actualcost": "actual_cost", "amortizedcost": "amortized_cost"}.get(kind.lower())
    if cost_field is None:
        raise _invalid(f"query type '{kind}' is not supported; use ActualCost or AmortizedCost")
    first, last = _period(top, today)
    if "dataset" not in top:
        raise _invalid("'dataset' is required")
    dataset = _ci(top["dataset"], "dataset")
    granularity = str(dataset.get("granularity") or "None").lower()
    if granularity not in ("daily", "monthly", "none"):
        raise _invalid(f"granularity '{dataset.get('granularity')}' is not valid; use Daily, Monthly or None")
    return _Query(
        cost_field=cost_field,
        first=first,
        last=last,
        granularity=granularity,
        cost_columns=_aggregations(dataset.get("aggregation")),
        groupings=_groupings(dataset.get("grouping")),
        predicate=_filter(dataset["filter"], "filter") if dataset.get("filter") is not None else _all,
    )


def _all(_record: UsageRecord) -> bool:
    return True


def _period(top: dict[str, Any], today: datetime.date) -> tuple[datetime.date, datetime.date]:
    timeframe = str(top.get("timeframe", "")).lower()
    month_start = today.replace(day=1)
    if timeframe == "custom":
        period = top.get("timeperiod")
        if period is None:
            raise _invalid("timePeriod is required when timeframe is Custom")
        period = _ci(period, "timePeriod")
        first, last = _date(period.get("from"), "from"), _date(period.get("to"), "to")
        if first > last:
            raise _invalid("timePeriod 'from' must not be after 'to'")
        return first, last
    if timeframe in ("monthtodate", "billingmonthtodate"):
        return month_start, today
    if timeframe in ("thelastmonth", "thelastbillingmonth"):
        last = month_start - datetime.timedelta(days=1)
        return last.replace(day=1), last
    if timeframe == "thecurrentmonth":
        next_month = (month_start + datetime.timedelta(days=32)).replace(day=1)
        return month_start, next_month - datetime.timedelta(days=1)
    raise _invalid(f"timeframe '{top.get('timeframe')}' is not supported")


def _date(value: Any, what: str) -> datetime.date:
    """The UTC day of an ISO 8601 date or datetime (naive means UTC)."""
    if not isinstance(value, str):
        raise _invalid(f"timePeriod '{what}' is required")
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(f"timePeriod '{what}' is not a valid date: {value!r}") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.UTC)
    return moment.date()


def _aggregations(raw: Any) -> list[str]:
    if raw is None or raw == {}:
        return ["PreTaxCost"]  # the published example: no aggregation asked, a PreTaxCost column returned
    if not isinstance(raw, dict):
        raise _invalid("'aggregation' must be an object of alias → {name, function}")
    if len(raw) > MAX_AGGREGATIONS:
        raise _invalid("Only two aggregations are allowed")
    columns = []
    for alias, spec in raw.items():
        agg = _ci(spec, f"aggregation.{alias}")
        name = str(agg.get("name", ""))
        canonical = next((c for c in AGGREGATABLE if c.lower() == name.lower()), None)
        if canonical is None:
            raise _invalid(
                f"aggregation '{alias}': column '{name}' is not valid; use Cost, PreTaxCost or UsageQuantity"
            )
        if str(agg.get("function", "")).lower() != "sum":
            raise _invalid(f"aggregation '{alias}': function '{agg.get('function')}' is not valid; use Sum")
        columns.append(canonical)
    return columns


def _groupings(raw: Any) -> list[tuple[str, Callable[[UsageRecord], str]]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid("'grouping' must be an array")
    if len(raw) > MAX_GROUPINGS:
        raise _invalid("Only two groupings are allowed")
    out = []
    for item in raw:
        grouping = _ci(item, "grouping")
        if str(grouping.get("type", "")).lower() != "dimension":
            raise _invalid(
                f"grouping type '{grouping.get('type')}' is not supported (the fake models Dimension)"
            )
        column, getter, _ = _dimension(grouping.get("name"))
        out.append((column, getter))
    return out


def _dimension(name: Any) -> tuple[str, Callable[[UsageRecord], str], bool]:
    found = DIMENSIONS.get(str(name).lower())
    if found is None:
        raise _invalid(f"dimension '{name}' is not valid")
    return found


def _filter(raw: Any, where: str) -> Predicate:
    node = _ci(raw, where)
    if len(node) != 1:
        raise _invalid(f"{where} must have exactly one of and, or, dimensions, tags")
    ((key, value),) = node.items()
    if key in ("and", "or"):
        if not isinstance(value, list) or len(value) < 2:
            raise _invalid(f"{where}.{key} must have at least 2 items")
        parts = [_filter(item, f"{where}.{key}[{i}]") for i, item in enumerate(value)]
        if key == "and":
            return lambda record: all(p(record) for p in parts)
        return lambda record: any(p(record) for p in parts)
    if key not in ("dimensions", "tags"):
        raise _invalid(f"{where}: unknown expression '{key}'")
    comparison = _ci(value, f"{where}.{key}")
    if str(comparison.get("operator", "")).lower() != "in":
        raise _invalid(f"{where}: operator '{comparison.get('operator')}' is not valid; use In")
    values = comparison.get("values")
    if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
        raise _invalid(f"{where}: 'values' must be a non-empty array of strings")
    if key == "tags":
        tag = str(comparison.get("name", "")).lower()  # tag names are case-insensitive in Azure
        wanted = set(values)

        def has_tag(record: UsageRecord) -> bool:
            return any(k.lower() == tag and v in wanted for k, v in record.tags.items())

        return has_tag
    _, getter, fold = _dimension(comparison.get("name"))
    if fold:
        folded = {v.lower() for v in values}
        return lambda record: getter(record).lower() in folded
    exact = set(values)
    return lambda record: getter(record) in exact


def run_query(query: _Query, records: Iterable[UsageRecord]) -> tuple[list[JSONObj], Rows]:
    """Columns and aggregated rows of a parsed query over the records a scope sees."""
    sums: dict[tuple[Any, ...], list[tuple[float, float]]] = {}
    for record in records:
        if not query.first <= record.date <= query.last or not record.in_view(query.cost_field):
            continue
        if not query.predicate(record):
            continue
        key = (
            _date_value(record.date, query.granularity),
            *(getter(record) for _, getter in query.groupings),
            record.currency,
        )
        sums.setdefault(key, []).append((getattr(record, query.cost_field), record.quantity))
    columns: list[JSONObj] = [{"name": c, "type": "Number"} for c in query.cost_columns]
    if query.granularity == "daily":
        columns.append({"name": "UsageDate", "type": "Number"})
    elif query.granularity == "monthly":
        columns.append({"name": "BillingMonth", "type": "Datetime"})
    columns += [{"name": name, "type": "String"} for name, _ in query.groupings]
    columns.append({"name": "Currency", "type": "String"})
    rows: Rows = []
    for key in sorted(sums, key=lambda k: tuple(str(part) for part in k)):
        date_value, *rest = key
        cost = math.fsum(c for c, _ in sums[key])
        quantity = math.fsum(q for _, q in sums[key])
        dated = [] if date_value is None else [date_value]
        totals = [quantity if c == QUANTITY_COLUMN else cost for c in query.cost_columns]
        rows.append(totals + dated + rest)
    return columns, rows


def _date_value(day: datetime.date, granularity: str) -> int | str | None:
    if granularity == "daily":
        return day.year * 10000 + day.month * 100 + day.day
    if granularity == "monthly":
        return f"{day.year:04d}-{day.month:02d}-01T00:00:00"
    return None


# -- server -------------------------------------------------------------------------------------------------


class FakeCostManagement(FakeServer):
    """The HTTPS server; use as a context manager (or start()/stop()). Mutate `records`, `scopes` and the
    controls between calls as needed."""

    def __init__(
        self,
        directory: Path,
        *,
        page_size: int = 1000,
        token: str = "good-token",
        tls: tuple[str, str] | None = None,  # (certificate, key) from another CA; default: self-signed
    ) -> None:
        if tls is None:
            tls_dir = Path(directory) / "cost-management-tls"
            tls_dir.mkdir(parents=True, exist_ok=True)
            tls = self_signed_cert(tls_dir)
        super().__init__(tls=tls)
        self.ca_file: str = tls[0]  # when self-signed for IP 127.0.0.1, the certificate is its own CA
        self.page_size = page_size
        self.token = token
        self._initial = (page_size, token)
        self.records: list[UsageRecord] = []
        self.scopes: set[str] = set()
        self.no_content = False
        self.mangle: Callable[[Rows], Rows] | None = None
        self.today: datetime.date | None = None  # "now" for MonthToDate etc.; None → today in UTC

    @property
    def calls(self) -> list[dict[str, Any]]:
        """Every request as a dict: method, path, query, body (parsed JSON), headers, status."""
        with self._lock:
            received = list(self.requests)
        return [
            {
                "method": r.method,
                "path": r.path,
                "query": r.query,
                "body": r.json() if r.json() is not None or not r.body else r.body.decode("utf-8", "replace"),
                "headers": r.headers,
                "status": r.status,
            }
            for r in received
        ]

    def client(self, credential: Any = None, **kwargs: Any) -> CostManagementClient:
        """The real SDK client pointed here: trusts `ca_file`, never retries by itself (kwargs override)."""
        from azure.mgmt.costmanagement import CostManagementClient

        options: dict[str, Any] = {"retry_total": 0, "connection_verify": self.ca_file}
        options.update(kwargs)
        return CostManagementClient(credential or StaticToken(self.token), base_url=self.url, **options)

    # -- controls -------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget records, scopes, calls and pending faults; put every control and the page size and token
        back as constructed (for a fake shared by several tests)."""
        with self._lock:
            self.records.clear()
            self.scopes.clear()
            self.requests.clear()
        self.clear_faults()
        self.page_size, self.token = self._initial
        self.delay_seconds = 0.0
        self.no_content = False
        self.mangle = None
        self.today = None

    def fail_next(self, error: str, count: int = 1, *, retry_after: float | None = None) -> None:
        """Answer the next `count` requests with a canned fault: "unauthenticated" (401), "forbidden" (403),
        "throttled" (429, Cost Management's retry-after headers: `retry_after` seconds, 60 when None),
        "unavailable" (503, a standard Retry-After when `retry_after` is given) or "bad_request" (400).
        A canned fault answers whatever the token, scope and body (the request is still recorded)."""
        if error == "bad_request":
            body = _error_body("BadRequest", "Invalid query definition: rejected by the fake.")
            self.enqueue(Answer.json(400, body, content_type=_JSON), count)
            return
        if error == "unavailable":
            headers = {} if retry_after is None else {"Retry-After": header_seconds(retry_after)}
            self.enqueue(lambda request: self._unavailable(headers), count)
            return
        fault = {"unauthenticated": Fault.AUTH, "forbidden": Fault.PERMISSION, "throttled": Fault.THROTTLED}.get(
            error
        )
        if fault is None:
            raise ValueError(f"unknown fault {error!r}; expected one of {FAULTS}")
        self.inject(fault, count, retry_after=60 if retry_after is None and fault is Fault.THROTTLED else retry_after)

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        """ARM's error body (`{"error": {"code", "message"}}`, the ErrorResponse every ARM API shares) with the
        codes ARM sends: AuthenticationFailed plus a Bearer challenge, AuthorizationFailed naming the scope,
        SubscriptionNotFound/ResourceGroupNotFound; Cost Management's throttling is a 429 with
        `x-ms-ratelimit-microsoft.costmanagement-{qpu,entity,tenant}-retry-after` and no standard Retry-After
        (learn.microsoft.com, "Cost Management API latency and rate limits"); no data is a 204."""
        scope = _scope(unquote(request.path)) or ""
        if fault is Fault.NO_DATA:
            return Answer(204, content_type=_JSON)
        if fault is Fault.AUTH:
            return Answer.json(
                401,
                _error_body("AuthenticationFailed", "Authentication failed."),
                {"WWW-Authenticate": _challenge("Authentication failed.")},
                content_type=_JSON,
            )
        if fault is Fault.PERMISSION:
            return Answer.json(403, _forbidden(scope), content_type=_JSON)
        if fault is Fault.NOT_FOUND:
            err = _not_found(scope)
            return Answer.json(err.status, _error_body(err.code, err.message), content_type=_JSON)
        if fault is Fault.THROTTLED:
            wait = header_seconds(60 if retry_after is None else retry_after)
            headers = {
                f"{QPU}-qpu-retry-after": wait,
                f"{QPU}-entity-retry-after": wait,
                f"{QPU}-tenant-retry-after": wait,
                f"{QPU}-qpu-remaining": "QueriesPerHour:0,QueriesPerMin:0",
                f"{QPU}-qpu-consumed": "0",
            }
            return Answer.json(429, _error_body("429", "Too many requests. Please retry."), headers, content_type=_JSON)
        if fault is Fault.UNAVAILABLE:
            return self._unavailable({})
        return super().fault_answer(fault, request, retry_after)

    @staticmethod
    def _unavailable(headers: dict[str, str]) -> Answer:
        body = _error_body("ServiceUnavailable", "The service is temporarily unavailable. Please retry.")
        return Answer.json(503, body, headers, content_type=_JSON)

    def answer_headers(self, request: Request) -> dict[str, str]:
        return {"x-ms-request-id": str(uuid.uuid4()), "x-ms-correlation-request-id": str(uuid.uuid4())}

    # -- requests -------------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        """What the service answers to one request."""
        body = request.json() if request.body else None
        if request.body and body is None:
            body = request.body.decode("utf-8", "replace")
        with self._lock:
            records = list(self.records)
            scopes = {s.strip("/").lower() for s in self.scopes}
        try:
            status, payload, headers = self._answer(request, body, records, scopes)
        except QueryError as err:
            status, payload, headers = err.status, _error_body(err.code, err.message), err.headers
        if payload is None:
            return Answer(status, b"", headers, _JSON)
        return Answer.json(status, payload, headers, content_type=_JSON)

    def _answer(
        self, request: Request, body: Any, records: list[UsageRecord], scopes: set[str]
    ) -> tuple[int, JSONObj | None, dict[str, str]]:
        method, path, query = request.method, request.path, request.query
        scope = _scope(unquote(path))
        self._authenticate(request.headers.get("authorization"))
        if scope is None:
            raise QueryError(
                404, "NotFound", f"No HTTP resource was found that matches the request URI '{path}'."
            )
        if method != "POST":
            message = f"The requested resource does not support http method '{method}'."
            raise QueryError(405, "MethodNotAllowed", message)
        version = query.get("api-version")
        if not version:
            raise QueryError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version not in API_VERSIONS:
            raise QueryError(
                400,
                "NoRegisteredProviderFound",
                "No registered resource provider found for location 'global' and API version "
                f"'{version}' for type 'query'. The supported api-versions are '{', '.join(API_VERSIONS)}'.",
            )
        if scope.lower() not in scopes:
            raise _not_found(scope)
        if body is None or isinstance(body, str):
            raise _invalid("the request body must be a JSON query definition")
        today = self.today or datetime.datetime.now(datetime.UTC).date()
        parsed = parse_query(body, today)
        offset = _offset(query["$skiptoken"], body) if "$skiptoken" in query else 0
        if self.no_content:
            return 204, None, {}
        columns, rows = run_query(parsed, _visible(records, scope))
        if self.mangle is not None:
            rows = self.mangle(rows)
        page = rows[offset : offset + self.page_size]
        next_link = None
        if offset + self.page_size < len(rows):
            token = quote(_token(offset + self.page_size, body), safe="")
            next_link = (
                f"{self.url}/{scope}/providers/Microsoft.CostManagement/query"
                f"?api-version={version}&$skiptoken={token}"
            )
        name = str(uuid.uuid4())
        result = {
            "id": f"{scope}/providers/Microsoft.CostManagement/query/{name}",
            "name": name,
            "type": "Microsoft.CostManagement/query",
            "location": None,
            "sku": None,
            "eTag": None,
            "properties": {"nextLink": next_link, "columns": columns, "rows": page},
        }
        quota = {f"{QPU}-qpu-consumed": "1", f"{QPU}-qpu-remaining": "QueriesPerHour:599,QueriesPerMin:59"}
        return 200, result, quota

    def _authenticate(self, authorization: str | None) -> None:
        if not authorization:
            message = "Authentication failed. The 'Authorization' header is missing."
            raise QueryError(401, "AuthenticationFailed", message, {"WWW-Authenticate": _challenge(message)})
        if authorization != f"Bearer {self.token}":
            message = "The access token is invalid."
            raise QueryError(
                401, "InvalidAuthenticationToken", message, {"WWW-Authenticate": _challenge(message)}
            )


def _scope(path: str) -> str | None:
    """The scope before /providers/Microsoft.CostManagement/query, slashes stripped; None for other paths."""
    trimmed = "/" + path.strip("/")
    while "//" in trimmed:
        trimmed = trimmed.replace("//", "/")
    if not trimmed.lower().endswith(QUERY_SUFFIX):
        return None
    return trimmed[: -len(QUERY_SUFFIX)].strip("/")


def _visible(records: list[UsageRecord], scope: str) -> list[UsageRecord]:
    """Records a scope sees: those under it for subscription and resource group scopes, else all. A record
    without a resource (a commitment's unused part) is seen at its subscription's scope, not below it."""
    lowered = scope.lower()
    if not lowered.startswith("subscriptions/"):
        return records
    prefix = f"/{lowered}/"
    subscription = _id_part(lowered, "subscriptions")
    whole = not _id_part(lowered, "resourcegroups")
    return [
        r
        for r in records
        if ("/" + r.resource_id.strip("/").lower() + "/").startswith(prefix)
        or (not r.resource_id and whole and r.subscription.lower() == subscription)
    ]


def _not_found(scope: str) -> QueryError:
    subscription = _id_part(scope, "subscriptions")
    group = _id_part(scope, "resourcegroups")
    if group:
        return QueryError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
    if subscription:
        return QueryError(
            404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found."
        )
    return QueryError(404, "NotFound", f"The scope '/{scope}' could not be found.")


def _forbidden(scope: str) -> JSONObj:
    return _error_body(
        "AuthorizationFailed",
        f"The client '{CLIENT_OBJECT_ID}' with object id '{CLIENT_OBJECT_ID}' does not have authorization to "
        "perform action 'Microsoft.CostManagement/query/action' over scope "
        f"'/{scope}' or the scope is invalid. "
        "If access was recently granted, please refresh your credentials.",
    )


def _error_body(code: str, message: str) -> JSONObj:
    return {"error": {"code": code, "message": message}}


def _challenge(description: str) -> str:
    return (
        f'Bearer authorization_uri="https://login.microsoftonline.com/{TENANT_ID}", '
        f'error="invalid_token", error_description="{description}"'
    )



def _fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _token(offset: int, body: Any) -> str:
    """An opaque skiptoken (base64, so it needs URL quoting as the real ones do) bound to the query body."""
    return base64.b64encode(json.dumps({"o": offset, "q": _fingerprint(body)}).encode()).decode()


def _offset(token: str, body: Any) -> int:
    try:
        state = json.loads(base64.b64decode(token, validate=True))
        offset, fingerprint = int(state["o"]), str(state["q"])
    except (ValueError, KeyError, TypeError):
        raise QueryError(400, "BadRequest", "Invalid skiptoken.") from None
    if fingerprint != _fingerprint(body) or offset < 0:
        raise QueryError(400, "BadRequest", "The skiptoken does not belong to this query definition.")
    return offset


_JSON = "application/json; charset=utf-8"
