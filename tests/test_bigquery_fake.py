"""The BigQuery fake (fakes/bigquery_api.py), driven by the real google-cloud-bigquery client.

These pin what the billing code will rely on: the fake executes the GoogleSQL it is sent (the sums below are
recomputed independently in Python), binds typed parameters, pages, encodes cells as the REST API does, and
fails the way BigQuery fails, with the exceptions the client raises for each failure.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import json
import re
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth import credentials as ga_credentials
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_JOB_RETRY

from fakes.bigquery_api import BILLING_COLUMNS, MIB, FakeBigQuery

PROJECT = "billing-proj"
TABLE = f"{PROJECT}.billing_export.gcp_billing_export_resource_v1_010101_ABCDEF_123456"
API = f"/bigquery/v2/projects/{PROJECT}"
UTC = dt.UTC
START = dt.datetime(2024, 6, 1, tzinfo=UTC)
CREDIT_TYPES = ["SUSTAINED_USAGE_DISCOUNT", "COMMITTED_USAGE_DISCOUNT"]
FAST_RETRY = bigquery.DEFAULT_RETRY.with_delay(initial=0.01, maximum=0.05)


# vm → (project, zone, team label or None)
VMS = {
    "gke-a-pool-1": ("proj-a", "us-central1-a", "data"),
    "gke-a-pool-2": ("proj-a", "us-central1-b", "data"),
    "gke-b-pool-1": ("proj-b", "europe-west1-b", None),
    "gke-b-pool-2": ("proj-b", "europe-west1-b", "web"),
    "gke-c-pool-1": ("proj-c", "us-east1-c", "ops"),  # left out of @vms
}
WANTED_VMS = ["gke-a-pool-1", "gke-a-pool-2", "gke-b-pool-1", "gke-b-pool-2"]

AGGREGATE_SQL = f"""
SELECT
  project.id AS project_id,
  location.zone AS zone,
  resource.name AS vm,
  DATE(usage_start_time) AS day,
  MIN(usage_start_time) AS first_usage,
  SUM(cost) AS cost,
  SUM(IFNULL(
    (SELECT SUM(c.amount) FROM UNNEST(credits) AS c WHERE c.type IN UNNEST(@credit_types)), 0
  )) AS credits,
  ANY_VALUE((SELECT l.value FROM UNNEST(labels) AS l WHERE l.key = 'team')) AS team,
  COUNT(*) AS line_items
FROM `{TABLE}`
WHERE _PARTITIONTIME >= @start
  AND service.description = 'Compute Engine'
  AND resource.name IN UNNEST(@vms)
GROUP BY project.id, location.zone, resource.name, DATE(usage_start_time)
ORDER BY vm, day
"""


def billing_rows() -> list[list[Any]]:
    """Line items for 5 VMs over 3 days (the first before the partition filter), hourly, two SKUs per hour,
    credits of three types (one not asked for) on some lines, and a few non-Compute lines."""
    rows: list[list[Any]] = []
    for v, (vm, (project, zone, team)) in enumerate(VMS.items()):
        for day in (dt.date(2024, 5, 31), dt.date(2024, 6, 1), dt.date(2024, 6, 2)):
            for hour in range(0, 24, 3):
                start = dt.datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
                for s, (sku, unit_cost) in enumerate(
                    (("N2 Instance Core", 0.031611), ("N2 Instance Ram", 0.004237))
                ):
                    cost = round(unit_cost * (4 + v) * (1 + hour / 24), 6)
                    credits = []
                    if hour % 2 == 0:
                        credits.append(_credit("SUSTAINED_USAGE_DISCOUNT", -round(cost * 0.2, 6)))
                    if hour % 3 == 0 and s == 0:
                        credits.append(_credit("COMMITTED_USAGE_DISCOUNT", -round(cost * 0.37, 6)))
                    if hour == 9:
                        credits.append(_credit("PROMOTION", -0.5))
                    rows.append(
                        _line(
                            vm, project, zone, team, start, "Compute Engine", f"{sku} running", cost, credits
                        )
                    )
            # one Cloud Storage line a day per VM's project, filtered out by the service condition
            storage_start = dt.datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
            rows.append(
                _line(vm, project, zone, team, storage_start, "Cloud Storage", "Standard Storage", 1.0, [])
            )
    return rows


def _credit(kind: str, amount: float) -> dict[str, Any]:
    return {"name": kind.title(), "amount": amount, "full_name": kind, "id": kind[:3], "type": kind}


def _line(
    vm: str,
    project: str,
    zone: str,
    team: str | None,
    start: dt.datetime,
    service: str,
    sku: str,
    cost: float,
    credits: list[dict[str, Any]],
) -> list[Any]:
    labels = [{"key": "env", "value": "prod"}] + ([{"key": "team", "value": team}] if team else [])
    return [
        "010101-ABCDEF-123456",
        {"id": "6F81-5844-456A" if service == "Compute Engine" else "95FF-2EF5-5EA1", "description": service},
        {"id": sku[:4], "description": sku},
        start,
        start + dt.timedelta(hours=1),
        {"id": project, "number": str(100_000_000_000 + ord(project[-1])), "name": project.upper()},
        labels,
        [{"key": "compute.googleapis.com/machine_spec", "value": "n2-standard-4"}],
        {"location": zone[:-2], "country": "US", "region": zone[:-2], "zone": zone},
        {
            "name": vm,
            "global_name": f"//compute.googleapis.com/projects/{project}/zones/{zone}/instances/{vm}",
        },
        start + dt.timedelta(hours=6),
        cost,
        "USD",
        1.0,
        {"amount": 3600.0, "unit": "seconds", "amount_in_pricing_units": 1.0, "pricing_unit": "hour"},
        credits,
        {"month": start.strftime("%Y%m")},
        "regular",
        None,  # consumption_model
        dt.datetime(start.year, start.month, start.day),  # _PARTITIONTIME: the day, naive UTC
    ]


def expected_aggregate(rows: list[list[Any]]) -> dict[tuple[str, str, str, dt.date], dict[str, Any]]:
    """AGGREGATE_SQL computed in Python."""
    names = [name for name, _ in BILLING_COLUMNS]
    groups: dict[tuple[str, str, str, dt.date], dict[str, Any]] = defaultdict(
        lambda: {"cost": 0.0, "credits": 0.0, "line_items": 0, "first_usage": None, "team": None}
    )
    for values in rows:
        row = dict(zip(names, values, strict=True))
        if row["_PARTITIONTIME"] < START.replace(tzinfo=None):
            continue
        if row["service"]["description"] != "Compute Engine" or row["resource"]["name"] not in WANTED_VMS:
            continue
        key = (
            row["project"]["id"],
            row["location"]["zone"],
            row["resource"]["name"],
            row["usage_start_time"].date(),
        )
        group = groups[key]
        group["cost"] += row["cost"]
        group["credits"] += sum(c["amount"] for c in row["credits"] if c["type"] in CREDIT_TYPES)
        group["line_items"] += 1
        if group["first_usage"] is None or row["usage_start_time"] < group["first_usage"]:
            group["first_usage"] = row["usage_start_time"]
        group["team"] = next((label["value"] for label in row["labels"] if label["key"] == "team"), None)
    return dict(groups)


def aggregate_config() -> bigquery.QueryJobConfig:
    return bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("start", "TIMESTAMP", START),
            bigquery.ArrayQueryParameter("credit_types", "STRING", CREDIT_TYPES),
            bigquery.ArrayQueryParameter("vms", "STRING", WANTED_VMS),
        ],
        labels={"component": "node-cost-exporter"},
    )


def make_client(fake: FakeBigQuery) -> bigquery.Client:
    return bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=fake.url),
    )


@pytest.fixture
def fake() -> Iterator[FakeBigQuery]:
    with FakeBigQuery(page_size=3) as server:
        server.create_table(TABLE, BILLING_COLUMNS, billing_rows())
        yield server


@pytest.fixture
def client(fake: FakeBigQuery) -> bigquery.Client:
    return make_client(fake)


def check_aggregate(rows: list[bigquery.Row]) -> None:
    expected = expected_aggregate(billing_rows())
    assert len(expected) == 8  # 4 VMs x 2 days: proj-c's VM and May 31st are filtered out
    got = {(r["project_id"], r["zone"], r["vm"], r["day"]): r for r in rows}
    assert len(got) == len(rows) == len(expected), "every group exactly once"
    assert set(got) == set(expected)
    for key, want in expected.items():
        row = got[key]
        assert row["cost"] == pytest.approx(want["cost"], abs=1e-9)
        assert row["credits"] == pytest.approx(want["credits"], abs=1e-9)
        assert row["credits"] < 0
        assert row["line_items"] == want["line_items"] == 16
        assert row["first_usage"] == want["first_usage"]
        assert row["team"] == want["team"]
    sample = got[("proj-b", "europe-west1-b", "gke-b-pool-1", dt.date(2024, 6, 2))]
    assert isinstance(sample["day"], dt.date) and not isinstance(sample["day"], dt.datetime)
    assert sample["first_usage"] == dt.datetime(2024, 6, 2, tzinfo=UTC)
    assert sample["first_usage"].tzinfo is not None
    assert sample["team"] is None  # no team label: the scalar subquery is NULL
    assert isinstance(sample["line_items"], int) and isinstance(sample["cost"], float)


def test_parameterised_aggregate_through_jobs_insert_pages(
    fake: FakeBigQuery, client: bigquery.Client
) -> None:
    job = client.query(AGGREGATE_SQL, job_config=aggregate_config())
    iterator = job.result(page_size=50)  # the fake caps pages at 3 rows whatever the client asks
    pages = [list(page) for page in iterator.pages]
    assert [len(page) for page in pages] == [3, 3, 2]
    assert iterator.total_rows == 8
    check_aggregate([row for page in pages for row in page])
    assert [f.name for f in iterator.schema] == [
        "project_id",
        "zone",
        "vm",
        "day",
        "first_usage",
        "cost",
        "credits",
        "team",
        "line_items",
    ]
    assert [f.field_type for f in iterator.schema][3:6] == ["DATE", "TIMESTAMP", "FLOAT"]
    # the GROUP BY ... ORDER BY vm, day order survives paging
    assert [(r["vm"], r["day"].day) for page in pages for r in page][:3] == [
        ("gke-a-pool-1", 1),
        ("gke-a-pool-1", 2),
        ("gke-a-pool-2", 1),
    ]
    # what the client asked for, in order (polls_before_done=1: the first jobs.get sees RUNNING)
    job_path = f"{API}/jobs/{job.job_id}"
    results_path = f"{API}/queries/{job.job_id}"
    assert fake.calls == [
        f"POST {API}/jobs",
        f"GET {job_path}",
        f"GET {results_path}",  # waits, and brings the first page (maxResults=3 of the 50 asked)
        f"GET {job_path}",  # DONE
        f"GET {results_path}",  # pageToken → page 2
        f"GET {results_path}",  # pageToken → page 3
    ]
    submitted = fake.jobs[-1]
    assert submitted["api"] == "jobs.insert" and submitted["jobId"] == job.job_id
    assert submitted["useLegacySql"] is False
    assert submitted["labels"] == {"component": "node-cost-exporter"}
    assert {p["name"] for p in submitted["queryParameters"]} == {"start", "credit_types", "vms"}
    assert "duckdbSql" in submitted


def test_query_and_wait_same_answer_through_jobs_query(fake: FakeBigQuery, client: bigquery.Client) -> None:
    fake.polls_before_done = 0  # finished within jobs.query: the first page comes inline
    rows = list(client.query_and_wait(AGGREGATE_SQL, job_config=aggregate_config(), page_size=3))
    check_aggregate(rows)
    assert fake.calls[0] == f"POST {API}/queries"
    assert fake.jobs[-1]["api"] == "jobs.query"
    job_id = fake.jobs[-1]["jobId"]
    assert fake.calls.count(f"GET {API}/queries/{job_id}") == 2  # pages 2 and 3


def test_query_and_wait_when_the_job_outlives_jobs_query(fake: FakeBigQuery, client: bigquery.Client) -> None:
    fake.polls_before_done = 2
    rows = list(client.query_and_wait(AGGREGATE_SQL, job_config=aggregate_config()))
    check_aggregate(rows)
    job_id = fake.jobs[-1]["jobId"]
    assert fake.calls[:2] == [f"POST {API}/queries", f"GET {API}/jobs/{job_id}"]


def _compute(rows: list[list[Any]]) -> list[dict[str, Any]]:
    names = [name for name, _ in BILLING_COLUMNS]
    return [dict(zip(names, values, strict=True)) for values in rows]


def _credit_sum(row: dict[str, Any]) -> float:
    return sum(c["amount"] for c in row["credits"] if c["type"] in CREDIT_TYPES)


def _since_start(row: dict[str, Any]) -> bool:
    return bool(row["_PARTITIONTIME"] >= START.replace(tzinfo=None))


START_PARAM = bigquery.ScalarQueryParameter("start", "TIMESTAMP", START)
TYPES_PARAM = bigquery.ArrayQueryParameter("credit_types", "STRING", CREDIT_TYPES)
DATASET = f"{PROJECT}.billing_export"

# GoogleSQL forms a billing query may take, each with its answer computed in Python: (SQL returning one
# value `x`, parameters, expected x).
SQL_FORMS = {
    "unaliased UNNEST(credits), fields as columns": (
        f"SELECT SUM((SELECT SUM(amount) FROM UNNEST(credits) WHERE type IN UNNEST(@credit_types))) AS x "
        f"FROM `{TABLE}`",
        [TYPES_PARAM],
        lambda rows: sum(_credit_sum(r) for r in rows),
    ),
    "comma join UNNEST(credits) AS c": (
        f"SELECT SUM(c.amount) AS x FROM `{TABLE}` AS b, UNNEST(b.credits) AS c "
        "WHERE c.type IN UNNEST(@credit_types) AND b._PARTITIONTIME >= @start",
        [TYPES_PARAM, START_PARAM],
        lambda rows: sum(_credit_sum(r) for r in rows if _since_start(r)),
    ),
    "LEFT JOIN UNNEST keeps lines without credits": (
        f"SELECT COUNT(*) AS x FROM `{TABLE}` LEFT JOIN UNNEST(credits) AS c",
        [],
        lambda rows: sum(max(1, len(r["credits"])) for r in rows),
    ),
    "unaliased UNNEST(labels) label lookup": (
        f"SELECT COUNTIF((SELECT value FROM UNNEST(labels) WHERE key = 'team') = 'data') AS x FROM `{TABLE}`",
        [],
        lambda rows: sum(1 for r in rows if {"key": "team", "value": "data"} in r["labels"]),
    ),
    "_PARTITIONDATE": (
        f"SELECT COUNT(*) AS x FROM `{TABLE}` WHERE _PARTITIONDATE >= DATE(@start)",
        [START_PARAM],
        lambda rows: sum(1 for r in rows if _since_start(r)),
    ),
    "TIMESTAMP_TRUNC to the hour": (
        f"SELECT COUNT(DISTINCT TIMESTAMP_TRUNC(usage_start_time, HOUR)) AS x FROM `{TABLE}`",
        [],
        lambda rows: len({r["usage_start_time"] for r in rows}),
    ),
    "wildcard table and _TABLE_SUFFIX": (
        f"SELECT COUNT(*) AS x FROM `{DATASET}.gcp_billing_export_resource_v1_*` "
        "WHERE _TABLE_SUFFIX = '010101_ABCDEF_123456'",
        [],
        len,
    ),
    "positional parameters": (
        f"SELECT SUM(cost) AS x FROM `{TABLE}` WHERE _PARTITIONTIME >= ? AND resource.name IN UNNEST(?)",
        [
            bigquery.ScalarQueryParameter(None, "TIMESTAMP", START),
            bigquery.ArrayQueryParameter(None, "STRING", ["gke-a-pool-1"]),
        ],
        lambda rows: sum(
            r["cost"] for r in rows if _since_start(r) and r["resource"]["name"] == "gke-a-pool-1"
        ),
    ),
    "unquoted project-with-dash.dataset.table": (
        f"SELECT COUNT(*) AS x FROM {TABLE}",
        [],
        len,
    ),
}


@pytest.mark.parametrize("form", SQL_FORMS)
def test_sql_forms(client: bigquery.Client, form: str) -> None:
    sql, parameters, expected = SQL_FORMS[form]
    config = bigquery.QueryJobConfig(query_parameters=parameters)
    rows = list(client.query_and_wait(sql, job_config=config))
    assert len(rows) == 1
    assert rows[0]["x"] == pytest.approx(expected(_compute(billing_rows())), abs=1e-9)


def test_two_part_name_needs_a_default_dataset(client: bigquery.Client) -> None:
    sql = "SELECT COUNT(*) AS n FROM billing_export.gcp_billing_export_resource_v1_010101_ABCDEF_123456"
    assert next(iter(client.query_and_wait(sql)))["n"] == len(billing_rows())
    config = bigquery.QueryJobConfig(default_dataset=DATASET)
    one_part = "SELECT COUNT(*) AS n FROM gcp_billing_export_resource_v1_010101_ABCDEF_123456"
    assert next(iter(client.query_and_wait(one_part, job_config=config)))["n"] == len(billing_rows())
    with pytest.raises(exceptions.BadRequest, match="must be qualified with a dataset"):
        client.query_and_wait(one_part)


def test_paging_returns_every_row_once(fake: FakeBigQuery, client: bigquery.Client) -> None:
    fake.create_table(
        f"{PROJECT}.scratch.numbers",
        [("n", "BIGINT"), ("at", "TIMESTAMP"), ("note", "VARCHAR")],
        [
            [i, dt.datetime(2024, 6, 1, tzinfo=UTC) + dt.timedelta(minutes=i), None if i % 4 else f"#{i}"]
            for i in range(23)
        ],
    )
    job = client.query(
        f"SELECT n, at, note FROM `{PROJECT}.scratch.numbers` WHERE n >= @low ORDER BY n",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("low", "INT64", 2)]
        ),
    )
    iterator = job.result(page_size=2)
    pages = [list(page) for page in iterator.pages]
    assert len(pages) == 11 and {len(p) for p in pages[:-1]} == {2}
    rows = [row for page in pages for row in page]
    assert [r["n"] for r in rows] == list(range(2, 23))
    assert rows[0]["at"] == dt.datetime(2024, 6, 1, 0, 2, tzinfo=UTC)
    assert [r["note"] for r in rows[:3]] == [None, None, "#4"]
    # max_results stops the client early
    assert [
        r["n"]
        for r in client.query_and_wait(
            "SELECT n FROM `billing-proj.scratch.numbers` ORDER BY n", max_results=5
        )
    ] == [0, 1, 2, 3, 4]


def raw_results(fake: FakeBigQuery, job_id: str, query: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{fake.url}{API}/queries/{job_id}?{query}") as response:
        data: dict[str, Any] = json.load(response)
    return data


def test_cells_are_encoded_like_the_rest_api(fake: FakeBigQuery, client: bigquery.Client) -> None:
    fake.create_table(
        f"{PROJECT}.scratch.typed",
        [
            ("ts", "TIMESTAMP"),
            ("d", "DATE"),
            ("f", "DOUBLE"),
            ("n", "BIGINT"),
            ("s", "VARCHAR"),
            ("arr", "VARCHAR[]"),
            ("st", "STRUCT(a BIGINT, b VARCHAR)"),
            ("ok", "BOOLEAN"),
            ("num", "DECIMAL(38, 9)"),
        ],
        [
            [
                dt.datetime(2024, 6, 1, 0, 0, 0, 123456, tzinfo=UTC),
                dt.date(2024, 6, 1),
                0.25,
                7,
                None,
                ["x", "y"],
                {"a": 1, "b": None},
                True,
                Decimal("1.5"),
            ],
            [None, None, None, None, "z", [], None, None, None],
        ],
    )
    job = client.query(f"SELECT * FROM `{PROJECT}.scratch.typed` ORDER BY n NULLS LAST")
    rows = list(job.result())
    assert tuple(rows[0].values()) == (
        dt.datetime(2024, 6, 1, 0, 0, 0, 123456, tzinfo=UTC),
        dt.date(2024, 6, 1),
        0.25,
        7,
        None,
        ["x", "y"],
        {"a": 1, "b": None},
        True,
        Decimal("1.5"),
    )
    assert tuple(rows[1].values()) == (None, None, None, None, "z", [], None, None, None)

    body = raw_results(fake, job.job_id, "maxResults=10&formatOptions.useInt64Timestamp=true")
    assert body["totalRows"] == "2" and body["jobComplete"] is True and "pageToken" not in body
    assert body["schema"]["fields"] == [
        {"name": "ts", "type": "TIMESTAMP", "mode": "NULLABLE"},
        {"name": "d", "type": "DATE", "mode": "NULLABLE"},
        {"name": "f", "type": "FLOAT", "mode": "NULLABLE"},
        {"name": "n", "type": "INTEGER", "mode": "NULLABLE"},
        {"name": "s", "type": "STRING", "mode": "NULLABLE"},
        {"name": "arr", "type": "STRING", "mode": "REPEATED"},
        {
            "name": "st",
            "type": "RECORD",
            "mode": "NULLABLE",
            "fields": [
                {"name": "a", "type": "INTEGER", "mode": "NULLABLE"},
                {"name": "b", "type": "STRING", "mode": "NULLABLE"},
            ],
        },
        {"name": "ok", "type": "BOOLEAN", "mode": "NULLABLE"},
        {"name": "num", "type": "NUMERIC", "mode": "NULLABLE"},
    ]
    assert body["rows"][0] == {
        "f": [
            {"v": "1717200000123456"},
            {"v": "2024-06-01"},
            {"v": "0.25"},
            {"v": "7"},
            {"v": None},
            {"v": [{"v": "x"}, {"v": "y"}]},
            {"v": {"f": [{"v": "1"}, {"v": None}]}},
            {"v": "true"},
            {"v": "1.5"},
        ]
    }
    assert body["rows"][1]["f"][5] == {"v": []}
    legacy = raw_results(fake, job.job_id, "maxResults=1")
    assert legacy["rows"][0]["f"][0] == {"v": "1.717200000123456E9"}
    assert legacy["pageToken"]
    assert raw_results(fake, job.job_id, "maxResults=0").get("rows") is None


def test_missing_table_is_not_found(fake: FakeBigQuery, client: bigquery.Client) -> None:
    missing = f"{PROJECT}.billing_export.gcp_billing_export_resource_v1_X"
    job = client.query(f"SELECT cost FROM `{missing}`")
    message = f"Not found: Table {PROJECT}:billing_export.gcp_billing_export_resource_v1_X was not found in "
    message += "location US"
    with pytest.raises(exceptions.NotFound, match=re.escape(message)):
        job.result()
    assert fake.job(job.job_id)["status"]["errorResult"] == {"reason": "notFound", "message": message}
    with pytest.raises(exceptions.NotFound, match="Not found: Dataset billing-proj:elsewhere"):
        client.query_and_wait(f"SELECT cost FROM `{PROJECT}.elsewhere.t`")
    assert fake.bytes_billed_total == 0  # failed jobs bill nothing


def test_invalid_query_is_bad_request(client: bigquery.Client) -> None:
    with pytest.raises(exceptions.BadRequest, match="Syntax error"):
        client.query(f"SELEC cost FROM `{TABLE}`").result()
    with pytest.raises(exceptions.BadRequest, match="no_such_column"):
        client.query_and_wait(f"SELECT no_such_column FROM `{TABLE}`")
    with pytest.raises(exceptions.BadRequest, match="Query parameter 'start' not found"):
        client.query_and_wait(f"SELECT cost FROM `{TABLE}` WHERE _PARTITIONTIME >= @start")


def test_access_denied_is_forbidden(fake: FakeBigQuery, client: bigquery.Client) -> None:
    fake.fail_next("accessDenied")
    with pytest.raises(exceptions.Forbidden, match=r"bigquery\.jobs\.create permission") as raised:
        client.query(f"SELECT cost FROM `{TABLE}`")
    assert raised.value.errors[0]["reason"] == "accessDenied"
    fake.fail_next("accessDenied", on="results")
    denied = "User does not have permission to query table billing-proj:billing_export."
    with pytest.raises(exceptions.Forbidden, match=re.escape(denied)):
        client.query(f"SELECT cost FROM `{TABLE}`").result()


def test_rate_limit_is_a_403_the_client_retries(fake: FakeBigQuery, client: bigquery.Client) -> None:
    fake.fail_next("rateLimitExceeded")
    with pytest.raises(exceptions.Forbidden, match="Exceeded rate limits") as raised:
        client.query(f"SELECT cost FROM `{TABLE}`", retry=None, job_retry=None)
    assert raised.value.code == 403
    assert raised.value.errors == [
        {"message": raised.value.errors[0]["message"], "domain": "global", "reason": "rateLimitExceeded"}
    ]
    fake.requests.clear()
    fake.fail_next("rateLimitExceeded", count=2)
    rows = list(client.query_and_wait(f"SELECT COUNT(*) AS n FROM `{TABLE}`", retry=FAST_RETRY))
    assert rows[0]["n"] == len(billing_rows())
    assert fake.calls.count(f"POST {API}/queries") == 3  # two rate-limited, then accepted
    fake.fail_next("quotaExceeded")
    with pytest.raises(exceptions.Forbidden, match="Quota exceeded"):
        client.query_and_wait(f"SELECT 1 FROM `{TABLE}`")


class RefreshingCredentials(ga_credentials.Credentials):
    """Credentials that count google-auth's refreshes (it refreshes, then retries, on a 401)."""

    def __init__(self) -> None:
        super().__init__()
        self.token = "token-0"
        self.refreshes = 0

    def refresh(self, request: object) -> None:
        self.refreshes += 1
        self.token = f"token-{self.refreshes}"


def test_unauthorized_refreshes_the_credentials_then_raises(fake: FakeBigQuery) -> None:
    credentials = RefreshingCredentials()
    client = bigquery.Client(
        project=PROJECT, credentials=credentials, client_options=ClientOptions(api_endpoint=fake.url)
    )
    fake.fail_next("unauthorized")
    assert next(iter(client.query_and_wait(f"SELECT COUNT(*) AS n FROM `{TABLE}`")))["n"] == len(
        billing_rows()
    )
    assert credentials.refreshes == 1
    fake.fail_next("unauthorized", count=3)  # google-auth refreshes twice at most
    with pytest.raises(exceptions.Unauthorized, match="invalid authentication credentials") as raised:
        client.query_and_wait(f"SELECT COUNT(*) AS n FROM `{TABLE}`")
    assert raised.value.errors[0]["reason"] == "authError"
    assert credentials.refreshes == 3


def test_slow_answers_time_out(fake: FakeBigQuery, client: bigquery.Client) -> None:
    job = client.query(f"SELECT cost FROM `{TABLE}`")
    fake.delay_seconds = 2.0
    began = time.monotonic()
    with pytest.raises(concurrent.futures.TimeoutError):  # the client's translation of requests' Timeout
        job.result(timeout=0.1, retry=None, job_retry=None)
    with pytest.raises(requests.exceptions.Timeout):
        client.query_and_wait(f"SELECT cost FROM `{TABLE}`", api_timeout=0.1, retry=None, job_retry=None)
    # with bounded retries instead of none, the caller gets a RetryError wrapping the timeout
    with pytest.raises(exceptions.RetryError):
        job.result(
            timeout=0.05, retry=FAST_RETRY.with_timeout(0.1), job_retry=DEFAULT_JOB_RETRY.with_timeout(0.15)
        )
    assert time.monotonic() - began < 1.0  # well before the 2 s answers


def test_a_job_that_never_finishes_times_out(fake: FakeBigQuery, client: bigquery.Client) -> None:
    fake.polls_before_done = 10**9
    job = client.query(f"SELECT cost FROM `{TABLE}`")
    with pytest.raises(concurrent.futures.TimeoutError):
        job.result(timeout=0.1)
    assert fake.job(job.job_id)["status"] == {"state": "RUNNING"}


def test_bytes_billed(fake: FakeBigQuery, client: bigquery.Client) -> None:
    line_items = len(billing_rows())
    job = client.query(
        f"SELECT SUM(cost) AS cost FROM `{TABLE}` WHERE _PARTITIONTIME >= @start",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("start", "TIMESTAMP", START)]
        ),
    )
    job.result()
    assert job.total_bytes_processed == 100 * line_items  # no partition pruning in the fake
    assert job.total_bytes_billed == 10 * MIB  # BigQuery's 10 MB minimum
    dry = client.query(f"SELECT cost FROM `{TABLE}`", job_config=bigquery.QueryJobConfig(dry_run=True))
    assert dry.state == "DONE" and dry.total_bytes_processed == 100 * line_items
    assert dry.total_bytes_billed == 0
    fake.row_bytes = 100_000  # as if each row were 100 kB: 105 rows are 10.5 MB
    fake.create_table(f"{PROJECT}.scratch.big", [("n", "BIGINT")], ([i] for i in range(105)))
    big = client.query(f"SELECT COUNT(*) AS n FROM `{PROJECT}.scratch.big`")
    assert next(iter(big.result()))["n"] == 105
    assert big.total_bytes_processed == 10_500_000
    assert big.total_bytes_billed == 11 * MIB  # rounded up to the MiB
    no_table = client.query("SELECT 1 AS one")
    no_table.result()
    assert no_table.total_bytes_billed == 0
    assert fake.bytes_billed_total == 21 * MIB
    capped = bigquery.QueryJobConfig(maximum_bytes_billed=10 * MIB)
    with pytest.raises(exceptions.BadRequest, match="bytes billed"):
        client.query(f"SELECT COUNT(*) AS n FROM `{PROJECT}.scratch.big`", job_config=capped).result()
    assert fake.bytes_billed_total == 21 * MIB


def test_mangled_cells_reach_the_client(fake: FakeBigQuery, client: bigquery.Client) -> None:
    fake.mangle = lambda rows: [[*row[:-1], "not-a-timestamp"] for row in rows]
    with pytest.raises(ValueError, match="not-a-timestamp"):
        list(client.query_and_wait(f"SELECT cost, usage_start_time FROM `{TABLE}` LIMIT 2"))


def test_concurrent_queries(fake: FakeBigQuery) -> None:
    def total(vm: str) -> float:
        config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("vm", "STRING", vm)])
        rows = make_client(fake).query_and_wait(
            f"SELECT SUM(cost) AS cost FROM `{TABLE}` WHERE resource.name = @vm", job_config=config
        )
        return float(next(iter(rows))["cost"])

    with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
        totals = dict(zip(VMS, pool.map(total, VMS), strict=True))
    for vm, got in totals.items():
        want = sum(r[11] for r in billing_rows() if r[9]["name"] == vm)
        assert got == pytest.approx(want, abs=1e-9)
