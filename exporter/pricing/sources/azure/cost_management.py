"""Azure billed cost: the Cost Management Query API (AmortizedCost by default, ActualCost selectable).

One query per refresh over the scope (a subscription, or the AKS node resource group), Daily, aggregating
`Cost` and `UsageQuantity` (Sum), grouped by ResourceId and MeterCategory (two groupings: the API's
maximum), filtered to the cluster's VMs and scale sets and to the `Virtual Machines`, `Virtual Machines
Licenses` and `Bandwidth` meter categories, following `nextLink`. A `Virtual Machines` row is a resource's
compute that day: its cost and its billed instance-hours (the meters' unit is "1 Hour"); a `Virtual
Machines Licenses` row is software billed by the hour on the same instances (its cost counts, its
licence-hours would count those hours twice); a `Bandwidth` row is its data transfer (its quantity is GB,
so it adds network cost and no hours).

Cost Management reports an AKS pool per scale set, not per instance, so a scale set is `shared`: the base
prices an instance-hour as the set's cost that day ÷ the instance-hours the bill says it bought, and a node's
share of the day is that rate times the hours the node was alive (a day whose billed hours fall short of the
hours its nodes were alive is still being filled in and is skipped). An availability-set VM is billed on its
own. The bill's hours count every instance that ran, also those the exporter never saw (gone before it
started, or between two looks at the cluster), so the rate is what the pool paid per instance-hour. Tags
are not read (no grouping slot left): Kubernetes node labels still fill the tags info metric.

Throttling is a 429 with `x-ms-ratelimit-microsoft.costmanagement-*-retry-after` headers rather than
`Retry-After`, so the SDK's own retries are off and the billing base retries with those delays.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from exporter.config.sources.azure import AzureCostSettings
from exporter.health import Reason
from exporter.inventory.node import Node
from exporter.pricing.sources.billing import BillingSource, BillRow, midnight
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import MAX_RETRY_AFTER, FetchError, parse_retry_after, reason_for_status
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
_MAX_PAGES = 1_000
COMPUTE = "Virtual Machines"  # meter category of VM and scale-set compute; quantity in hours
LICENSES = "Virtual Machines Licenses"  # software billed per VM hour (SQL Server, RHEL…): cost, no new hours
NETWORK = "Bandwidth"  # meter category of data transfer; quantity in GB
DEFAULT_MIN_OBSERVED_HOURS = 12  # the deprecated setting's default: any other value is reported as ignored
API_VERSION = "2025-03-01"  # azure-mgmt-costmanagement 5's own


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

    def __init__(
        self,
        settings: AzureCostSettings,
        context: SourceContext,
        *,
        credential: Any = None,  # tests: a static token for the local fake; else DefaultAzureCredential
        connection_verify: str | bool = True,  # tests: the local fake's CA file
    ) -> None:
        super().__init__(settings, context)
        self._credential = credential
        self._verify = connection_verify
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
            credential = self._credential
            if credential is None:
                from azure.identity import DefaultAzureCredential

                credential = DefaultAzureCredential(**timeouts)
            self._client = CostManagementClient(
                credential,
                base_url=self.settings.endpoint_url or None,
                **timeouts,
                connection_verify=self._verify,
                user_agent="node-cost-exporter",
            )
        return self._client

    def definition(self, resources: Sequence[str], start: datetime, end: datetime) -> dict[str, Any]:
        last = end - timedelta(seconds=1)
        return {
            "type": self.settings.cost_type,
            "timeframe": "Custom",
            "timePeriod": {"from": f"{start:%Y-%m-%dT%H:%M:%SZ}", "to": f"{last:%Y-%m-%dT%H:%M:%SZ}"},
            "dataset": {
                "granularity": "Daily",
                "aggregation": {
                    "totalCost": {"name": "Cost", "function": "Sum"},
                    "totalQuantity": {"name": "UsageQuantity", "function": "Sum"},
                },
                "grouping": [
                    {"type": "Dimension", "name": "ResourceId"},
                    {"type": "Dimension", "name": "MeterCategory"},
                ],
                "filter": {
                    "and": [
                        {"dimensions": {"name": "ResourceId", "operator": "In", "values": list(resources)}},
                        {
                            "dimensions": {
                                "name": "MeterCategory",
                                "operator": "In",
                                "values": [COMPUTE, LICENSES, NETWORK],
                            }
                        },
                    ]
                },
            },
        }

    def query(self, resources: Sequence[str], start: datetime, end: datetime) -> Iterator[BillRow]:
        body = self.definition(resources, start, end)
        scope = self.settings.scope.strip("/")
        client = self._management()
        url: str | None = None
        links: set[str] = set()
        for _ in range(_MAX_PAGES):
            page = self._post(client, scope, body, url)
            if page is None:  # 204: Cost Management has no data for the query
                return
            yield from self._rows(page)
            url = (page.get("properties") or {}).get("nextLink") or None
            if not url:
                return
            if url in links:  # without this, a server repeating its link is asked _MAX_PAGES times
                raise FetchError(Reason.BAD_RESPONSE, "Cost Management repeated a nextLink; stopped paging")
            links.add(url)
        raise FetchError(Reason.BAD_RESPONSE, f"Cost Management nextLink did not end in {_MAX_PAGES} pages")

    def _post(self, client: Any, scope: str, body: dict[str, Any], url: str | None) -> dict[str, Any] | None:
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
                f"{self.where()} was not found ({_said(err)}): check azure.cost_management.scope",
            ) from err
        except IncompleteReadError as err:  # the connection closed midway through the answer
            detail = f"Cost Management's answer was cut off: {_said(err)}"
            raise FetchError(Reason.UNAVAILABLE, detail) from err
        except HttpResponseError as err:
            raise self._status_error(err) from err
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

    def _status_error(self, err: HttpResponseError) -> FetchError:
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
            Reason.PERMISSION: f"{said}; grant the exporter's identity {_ROLE}",
            Reason.NOT_FOUND: f"{self.where()} was not found ({said})",
            Reason.CONFIG: f"Cost Management refused the query ({said})",
            Reason.UNAVAILABLE: f"Cost Management failed with HTTP {code} ({said})",
        }.get(reason, f"Cost Management answered HTTP {code} ({said})")
        return FetchError(reason, detail)

    def _rows(self, page: dict[str, Any]) -> Iterator[BillRow]:
        properties = page.get("properties")
        if not isinstance(properties, dict):
            raise FetchError(Reason.BAD_RESPONSE, "Cost Management answered without properties")
        columns = [
            str(c.get("name", "")).lower() for c in properties.get("columns") or [] if isinstance(c, dict)
        ]
        cost_column = next((c for c in ("cost", "pretaxcost", "costusd") if c in columns), None)
        wanted = ("usagequantity", "usagedate", "resourceid", "metercategory")
        if cost_column is None or not all(c in columns for c in wanted):
            raise FetchError(Reason.BAD_RESPONSE, f"Cost Management answered with columns {columns}")
        for raw in properties.get("rows") or []:
            values = dict(zip(columns, raw, strict=False)) if isinstance(raw, list) else {}
            resource = str(values.get("resourceid") or "").lower()
            category = str(values.get("metercategory") or "")
            try:
                day = datetime.strptime(str(int(values["usagedate"])), "%Y%m%d").date()
                cost, quantity = float(values[cost_column]), float(values["usagequantity"])
            except (KeyError, ValueError, TypeError) as err:
                self.invalid_row(resource or "?", f"unreadable Cost Management row {raw!r}: {err}")
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


def _said(err: HttpResponseError) -> str:
    error = getattr(err, "error", None)
    code, message = getattr(error, "code", None), getattr(error, "message", None)
    text = f"{code}: {message}" if code and message else str(err.message or err)
    return text.splitlines()[0][:400] if text else type(err).__name__
