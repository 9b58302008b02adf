"""GCP billed cost: the detailed Cloud Billing export in BigQuery (`gcp_billing_export_resource_v1_…`).

One parameterised query per refresh, pruned on `_PARTITIONTIME`, aggregated by BigQuery per (project,
zone, VM name) and UTC day. A VM's cost is its Compute Engine rows' `cost` (already after negotiated
prices) plus their credits of the configured types (committed-use and sustained-use discounts, free tier,
promotions…; all by default). Billed hours are the hourly usage slots in which the VM had a machine
(core) SKU: the export is hourly, so a VM that ran part of an hour counts that hour. Network cost is the
VM's rows whose SKU is egress.
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


def bigquery_query(settings: GcpBigQuerySettings) -> str:
    """The one GoogleSQL query of a refresh; its values come as parameters."""
    table = f"`{settings.project}.{settings.dataset}.{settings.table}`"
    credit_filter = " WHERE c.type IN UNNEST(@credit_types)" if settings.credit_types else ""
    tags = "".join(
        f",\n  MAX((SELECT l.value FROM UNNEST(labels) AS l WHERE l.key = @tag_{i})) AS tag_{i}"
        for i in range(len(settings.tags))
    )
    return f"""SELECT
  project_id, zone, vm,
  DATE(usage_start_time) AS usage_day,
  SUM(IF(is_network, 0, net_cost)) AS cost,
  COUNT(DISTINCT IF(is_machine, usage_start_time, NULL)) AS hours,
  SUM(IF(is_network, net_cost, 0)) AS network_cost,
  MAX(usage_end_time) AS usage_end,
  MAX(currency) AS currency{tags}
FROM (
  SELECT
    project.id AS project_id, location.zone AS zone, resource.name AS vm,
    usage_start_time, usage_end_time, currency, labels,
    cost + IFNULL((SELECT SUM(c.amount) FROM UNNEST(credits) AS c{credit_filter}), 0) AS net_cost,
    LOWER(sku.description) LIKE '%egress%' AS is_network,
    (sku.description LIKE '%Core%' OR sku.description LIKE '%Instance with%') AS is_machine
  FROM {table}
  WHERE _PARTITIONTIME >= @partition_start
    AND usage_start_time >= @start AND usage_start_time < @end
    AND service.description = 'Compute Engine'
    AND resource.name IN UNNEST(@vms)
)
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
