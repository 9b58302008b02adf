"""GCP billed cost: the detailed Cloud Billing export in BigQuery (`gcp_billing_export_resource_v1_…`).

One parameterised query per refresh, aggregated by BigQuery to one row per (project, zone, VM name) and
UTC usage day, over the rows of the VM's instance (`resource.global_name` …/zones/Z/instances/NAME; its
disks, billed under the same `resource.name` as …/disks/…, are left out) whose `cost_type` is 'regular':
- cost: the instance's Compute Engine rows other than egress, `cost` (already after negotiated prices) plus
  their credits of the configured types (committed-use and sustained-use discounts, free tier,
  promotions…; all by default);
- hours: the time the VM ran, from its core SKUs' usage in vCPU-seconds divided by its vCPU count x 3600,
  the vCPU count read off the bill itself (its fullest usage hour in the window; see `bigquery_query`), so
  a VM started at 08:14 ran 15.77 h that day;
- network: the instance's egress rows, "… Data Transfer Out …" (service Networking, since 2023) or
  "… Egress …" (Compute Engine, before);
- every export batch of an hour summed, also those exported days late into later `_PARTITIONTIME`
  partitions: partitions are pruned from the window's first day less one, with no upper bound.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from exporter.config.sources.gcp import GcpBigQuerySettings
from exporter.health import Reason
from exporter.inventory.node import Node
from exporter.pricing.sources.billing import BillingSource, BillRow
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import FetchError, reason_for_status
from exporter.pricing.sources.registry import register

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


def bigquery_query(settings: GcpBigQuerySettings) -> str:
    """The one GoogleSQL query of a refresh, aggregated per (project, zone, VM) and UTC usage day; its
    values come as parameters."""
    table = f"`{settings.project}.{settings.dataset}.{settings.table}`"
    credit_filter = " WHERE c.type IN UNNEST(@credit_types)" if settings.credit_types else ""
    count = range(len(settings.tags))
    row_tags = "".join(
        f",\n    (SELECT l.value FROM UNNEST(labels) AS l WHERE l.key = @tag_{i}) AS tag_{i}" for i in count
    )
    slot_tags = "".join(f", MAX(tag_{i}) AS tag_{i}" for i in count)
    day_tags = "".join(f",\n  MAX(tag_{i}) AS tag_{i}" for i in count)
    return f"""WITH billed AS (
  SELECT
    project.id AS project_id,
    COALESCE(REGEXP_EXTRACT(resource.global_name, r'/zones/([^/]+)/instances/'), location.zone) AS zone,
    resource.name AS vm, resource.global_name AS global_name,
    usage_start_time, usage_end_time, currency,
    cost + IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c{credit_filter}), 0) AS net_cost,
    {_NETWORK_SKU} AS is_network,
    IF({_CORE_SKU}, usage.amount, 0) AS core_seconds{row_tags}
  FROM {table}
  WHERE _PARTITIONTIME >= @partition_start
    AND usage_start_time >= @start AND usage_start_time < @end
    AND cost_type = 'regular'
    AND resource.name IN UNNEST(@vms)
    AND resource.global_name LIKE '%/zones/%/instances/%'
    AND (service.description = 'Compute Engine' OR (service.description = 'Networking' AND {_NETWORK_SKU}))
),
hourly AS (
  SELECT
    project_id, zone, vm, global_name, usage_start_time,
    SUM(IF(is_network, 0, net_cost)) AS cost,
    SUM(IF(is_network, net_cost, 0)) AS network_cost,
    SUM(core_seconds) AS core_seconds,
    MAX(usage_end_time) AS usage_end,
    MAX(currency) AS currency{slot_tags}
  FROM billed
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
  SUM(network_cost) AS network_cost,
  MAX(usage_end) AS usage_end,
  MAX(currency) AS currency{day_tags}
FROM sized
GROUP BY project_id, zone, vm, usage_day"""


def deadline_session(credentials: Any, seconds: float) -> Any:
    """An authorized HTTP session whose calls never wait longer than `seconds`.

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

    return DeadlineSession(  # type: ignore[no-untyped-call]
        credentials, refresh_timeout=seconds, auth_request=DeadlineRequest()
    )


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

    def __init__(self, settings: GcpBigQuerySettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self._client: bigquery.Client | None = None

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
                _http=deadline_session(credentials, self.settings.timeout_seconds),
            )
        return self._client

    def query(self, resources: Sequence[str], start: datetime, end: datetime) -> Iterator[BillRow]:
        import requests
        from google.api_core import exceptions as google_errors
        from google.auth.exceptions import RefreshError
        from google.cloud import bigquery

        vms = sorted({r.rsplit("/", 1)[-1] for r in resources})
        params: list[Any] = [
            # the export days to read: from the window's first day less one, onwards (bigquery_query)
            bigquery.ScalarQueryParameter("partition_start", "TIMESTAMP", start - timedelta(days=1)),
            bigquery.ScalarQueryParameter("start", "TIMESTAMP", start),
            bigquery.ScalarQueryParameter("end", "TIMESTAMP", end),
            bigquery.ArrayQueryParameter("vms", "STRING", vms),
        ]
        if self.settings.credit_types:
            params.append(
                bigquery.ArrayQueryParameter("credit_types", "STRING", list(self.settings.credit_types))
            )
        params += [
            bigquery.ScalarQueryParameter(f"tag_{i}", "STRING", k) for i, k in enumerate(self.settings.tags)
        ]
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
                bigquery_query(self.settings),
                job_config=config,
                retry=None,  # type: ignore[arg-type]  # annotated Retry; None is documented to disable it
                job_retry=None,
                timeout=timeout,
            )
            rows = job.result(page_size=10_000, timeout=timeout, retry=None, job_retry=None)
            self.scanned_bytes += int(job.total_bytes_billed or 0)
            tokens: set[str] = set()
            for page in rows.pages:  # page by page: the client would follow a repeated pageToken forever
                for raw in page:
                    row = self._row(raw)
                    if row is not None:
                        yield row
                token = rows.next_page_token
                if token in tokens:
                    raise FetchError(Reason.BAD_RESPONSE, "BigQuery repeated a pageToken; stopped paging")
                if token:
                    tokens.add(token)
        except google_errors.GoogleAPICallError as err:
            raise self._error(err) from err
        except RefreshError as err:
            raise FetchError(Reason.AUTH, f"Google credentials could not be refreshed: {err}") from err
        except (TimeoutError, requests.Timeout, google_errors.RetryError) as err:
            raise FetchError(
                Reason.TIMEOUT,
                f"BigQuery did not answer or finish the job within {timeout:g}s "
                "(raise gcp.bigquery.timeout_seconds)",
            ) from err
        except requests.JSONDecodeError as err:  # an OSError too: before the clause below
            raise FetchError(Reason.BAD_RESPONSE, f"unreadable answer from BigQuery: {err}") from err
        except OSError as err:  # requests' connection errors are OSErrors
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
