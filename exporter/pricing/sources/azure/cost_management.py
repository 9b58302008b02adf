"""Azure billed cost: the Cost Management Query API (AmortizedCost by default, ActualCost selectable).

The node query, once per refresh over the scope (a subscription, or the AKS node resource group), Daily,
aggregating `Cost` and `UsageQuantity` (Sum), grouped by ResourceId and MeterCategory (two groupings: the
API's maximum), filtered to the cluster's VMs and scale sets and to the `Virtual Machines`, `Virtual
Machines Licenses` and `Bandwidth` meter categories, following `nextLink`. A `Virtual Machines` row is a
resource's compute that day: its cost and its billed instance-hours (the meters' unit is "1 Hour"); a
`Virtual Machines Licenses` row is software billed by the hour on the same instances (its cost counts, its
licence-hours would count those hours twice); a `Bandwidth` row is its data transfer (its quantity is GB, so
it adds network cost and no hours).

Cost Management reports an AKS pool per scale set, not per instance, so a scale set is `shared`: the base
prices an instance-hour as the set's cost that day ÷ the instance-hours the bill says it bought, and a node's
share of the day is that rate times the hours the node was alive (a day whose billed hours fall short of the
hours its nodes were alive is still being filled in and is skipped). An availability-set VM is billed on its
own. The bill's hours count every instance that ran, also those the exporter never saw (gone before it
started, or between two looks at the cluster), so the rate is what the pool paid per instance-hour. Tags
are not read (no grouping slot left): Kubernetes node labels still fill the tags info metric.

Commitments (docs/pricing.md, "Commitments", Azure), three more queries per refresh:
- coverage, over the same scope and filters plus `MeterCategory In [Virtual Machines]` and `PricingModel In
  [Reservation, SavingsPlan]`, Daily, `UsageQuantity` (Sum) by ResourceId: the instance-hours a reservation
  or savings plan covered. They come back as BillRows of cost 0 and hours 0 carrying `covered_hours`, which
  the base adds to the same resource's day. Under AmortizedCost that covered usage already carries the
  commitment's amortized rate, so the node rates stay exact; under ActualCost it costs 0 (the purchase is a
  lump elsewhere), so AmortizedCost is the basis to use with commitments.
- per reservation and per savings plan, always AmortizedCost (ActualCost has no unused rows), over
  `commitment_scope` (default: the subscription of `scope`, since the `UnusedReservation` /
  `UnusedSavingsPlan` rows carry no resource group and are invisible at the AKS node resource group),
  Daily, `Cost` (Sum) by `ReservationId` and `ChargeType` with `PricingModel In [Reservation]`, and by
  `BenefitId` and `ChargeType` with `PricingModel In [SavingsPlan]` (the usage-details fields
  ReservationId / BenefitId name the purchased reservation / savings plan; two groupings per query, so one
  query each). Per commitment (the id lower-cased) and day: committed = its `Usage` rows (the amortized
  cost of the usage it covered: used) + its `UnusedReservation` / `UnusedSavingsPlan` rows; other charge
  types (Purchase, Refund: ActualCost rows) are not amortized cost and are not counted.
A refusal of the commitment queries (Cost Management Reader missing at the commitment scope) keeps the node
rates: the base logs it, naming the role and `azure.cost_management.commitment_scope`.

Throttling is a 429 with `x-ms-ratelimit-microsoft.costmanagement-*-retry-after` headers rather than
`Retry-After`, so the SDK's own retries are off and the billing base retries with those delays.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from exporter.config.sources.azure import AzureCostSettings, azure_cloud
from exporter.health import Reason
from exporter.inventory.node import Node
from exporter.pricing.sources.billing import BillingSource, BillRow, CommitmentDay, midnight
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import (
    MAX_RETRY_AFTER,
    FetchError,
    parse_retry_after,
    reason_for_status,
    trusted_tls,
)
from exporter.pricing.sources.registry import register

if TYPE_CHECKING:  # azure-core is imported when a query is sent: discovery must stay SDK-free
    from azure.core.exceptions import HttpResponseError


_RETRY_HEADERS = (
    "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after",
    "x-ms-ratelimit-microsoft.costmanagement-clienttype-retry-after",
    "retry-after",
)
_ROLE = "the Cost Management Reader role (Microsoft.CostManagement/query/action) on the scope"
_SCOPE_KEY = "azure.cost_management.scope"
_COMMITMENT_KEY = "azure.cost_management.commitment_scope"
_MAX_PAGES = 1_000
COMPUTE = "Virtual Machines"  # meter category of VM and scale-set compute; quantity in hours
LICENSES = "Virtual Machines Licenses"  # software billed per VM hour (SQL Server, RHEL…): cost, no new hours
NETWORK = "Bandwidth"  # meter category of data transfer; quantity in GB
DEFAULT_MIN_OBSERVED_HOURS = 12  # the deprecated setting's default: any other value is reported as ignored
API_VERSION = "2025-03-01"  # azure-mgmt-costmanagement 5's own
COVERED_MODELS = ("Reservation", "SavingsPlan")  # PricingModel of usage a commitment covered
# Per kind of commitment: its PricingModel and the dimension naming the commitment in usage details.
COMMITMENT_KINDS = (("Reservation", "ReservationId"), ("SavingsPlan", "BenefitId"))
USED_CHARGE = "Usage"  # ChargeType of the usage a commitment covered, at its amortized cost
UNUSED_CHARGES = ("UnusedReservation", "UnusedSavingsPlan")  # the commitment's unused part that day


@register(
    "azure.cost_management",
    settings=AzureCostSettings,
    extra="azure",
    sdk=("azure.core", "azure.mgmt.costmanagement", "azure.identity"),
)
class AzureCostBilling(BillingSource[AzureCostSettings]):
    name = "azure_cost_management"
    provider = "azure"
    resource_kind = "VM or scale set"
    attributes_network = True  # Bandwidth rows carry the VM's or scale set's data transfer
    reports_coverage = True  # the coverage query's UsageQuantity of Reservation / SavingsPlan usage
    reports_commitments = True  # Usage and Unused* rows per ReservationId / BenefitId, AmortizedCost

    def __init__(
        self,
        settings: AzureCostSettings,
        context: SourceContext,
        *,
        credential: Any = None,  # tests: a static token for the local fake; else DefaultAzureCredential
        connection_verify: str | None = None,  # tests: the local fake's CA file; else tls.ca_file's bundle
    ) -> None:
        super().__init__(settings, context)
        self._credential = credential
        self._verify = connection_verify or context.sdk_verify()
        self._cloud = azure_cloud(context.clouds).endpoints
        self._client: Any = None
        if settings.min_observed_hours != DEFAULT_MIN_OBSERVED_HOURS:
            self.log.warning(
                "azure.cost_management.min_observed_hours (%s) is deprecated and ignored: a scale set's "
                "cost is now divided by the instance-hours billed with it (UsageQuantity), not by the hours "
                "the exporter observed; remove the setting (it will be refused in a later release)",
                settings.min_observed_hours,
            )

    def resource(self, node: Node) -> str | None:
        ref = node.ref
        if node.provider != "azure" or not (ref.account and ref.resource_group):
            return None
        base = f"/subscriptions/{ref.account}/resourcegroups/{ref.resource_group}/providers/microsoft.compute"
        if ref.scale_set:
            return f"{base}/virtualmachinescalesets/{ref.scale_set}".lower()
        return f"{base}/virtualmachines/{ref.instance_id}".lower() if ref.instance_id else None

    def where(self) -> str:
        return f"Cost Management scope {self.settings.scope}"

    def shared(self, resource: str) -> bool:
        """A scale set is billed for all its instances at once; a VM (availability set) for itself."""
        return "/virtualmachinescalesets/" in resource

    def _management(self) -> Any:
        if self._client is None:
            from azure.mgmt.costmanagement import CostManagementClient

            # Every HTTP call, token requests included, has the source's deadline and no SDK retries: the
            # billing base retries, honouring Cost Management's own headers (azure-core's defaults retry 3
            # times with backoff, and wait up to 300 s for an answer).
            timeouts: dict[str, Any] = {
                "retry_total": 0,
                "connection_timeout": min(60.0, self.settings.timeout_seconds),
                "read_timeout": self.settings.timeout_seconds,
            }
            if self._verify:
                timeouts["connection_verify"] = self._verify  # token requests trust it too
            credential = self._credential or _credential(self._cloud.authority_host, timeouts)
            self._client = CostManagementClient(
                credential,
                base_url=self.settings.endpoint_url or self._cloud.arm_endpoint,
                # The token's audience follows the cloud even when endpoint_url points elsewhere (a proxy):
                # the SDK's default scope is the public cloud's whatever base_url says.
                credential_scopes=[self._cloud.arm_scope],
                **timeouts,
                user_agent="node-cost-exporter",
            )
        return self._client

    def commitment_scope(self) -> str:
        """Where the commitments are read: `commitment_scope`, else the subscription of `scope` (the
        Unused* rows carry no resource group, so a resource-group scope never sees them)."""
        if self.settings.commitment_scope:
            return self.settings.commitment_scope.strip("/")
        parts = self.settings.scope.strip("/").split("/")
        return "/".join(parts[:2]) if parts[0].lower() == "subscriptions" else "/".join(parts)

    def definition(self, resources: Sequence[str], start: datetime, end: datetime) -> dict[str, Any]:
        return _definition(
            self.settings.cost_type,
            start,
            end,
            {
                "totalCost": {"name": "Cost", "function": "Sum"},
                "totalQuantity": {"name": "UsageQuantity", "function": "Sum"},
            },
            ["ResourceId", "MeterCategory"],
            [_among("ResourceId", list(resources)), _among("MeterCategory", [COMPUTE, LICENSES, NETWORK])],
        )

    def coverage_definition(self, resources: Sequence[str], start: datetime, end: datetime) -> dict[str, Any]:
        """The instance-hours of each resource that a reservation or savings plan covered, per day."""
        return _definition(
            self.settings.cost_type,
            start,
            end,
            {"totalQuantity": {"name": "UsageQuantity", "function": "Sum"}},
            ["ResourceId"],
            [
                _among("ResourceId", list(resources)),
                _among("MeterCategory", [COMPUTE]),
                _among("PricingModel", list(COVERED_MODELS)),
            ],
        )

    def commitment_definition(
        self, pricing_model: str, dimension: str, start: datetime, end: datetime
    ) -> dict[str, Any]:
        """One kind of commitment's amortized cost per commitment, charge type and day."""
        return _definition(
            "AmortizedCost",  # ActualCost has no Unused* rows and prices covered usage at 0
            start,
            end,
            {"totalCost": {"name": "Cost", "function": "Sum"}},
            [dimension, "ChargeType"],
            [_among("PricingModel", [pricing_model])],
        )

    def query(self, resources: Sequence[str], start: datetime, end: datetime) -> Iterator[BillRow]:
        scope = self.settings.scope.strip("/")
        for page in self._pages(scope, self.definition(resources, start, end), _SCOPE_KEY):
            yield from self._rows(page)
        for page in self._pages(scope, self.coverage_definition(resources, start, end), _SCOPE_KEY):
            for values in _table(page, ("usagequantity", "usagedate", "resourceid")):
                resource = str(values.get("resourceid") or "").lower()
                try:
                    day, covered = _day(values), float(values["usagequantity"])
                except (KeyError, ValueError, TypeError) as err:
                    self.invalid_row(resource or "?", f"unreadable Cost Management coverage row: {err}")
                    continue
                end_ = midnight(day) + timedelta(days=1)
                currency = str(values.get("currency") or "")
                yield BillRow(resource, day, end_, 0.0, 0.0, currency=currency, covered_hours=covered)

    def commitment_days(self, start: datetime, end: datetime) -> Iterator[CommitmentDay]:
        scope = self.commitment_scope()
        sums: dict[tuple[str, date], list[float]] = {}  # (commitment, day) → [committed, used]
        for pricing_model, dimension in COMMITMENT_KINDS:
            body = self.commitment_definition(pricing_model, dimension, start, end)
            column = dimension.lower()
            for page in self._pages(scope, body, _COMMITMENT_KEY):
                for values in _table(page, (column, "chargetype", "usagedate"), cost=True):
                    commitment = str(values.get(column) or "").lower()
                    charge = str(values.get("chargetype") or "")
                    if charge != USED_CHARGE and charge not in UNUSED_CHARGES:
                        continue  # Purchase, Refund…: ActualCost rows, not a day's amortized cost
                    try:
                        day, cost = _day(values), float(values[_cost_column(values)])
                    except (KeyError, ValueError, TypeError) as err:
                        self.invalid_row(
                            commitment or "?", f"unreadable Cost Management commitment row: {err}"
                        )
                        continue
                    if not commitment:
                        self.invalid_row("?", f"a {pricing_model} row without {dimension} on {day}")
                        continue
                    currency = str(values.get("currency") or "")
                    if currency and currency != self.currency:  # not summable with pricing.currency
                        self.invalid_row(commitment, f"a commitment row in {currency}, not {self.currency}")
                        continue
                    entry = sums.setdefault((commitment, day), [0.0, 0.0])
                    entry[0] += cost
                    if charge == USED_CHARGE:
                        entry[1] += cost
        for (commitment, day), (committed, used) in sorted(sums.items()):
            yield CommitmentDay(commitment, day, committed, used)

    def _pages(self, scope: str, body: dict[str, Any], key: str) -> Iterator[dict[str, Any]]:
        """The answer's pages, following `nextLink`; none on a 204 (no data for the query)."""
        client = self._management()
        url: str | None = None
        links: set[str] = set()
        for _ in range(_MAX_PAGES):
            page = self._post(client, scope, body, url, key)
            if page is None:  # 204: Cost Management has no data for the query
                return
            yield page
            url = (page.get("properties") or {}).get("nextLink") or None
            if not url:
                return
            if url in links:  # without this, a server repeating its link is asked _MAX_PAGES times
                raise FetchError(Reason.BAD_RESPONSE, "Cost Management repeated a nextLink; stopped paging")
            links.add(url)
        raise FetchError(Reason.BAD_RESPONSE, f"Cost Management nextLink did not end in {_MAX_PAGES} pages")

    def _post(
        self, client: Any, scope: str, body: dict[str, Any], url: str | None, key: str
    ) -> dict[str, Any] | None:
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            IncompleteReadError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceRequestTimeoutError,
            ServiceResponseError,
            ServiceResponseTimeoutError,
        )
        from azure.core.rest import HttpRequest

        if url is None:  # relative: the SDK joins it to its endpoint
            url = f"/{scope}/providers/Microsoft.CostManagement/query?api-version={API_VERSION}"
        try:
            arm = self.settings.endpoint_url or self._cloud.arm_endpoint
            with trusted_tls(f"{self._cloud.authority_host} or {arm}"):  # a token request, or the query
                response = client.send_request(HttpRequest("POST", url, json=body))
            response.raise_for_status()
        except ClientAuthenticationError as err:
            raise FetchError(
                Reason.AUTH,
                f"Azure rejected the credentials ({_said(err)}); check the pod's workload identity "
                "(AZURE_CLIENT_ID, AZURE_TENANT_ID, the federated token)",
            ) from err
        except ResourceNotFoundError as err:
            raise FetchError(
                Reason.NOT_FOUND,
                f"Cost Management scope /{scope} was not found ({_said(err)}): check {key}",
            ) from err
        except IncompleteReadError as err:  # the connection closed midway through the answer
            detail = f"Cost Management's answer was cut off: {_said(err)}"
            raise FetchError(Reason.UNAVAILABLE, detail) from err
        except HttpResponseError as err:
            raise self._status_error(err, scope, key) from err
        except (ServiceRequestTimeoutError, ServiceResponseTimeoutError) as err:
            raise FetchError(
                Reason.TIMEOUT,
                f"Cost Management did not answer within {self.settings.timeout_seconds:g}s ({err})",
            ) from err
        except (ServiceRequestError, ServiceResponseError) as err:  # refused, reset, dropped mid-answer
            raise FetchError(Reason.UNAVAILABLE, f"cannot reach Cost Management: {err}") from err
        if response.status_code == 204 or not response.content:
            return None
        try:
            page = response.json()
        except ValueError as err:
            raise FetchError(
                Reason.BAD_RESPONSE, f"Cost Management answered with invalid JSON: {err}"
            ) from err
        if not isinstance(page, dict):
            raise FetchError(Reason.BAD_RESPONSE, "Cost Management answered without an object")
        return page

    def _status_error(self, err: HttpResponseError, scope: str, key: str) -> FetchError:
        code = err.status_code or 0
        said = _said(err)
        reason = reason_for_status(code)
        if reason is Reason.THROTTLED:
            headers: Any = getattr(err.response, "headers", None) or {}
            now = self.clock.time()
            delays = [d for h in _RETRY_HEADERS if (d := parse_retry_after(headers.get(h), now)) is not None]
            retry_after = min(max(delays), MAX_RETRY_AFTER) if delays else None
            return FetchError(
                Reason.THROTTLED, f"Cost Management throttled the query ({said})", retry_after=retry_after
            )
        detail = {
            Reason.AUTH: f"Azure rejected the credentials ({said})",
            Reason.PERMISSION: f"{said}; grant the exporter's identity {_ROLE} /{scope} ({key})",
            Reason.NOT_FOUND: f"Cost Management scope /{scope} was not found ({said}): check {key}",
            Reason.CONFIG: f"Cost Management refused the query ({said})",
            Reason.UNAVAILABLE: f"Cost Management failed with HTTP {code} ({said})",
        }.get(reason, f"Cost Management answered HTTP {code} ({said})")
        return FetchError(reason, detail)

    def _rows(self, page: dict[str, Any]) -> Iterator[BillRow]:
        for values in _table(page, ("usagequantity", "usagedate", "resourceid", "metercategory"), cost=True):
            resource = str(values.get("resourceid") or "").lower()
            category = str(values.get("metercategory") or "")
            try:
                day = _day(values)
                cost, quantity = float(values[_cost_column(values)]), float(values["usagequantity"])
            except (KeyError, ValueError, TypeError) as err:
                self.invalid_row(resource or "?", f"unreadable Cost Management row {values!r}: {err}")
                continue
            currency = str(values.get("currency") or "")
            end = midnight(day) + timedelta(days=1)
            # Cost Management reports the negotiated (EA/MCA) price: no on-demand part to discount on top.
            if category.lower() == COMPUTE.lower():
                yield BillRow(resource, day, end, cost, quantity, currency=currency)
            elif category.lower() == LICENSES.lower():  # the same hours again, as licence-hours: cost only
                yield BillRow(resource, day, end, cost, 0.0, currency=currency)
            elif category.lower() == NETWORK.lower():  # quantity in GB: network cost, no hours
                yield BillRow(resource, day, end, 0.0, 0.0, network_cost=cost, currency=currency)
            # another category only if the filter was not applied: not this source's to count


_COST_COLUMNS = ("cost", "pretaxcost", "costusd")


def _credential(authority: str, options: dict[str, Any]) -> Any:
    """Azure Workload Identity when its webhook's variables are there, else DefaultAzureCredential's chain;
    either way from `authority` (azure.cloud): a token from login.microsoftonline.com is no good to
    management.usgovcloudapi.net. Not DefaultAzureCredential alone: it hands `authority` to every
    credential but the workload identity one, which then falls back to AZURE_AUTHORITY_HOST or the public
    cloud (azure-identity's _credentials/default.py)."""
    from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential

    if os.environ.get("AZURE_FEDERATED_TOKEN_FILE"):
        return WorkloadIdentityCredential(authority=authority, **options)
    return DefaultAzureCredential(authority=authority, **options)


def _definition(
    cost_type: str,
    start: datetime,
    end: datetime,
    aggregation: dict[str, Any],
    grouping: list[str],
    filters: list[dict[str, Any]],
) -> dict[str, Any]:
    """A Daily query over [start, end) (the API's `to` is inclusive); `and` needs two filters or more."""
    last = end - timedelta(seconds=1)
    return {
        "type": cost_type,
        "timeframe": "Custom",
        "timePeriod": {"from": f"{start:%Y-%m-%dT%H:%M:%SZ}", "to": f"{last:%Y-%m-%dT%H:%M:%SZ}"},
        "dataset": {
            "granularity": "Daily",
            "aggregation": aggregation,
            "grouping": [{"type": "Dimension", "name": name} for name in grouping],
            "filter": {"and": filters} if len(filters) > 1 else filters[0],
        },
    }


def _among(dimension: str, values: list[str]) -> dict[str, Any]:
    return {"dimensions": {"name": dimension, "operator": "In", "values": values}}


def _table(page: dict[str, Any], wanted: tuple[str, ...], *, cost: bool = False) -> Iterator[dict[str, Any]]:
    """A page's rows keyed by lower-cased column name; BAD_RESPONSE when a wanted column is missing."""
    properties = page.get("properties")
    if not isinstance(properties, dict):
        raise FetchError(Reason.BAD_RESPONSE, "Cost Management answered without properties")
    columns = [str(c.get("name", "")).lower() for c in properties.get("columns") or [] if isinstance(c, dict)]
    has_cost = any(c in columns for c in _COST_COLUMNS) or not cost
    if not has_cost or not all(c in columns for c in wanted):
        raise FetchError(Reason.BAD_RESPONSE, f"Cost Management answered with columns {columns}")
    for raw in properties.get("rows") or []:
        yield dict(zip(columns, raw, strict=False)) if isinstance(raw, list) else {}


def _cost_column(values: dict[str, Any]) -> str:
    return next((c for c in _COST_COLUMNS if c in values), "cost")


def _day(values: dict[str, Any]) -> date:
    return datetime.strptime(str(int(values["usagedate"])), "%Y%m%d").date()


def _said(err: HttpResponseError) -> str:
    error = getattr(err, "error", None)
    code, message = getattr(error, "code", None), getattr(error, "message", None)
    text = f"{code}: {message}" if code and message else str(err.message or err)
    return text.splitlines()[0][:400] if text else type(err).__name__
