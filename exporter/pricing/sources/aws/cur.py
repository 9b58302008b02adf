"""AWS billed cost: the Cost and Usage Report (legacy CUR or CUR 2.0) queried through Athena.

One query per refresh for the nodes, aggregated by Athena per instance id and UTC day, pruned by partition
and filtered to the cluster's instance ids, so Athena scans (and bills) as little as it can and the exporter
reads one row per node per day; a second one for the account's commitments (`commitment_query`), a row per
savings plan or reserved instance and day. Cost per usage row in the amortized basis (the default), as AWS
defines it:
SavingsPlanCoveredUsage → the savings plan's effective cost, DiscountedUsage (reserved instance) → the
reservation's effective cost, Usage (on-demand and spot) → its unblended cost, SavingsPlanNegation → 0.
The `_net` bases take the `*_net_*` columns, which carry EDP and private-rate discounts; discount line
items themselves are never summed (that would count them twice). The hours of DiscountedUsage and
SavingsPlanCoveredUsage rows are the node's covered hours.

Commitments (docs/pricing.md, "Commitments"), from the AWS CUR data dictionary's "Savings Plans details"
and "Reservation details" columns:
- a savings plan: its hourly SavingsPlanRecurringFee rows; committed = savings_plan_total_commitment_to_date
  (the hour's amortized upfront plus recurring fee), used = savings_plan_used_commitment.
- a reserved instance: its RIFee row is monthly and counts the month's not yet billed hours as unused, so a
  day is derived instead. The RI's size = the RIFee's usage ÷ the hours of its month and its hourly rate =
  (recurring fee + amortized upfront fee) ÷ that usage; its used hours on a day are the usage of the
  DiscountedUsage rows carrying its ARN. Both are counted in normalized units
  (line_item_normalized_usage_amount) where the RIFee row has them, so a size-flexible RI covering other
  sizes of its family is measured as AWS measures it; in instance-hours otherwise.
"""

from __future__ import annotations

import calendar
from collections.abc import Collection, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from exporter.config.sources.aws import NET_COST_BASES, AwsCurSettings
from exporter.health import Reason
from exporter.inventory.node import Node
from exporter.pricing.sources.aws.client import _fetch_error, aws_session, whole_answers
from exporter.pricing.sources.billing import BillingSource, BillRow, CommitmentDay, midnight
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import FetchError
from exporter.pricing.sources.registry import register

# Athena refuses query strings over 262,144 bytes: above this many ids the filter becomes "i-%" and rows
# of instances outside the cluster are dropped as they stream in.
MAX_IDS_IN_QUERY = 9_000
_INSTANCE_USAGE = ("%BoxUsage%", "%SpotUsage%", "%DedicatedUsage%", "%HostUsage%")
_NETWORK_USAGE = ("%DataTransfer%", "%-Bytes%")
_USAGE_TYPES = "('Usage', 'DiscountedUsage', 'SavingsPlanCoveredUsage')"
_COVERED_TYPES = "('DiscountedUsage', 'SavingsPlanCoveredUsage')"
# The columns a legacy CUR has only once the account has had a savings plan or a reserved instance (CUR 2.0
# has them all): without them, no commitment of that kind is read.
SAVINGS_PLAN_COLUMNS = (
    "savings_plan_savings_plan_a_r_n",
    "savings_plan_total_commitment_to_date",
    "savings_plan_used_commitment",
)
RESERVATION_COLUMNS = (
    "reservation_reservation_a_r_n",
    "reservation_amortized_upfront_fee_for_billing_period",
)
# Columns read where present, else their gross or instance-hour equivalent.
_NET_SAVINGS_PLAN = (
    "savings_plan_net_amortized_upfront_commitment_for_billing_period",
    "savings_plan_net_recurring_commitment_for_billing_period",
)
_NET_RESERVATION = (
    "line_item_net_unblended_cost",
    "reservation_net_amortized_upfront_fee_for_billing_period",
)
_NORMALIZED = "line_item_normalized_usage_amount"
# Named in every permission failure; deploy/overlays/aws/billing-iam-policy.json grants exactly these
# (docs/billing-setup.md), and tests/test_billing_setup_doc.py keeps the two in step.
_ACTIONS = (
    "athena:StartQueryExecution, athena:GetQueryExecution, athena:GetQueryResults, "
    "athena:StopQueryExecution, glue:GetDatabase, glue:GetTable, glue:GetPartitions, s3:GetObject on the "
    "CUR bucket and s3:PutObject on the query output location (deploy/overlays/aws/billing-iam-policy.json)"
)


def _cost(basis: str) -> str:
    """The SQL of one line item's cost in the chosen basis."""
    net = basis in NET_COST_BASES

    def col(gross: str, net_col: str) -> str:
        return f"COALESCE({net_col}, {gross})" if net else gross

    unblended = col("line_item_unblended_cost", "line_item_net_unblended_cost")
    if basis.startswith("amortized"):
        sp = col("savings_plan_savings_plan_effective_cost", "savings_plan_net_savings_plan_effective_cost")
        ri = col("reservation_effective_cost", "reservation_net_effective_cost")
        return (
            f"CASE line_item_line_item_type WHEN 'SavingsPlanCoveredUsage' THEN {sp} "
            f"WHEN 'DiscountedUsage' THEN {ri} WHEN 'Usage' THEN {unblended} ELSE 0 END"
        )
    return (
        "CASE WHEN line_item_line_item_type IN ('Usage', 'DiscountedUsage', 'SavingsPlanCoveredUsage', "
        f"'SavingsPlanNegation') THEN {unblended} ELSE 0 END"
    )


def _any_like(column: str, patterns: Sequence[str]) -> str:
    return "(" + " OR ".join(f"{column} LIKE '{p}'" for p in patterns) + ")"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def tag_name(key: str) -> str:
    """A tag key as written in AWS (`cost-center` or `user:cost-center`; AWS-made `aws:eks:cluster-name`) in
    the CUR's form, one name for both versions: user_cost_center, aws_eks_cluster_name."""
    prefix, sep, rest = key.partition(":")
    if not sep or prefix not in ("user", "aws"):
        prefix, rest = "user", key
    return prefix + "_" + "".join(c.lower() if c.isascii() and c.isalnum() else "_" for c in rest)


def tag_column(key: str, version: str) -> str:
    """The SQL reading one resource tag: a key of the `resource_tags` map in CUR 2.0, a column of its own
    (`resource_tags_user_cost_center`) in a legacy CUR."""
    name = tag_name(key)
    return f"element_at(resource_tags, {_quote(name)})" if version == "2.0" else f"resource_tags_{name}"


def cur_query(
    settings: AwsCurSettings,
    instance_ids: Sequence[str],
    start: datetime,
    end: datetime,
    absent: Collection[str] = (),
) -> str:
    """The one Athena (Trino) query of a refresh; tags in `absent` (a legacy CUR without their column) are
    read as NULL."""
    version = settings.cur_version
    partitions = _partitions(version, start, end)
    if len(instance_ids) <= MAX_IDS_IN_QUERY:
        ids = "line_item_resource_id IN (" + ", ".join(_quote(i) for i in instance_ids) + ")"
    else:
        ids = "line_item_resource_id LIKE 'i-%'"
    instance = _any_like("line_item_usage_type", _INSTANCE_USAGE)
    network = _any_like("line_item_usage_type", _NETWORK_USAGE)
    cost = _cost(settings.cost_basis)
    net_basis = settings.cost_basis in NET_COST_BASES
    on_demand = (
        "0"
        if net_basis  # a net basis already carries the private rate: the configured discount must not
        else "CASE WHEN line_item_line_item_type = 'Usage' AND line_item_usage_type NOT LIKE '%SpotUsage%' "
        "THEN line_item_unblended_cost ELSE 0 END"
    )
    network_cost = (
        "COALESCE(line_item_net_unblended_cost, line_item_unblended_cost)"
        if net_basis
        else "line_item_unblended_cost"
    )
    tags = "".join(
        f",\n  MAX({'CAST(NULL AS VARCHAR)' if key in absent else tag_column(key, version)}) AS tag_{i}"
        for i, key in enumerate(settings.tags)
    )
    return f"""SELECT
  line_item_resource_id AS resource,
  CAST(date_trunc('day', line_item_usage_start_date) AS DATE) AS usage_day,
  SUM(CASE WHEN {instance} THEN {cost} ELSE 0 END) AS cost,
  SUM(CASE WHEN {instance} AND line_item_line_item_type IN {_USAGE_TYPES}
      THEN line_item_usage_amount ELSE 0 END) AS hours,
  SUM(CASE WHEN {instance} AND line_item_line_item_type IN {_COVERED_TYPES}
      THEN line_item_usage_amount ELSE 0 END) AS covered_hours,
  SUM(CASE WHEN {instance} THEN {on_demand} ELSE 0 END) AS on_demand_cost,
  SUM(CASE WHEN {network} AND line_item_line_item_type = 'Usage' THEN {network_cost} ELSE 0 END)
      AS network_cost,
  MAX(line_item_usage_end_date) AS usage_end,
  MAX(line_item_currency_code) AS currency{tags}
FROM "{settings.database}"."{settings.table}"
WHERE {partitions}
  AND {_usage_between(start, end)}
  AND {ids}
GROUP BY 1, 2"""


def _usage_between(start: datetime, end: datetime) -> str:
    """The line items whose usage started in [start, end)."""
    return (
        f"line_item_usage_start_date >= TIMESTAMP '{start:%Y-%m-%d %H:%M:%S}'\n"
        f"  AND line_item_usage_start_date < TIMESTAMP '{end:%Y-%m-%d %H:%M:%S}'"
    )


def _partitions(version: str, start: datetime, end: datetime) -> str:
    """The partitions (billing periods) holding the usage of [start, end)."""
    months = sorted({(d.year, d.month) for d in _days(start, end)})
    if version == "2.0":
        periods = ", ".join(_quote(f"{y:04d}-{m:02d}") for y, m in months)
        return f"billing_period IN ({periods})"
    # legacy CUR: year='2024' AND month='6' (not zero-padded)
    return "(" + " OR ".join(f"(year = '{y}' AND month = '{m}')" for y, m in months) + ")"


def commitment_query(
    settings: AwsCurSettings, start: datetime, end: datetime, columns: Collection[str] | None = None
) -> str | None:
    """The query of the account's commitments in [start, end): per savings plan and UTC day its committed
    and used cost, per reserved instance its RIFee of each billing period the window touches and its used
    units per day. `columns` are a legacy table's (None: CUR 2.0, which has them all); a kind whose columns
    the table lacks is left out, and None is returned when both are."""

    def has(*names: str) -> bool:
        return columns is None or all(name in columns for name in names)

    net = settings.cost_basis in NET_COST_BASES
    partitions = _partitions(settings.cur_version, start, end)
    table = f'"{settings.database}"."{settings.table}"'
    window = _usage_between(start, end)
    day = "CAST(date_trunc('day', line_item_usage_start_date) AS DATE)"
    normalized = f"COALESCE({_NORMALIZED}, 0)" if has(_NORMALIZED) else "0"
    parts = []
    zero = "CAST(0 AS DOUBLE)"
    if has(*SAVINGS_PLAN_COLUMNS):
        committed, used = "savings_plan_total_commitment_to_date", "savings_plan_used_commitment"
        if net and has(*_NET_SAVINGS_PLAN):
            # no net twin of these two: the hour's net fees, and the used part scaled by the same discount
            net_fee = f"COALESCE({_NET_SAVINGS_PLAN[0]} + {_NET_SAVINGS_PLAN[1]}, {committed})"
            used = f"CASE WHEN {committed} > 0 THEN {used} * {net_fee} / {committed} ELSE 0 END"
            committed = net_fee
        parts.append(f"""SELECT 'sp' AS kind, savings_plan_savings_plan_a_r_n AS commitment,
  {day} AS usage_day, {zero} AS amount, {zero} AS normalized,
  SUM({committed}) AS committed, SUM({used}) AS used
FROM {table}
WHERE {partitions}
  AND {window}
  AND line_item_line_item_type = 'SavingsPlanRecurringFee'
GROUP BY 1, 2, 3""")
    if has(*RESERVATION_COLUMNS):
        fee, upfront = "line_item_unblended_cost", "reservation_amortized_upfront_fee_for_billing_period"
        if net and has(*_NET_RESERVATION):
            fee = f"COALESCE({_NET_RESERVATION[0]}, {fee})"
            upfront = f"COALESCE({_NET_RESERVATION[1]}, {upfront})"
        first = midnight(start.date().replace(day=1))  # a RIFee row starts on the 1st of its month
        parts.append(f"""SELECT 'ri_fee' AS kind, reservation_reservation_a_r_n AS commitment,
  CAST(date_trunc('month', line_item_usage_start_date) AS DATE) AS usage_day,
  SUM(line_item_usage_amount) AS amount, SUM({normalized}) AS normalized,
  SUM({fee} + COALESCE({upfront}, 0)) AS committed, {zero} AS used
FROM {table}
WHERE {partitions}
  AND {_usage_between(first, end)}
  AND line_item_line_item_type = 'RIFee'
GROUP BY 1, 2, 3""")
        parts.append(f"""SELECT 'ri_used' AS kind, reservation_reservation_a_r_n AS commitment,
  {day} AS usage_day, SUM(line_item_usage_amount) AS amount, SUM({normalized}) AS normalized,
  {zero} AS committed, {zero} AS used
FROM {table}
WHERE {partitions}
  AND {window}
  AND line_item_line_item_type = 'DiscountedUsage'
GROUP BY 1, 2, 3""")
    return "\nUNION ALL\n".join(parts) or None


def _days(start: datetime, end: datetime) -> Iterator[date]:
    day = start.date()
    while midnight(day) < end:
        yield day
        day += timedelta(days=1)


@register("aws.cur", settings=AwsCurSettings, extra="aws", sdk=("boto3",))
class AwsCurBilling(BillingSource[AwsCurSettings]):
    name = "aws_cur"
    provider = "aws"
    resource_kind = "EC2 instance id"
    reports_coverage = True
    reports_commitments = True

    def __init__(self, settings: AwsCurSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        from botocore.config import Config as BotoConfig

        self._client = whole_answers(
            aws_session(min(60.0, settings.timeout_seconds), context.sdk_verify()).create_client(
                "athena",
                region_name=settings.region,
                endpoint_url=settings.endpoint_url or None,
                config=BotoConfig(
                    connect_timeout=min(60.0, settings.timeout_seconds),
                    read_timeout=min(60.0, settings.timeout_seconds),
                    retries={"total_max_attempts": 1},
                    user_agent_extra="node-cost-exporter",
                ),
            )
        )
        self._said_absent: set[str] = set()  # legacy tag columns already logged as missing
        self._columns: set[str] | None = None  # a legacy table's columns, as this refresh's query found them

    def resource(self, node: Node) -> str | None:
        instance = node.ref.instance_id
        return instance if node.provider == "aws" and instance.startswith("i-") else None

    def where(self) -> str:
        return f"Athena table {self.settings.database}.{self.settings.table} in {self.settings.region}"

    def query(self, resources: Sequence[str], start: datetime, end: datetime) -> Iterator[BillRow]:
        absent: set[str] = set()
        if self.settings.cur_version == "legacy":
            self._columns = self._table_columns()
            absent = self._absent_tags(self._columns)
        execution = self._start(cur_query(self.settings, resources, start, end, absent))
        for values in self._records(execution):
            row = self._row(values)
            if row is not None:
                yield row

    def commitment_days(self, start: datetime, end: datetime) -> Iterator[CommitmentDay]:
        """Each savings plan's and reserved instance's committed and used cost per UTC day (module doc)."""
        columns = None
        if self.settings.cur_version == "legacy":
            columns = self._columns if self._columns is not None else self._table_columns()
            self._columns = None  # the next refresh asks the table again: a first RI adds its columns
        sql = commitment_query(self.settings, start, end, columns)
        if sql is None:
            return
        fees: dict[str, list[tuple[date, float, float, float]]] = {}  # RI → (month, hours, units, cost)
        used: dict[tuple[str, date], tuple[float, float]] = {}  # (RI, day) → (hours, units)
        for values in self._records(self._start(sql)):
            commitment = values.get("commitment") or ""
            try:
                kind, day = values.get("kind"), date.fromisoformat(str(values["usage_day"]))
                amount, normalized = float(values["amount"] or 0), float(values["normalized"] or 0)
                committed, spent = float(values["committed"] or 0), float(values["used"] or 0)
            except (KeyError, ValueError, TypeError) as err:
                self.invalid_row(commitment or "?", f"unreadable CUR commitment row {values}: {err}")
                continue
            if not commitment:
                continue
            if kind == "sp":
                yield CommitmentDay(commitment, day, committed, spent)
            elif kind == "ri_fee":
                fees.setdefault(commitment, []).append((day, amount, normalized, committed))
            else:
                used[commitment, day] = (amount, normalized)
        for commitment, months in fees.items():
            for month, hours, units, cost in months:
                yield from _reservation_days(commitment, month, hours, units, cost, used, start, end)

    def _table_columns(self) -> set[str]:
        """A legacy CUR table's columns: they vary with what the account has (tags activated as cost
        allocation tags, reservations, savings plans), and one missing column would fail the whole query.
        They are asked first (`LIMIT 0`: no data read, the main query's permissions)."""
        execution = self._start(f'SELECT * FROM "{self.settings.database}"."{self.settings.table}" LIMIT 0')
        page = self._call("get_query_results", QueryExecutionId=execution, MaxResults=1)
        info = page.get("ResultSet", {}).get("ResultSetMetadata", {}).get("ColumnInfo")
        if not isinstance(info, list):
            raise FetchError(Reason.BAD_RESPONSE, f"Athena results of {execution} have no ColumnInfo")
        return {str(column.get("Name", "")).lower() for column in info}

    def _absent_tags(self, columns: set[str]) -> set[str]:
        """The allowlisted tags a legacy CUR table has no column for (read as empty), each said once."""
        absent = {key for key in self.settings.tags if f"resource_tags_{tag_name(key)}" not in columns}
        for key in sorted(absent - self._said_absent):
            self.log.warning(
                "%s has no column resource_tags_%s: tag %r is read as empty until it is activated as a cost "
                "allocation tag and the CUR carries it",
                self.where(),
                tag_name(key),
                key,
            )
        self._said_absent = absent
        return absent

    # -- Athena ---------------------------------------------------------------------------------------

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        action = "athena:" + "".join(p.title() for p in operation.split("_"))
        try:
            response: dict[str, Any] = getattr(self._client, operation)(**params)
        except Exception as err:
            failure = _fetch_error(
                err, action, self._client.meta.endpoint_url, self.settings.timeout_seconds, self.clock.time()
            )
            if failure is None:
                raise
            if failure.reason is Reason.PERMISSION:
                failure = FetchError(
                    Reason.PERMISSION, f"{failure.detail}; the exporter's role needs {_ACTIONS}"
                )
            raise failure from err
        return response

    def _field(self, operation: str, key: str, **params: Any) -> Any:
        """One field of an Athena answer; an answer without it (a garbled body botocore still parsed) is a
        bad response, not a KeyError escaping the refresh."""
        value = self._call(operation, **params).get(key)
        if value is None:
            raise FetchError(Reason.BAD_RESPONSE, f"{self.where()}: Athena's {operation} answer has no {key}")
        return value

    def _start(self, sql: str) -> str:
        params: dict[str, Any] = {
            "QueryString": sql,
            "QueryExecutionContext": {"Database": self.settings.database},
            "WorkGroup": self.settings.workgroup,
        }
        if self.settings.output_location:
            params["ResultConfiguration"] = {"OutputLocation": self.settings.output_location}
        execution = str(self._field("start_query_execution", "QueryExecutionId", **params))
        deadline = self.clock.monotonic() + self.settings.timeout_seconds
        while True:
            info = self._field("get_query_execution", "QueryExecution", QueryExecutionId=execution)
            status = info.get("Status", {})
            state = status.get("State")
            if state in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            if self.clock.monotonic() > deadline:
                self._call("stop_query_execution", QueryExecutionId=execution)
                raise FetchError(
                    Reason.TIMEOUT,
                    f"Athena query {execution} still {state} after {self.settings.timeout_seconds:g}s; "
                    "cancelled it (raise aws.cur.timeout_seconds, or check the workgroup's capacity)",
                )
            self.clock.sleep(self.settings.poll_interval_seconds)
        self.scanned_bytes += int(info.get("Statistics", {}).get("DataScannedInBytes") or 0)
        if state != "SUCCEEDED":
            raise _query_failure(execution, status, self.where())
        return execution

    def _records(self, execution: str) -> Iterator[dict[str, str | None]]:
        """The result rows of a query, by column name, page after page."""
        params: dict[str, Any] = {"QueryExecutionId": execution, "MaxResults": 1000}
        columns: list[str] | None = None
        seen: set[str] = set()
        while True:
            page = self._call("get_query_results", **params)
            rows = page.get("ResultSet", {}).get("Rows")
            if not isinstance(rows, list):
                raise FetchError(Reason.BAD_RESPONSE, f"Athena results of {execution} have no ResultSet.Rows")
            for raw in rows:
                values = [cell.get("VarCharValue") for cell in raw.get("Data", [])]
                if columns is None:  # the first row of the first page is the header
                    columns = [str(v) for v in values]
                    continue
                yield dict(zip(columns, values, strict=False))
            token = page.get("NextToken")
            if not token:
                return
            if token in seen:
                raise FetchError(Reason.BAD_RESPONSE, "Athena repeated a NextToken; stopped paging")
            seen.add(token)
            params["NextToken"] = token

    def _row(self, values: dict[str, str | None]) -> BillRow | None:
        resource = values.get("resource") or ""
        try:
            tags = tuple(
                (key, value) for i, key in enumerate(self.settings.tags) if (value := values.get(f"tag_{i}"))
            )
            return BillRow(
                resource,
                date.fromisoformat(str(values["usage_day"])),
                _timestamp(str(values["usage_end"])),
                float(values["cost"] or 0),
                float(values["hours"] or 0),
                float(values["on_demand_cost"] or 0),
                float(values["network_cost"] or 0),
                values.get("currency") or "",
                tags,
                float(values["covered_hours"] or 0),
            )
        except (KeyError, ValueError, TypeError) as err:
            self.invalid_row(resource or "?", f"unreadable CUR row {values}: {err}")
            return None


def _reservation_days(
    commitment: str,
    month: date,
    hours: float,
    units: float,
    cost: float,
    used: dict[tuple[str, date], tuple[float, float]],
    start: datetime,
    end: datetime,
) -> Iterator[CommitmentDay]:
    """A reserved instance's days of one month in [start, end), from its RIFee row of that month: each day
    costs a day of the fee, and its used part is the day's covered units (at most the RI's size) at the
    RI's rate. Normalized units where the RIFee row has them, instance-hours otherwise."""
    normalized = units > 0
    bought = units if normalized else hours
    if bought <= 0:
        return
    days_in_month = calendar.monthrange(month.year, month.month)[1]
    size = bought / (24 * days_in_month)  # units (instances, or normalized units) reserved each hour
    rate = cost / bought  # per unit-hour
    for offset in range(days_in_month):
        day = month + timedelta(days=offset)
        if not start <= midnight(day) < end:
            continue
        hours_used, units_used = used.get((commitment, day), (0.0, 0.0))
        covered = min(units_used if normalized else hours_used, size * 24)
        yield CommitmentDay(commitment, day, size * 24 * rate, covered * rate)


def _timestamp(text: str) -> datetime:
    """Athena's timestamp text ("2024-06-01 00:00:00.000") as UTC: CUR times are UTC."""
    return datetime.fromisoformat(text.replace("T", " ").rstrip("Z")).replace(tzinfo=UTC)


def _query_failure(execution: str, status: dict[str, Any], where: str) -> FetchError:
    said = str(status.get("StateChangeReason") or status.get("AthenaError", {}).get("ErrorMessage") or "")
    text = said.upper()
    if "TABLE_NOT_FOUND" in text or "SCHEMA_NOT_FOUND" in text or "DOES NOT EXIST" in text:
        return FetchError(Reason.NOT_FOUND, f"{where}: {said} (check aws.cur.database and aws.cur.table)")
    if "COLUMN_NOT_FOUND" in text or "CANNOT BE RESOLVED" in text:
        return FetchError(
            Reason.CONFIG,
            f"{where}: {said} (check aws.cur.cur_version; net cost bases need the *_net_* columns, which "
            "exist only for accounts with discounts; a tag needs activating as a cost allocation tag)",
        )
    if "ACCESS DENIED" in text or "ACCESSDENIED" in text or "PERMISSION" in text:
        return FetchError(Reason.PERMISSION, f"{where}: {said}; the exporter's role needs {_ACTIONS}")
    if "THROTTL" in text or "RATE EXCEEDED" in text or "TOO MANY" in text:
        return FetchError(Reason.THROTTLED, f"Athena query {execution} failed: {said}")
    if status.get("AthenaError", {}).get("Retryable"):
        return FetchError(Reason.UNAVAILABLE, f"Athena query {execution} failed: {said}")
    return FetchError(Reason.BAD_RESPONSE, f"Athena query {execution} failed: {said}")
