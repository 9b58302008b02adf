"""The Athena fake (fakes/athena_api.py) through the real boto3 client: it must run the caller's SQL,
page and format results the way Athena does, and fail the way Athena fails, or exporter tests built on it
would prove nothing."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.retries.standard import ExponentialBackoff

from fakes.athena_api import FakeAthena

CUR_COLUMNS = [
    ("line_item_usage_start_date", "TIMESTAMP"),
    ("line_item_resource_id", "VARCHAR"),
    ("line_item_unblended_cost", "DOUBLE"),
    ("resource_tags", "MAP(VARCHAR, VARCHAR)"),
    ("billing_period", "VARCHAR"),
    ("year", "VARCHAR"),
    ("month", "VARCHAR"),
]
PROD, DEV = "i-0fea4fd46592d050b", "i-0a1b2c3d4e5f60718"


def cur_rows() -> list[tuple[Any, ...]]:
    """Five June days, two line items a day per node (prod 0.5 + 0.5, dev 0.125 + 0.125: exact in binary),
    plus rows the query below must leave out: an untagged node, and a May row outside the partition."""
    rows: list[tuple[Any, ...]] = []
    for day in range(1, 6):
        for hour, minute in ((0, 0), (12, 30)):
            start = datetime(2024, 6, day, hour, minute, 15, 250_999)
            rows.append((start, PROD, 0.5, {"user_cluster": "prod", "team": "core"}, "2024-06", "2024", "6"))
            rows.append((start, DEV, 0.125, {"user_cluster": "dev"}, "2024-06", "2024", "6"))
    rows.append((datetime(2024, 6, 1, 3), "i-untagged", 9.0, {}, "2024-06", "2024", "6"))
    rows.append((datetime(2024, 5, 31, 23), PROD, 7.0, {"user_cluster": "prod"}, "2024-05", "2024", "5"))
    return rows


DAILY_BY_CLUSTER = """
SELECT date_trunc('day', line_item_usage_start_date) AS day,
       element_at(resource_tags, 'user_cluster') AS cluster,
       sum(line_item_unblended_cost) AS cost,
       count(*)
FROM "AwsDataCatalog"."cur"."cur_report"
WHERE year = '2024' AND month = '6'
  AND line_item_usage_start_date >= from_iso8601_timestamp('2024-06-01T00:00:00Z')
  AND element_at(resource_tags, 'user_cluster') IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2
"""
EXPECTED_DAILY = [
    [f"2024-06-0{day} 00:00:00.000", cluster, cost, "2"]
    for day in range(1, 6)
    for cluster, cost in (("dev", "0.25"), ("prod", "1.0"))
]


@pytest.fixture
def fake() -> Iterator[FakeAthena]:
    with FakeAthena(page_size=4) as athena:
        athena.create_table("cur", "cur_report", CUR_COLUMNS, cur_rows())
        yield athena


def client(fake: FakeAthena, **config: Any) -> Any:
    """A real boto3 Athena client aimed at the fake; no retries unless asked for."""
    config.setdefault("retries", {"max_attempts": 0})
    return boto3.client(
        "athena",
        region_name="us-east-1",
        endpoint_url=fake.url,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(**config),
    )


def run(athena: Any, sql: str, **request: Any) -> dict[str, Any]:
    """Start a query and poll it to its final state, as a caller would; the final QueryExecution."""
    request.setdefault("QueryExecutionContext", {"Database": "cur"})
    execution_id = athena.start_query_execution(QueryString=sql, **request)["QueryExecutionId"]
    for _ in range(20):
        execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
        if execution["Status"]["State"] not in ("QUEUED", "RUNNING"):
            return execution  # type: ignore[no-any-return]
    raise AssertionError("the query never finished")


def values(rows: list[dict[str, Any]]) -> list[list[str | None]]:
    return [[datum.get("VarCharValue") for datum in row["Data"]] for row in rows]


def test_a_group_by_with_trino_functions_runs_and_pages_with_the_header_first(fake: FakeAthena) -> None:
    athena = client(fake)
    execution = run(athena, DAILY_BY_CLUSTER)
    assert execution["Status"]["State"] == "SUCCEEDED"
    assert execution["StatementType"] == "DML"

    pages = []
    request: dict[str, Any] = {"QueryExecutionId": execution["QueryExecutionId"]}
    while True:
        page = athena.get_query_results(**request)
        pages.append(values(page["ResultSet"]["Rows"]))
        if "NextToken" not in page:
            break
        request["NextToken"] = page["NextToken"]

    # page_size 4: the header takes one of the first page's four places, like Athena's MaxResults.
    assert [len(rows) for rows in pages] == [4, 4, 3]
    assert pages[0][0] == ["day", "cluster", "cost", "_col3"]
    assert [row for rows in pages for row in rows][1:] == EXPECTED_DAILY
    info = page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
    assert [(c["Name"], c["Type"]) for c in info] == [
        ("day", "timestamp"),
        ("cluster", "varchar"),
        ("cost", "double"),
        ("_col3", "bigint"),
    ]
    assert fake.queries[0]["QueryString"] == DAILY_BY_CLUSTER
    assert fake.queries[0]["QueryExecutionContext"] == {"Database": "cur"}
    assert "ClientRequestToken" in fake.queries[0]  # botocore's idempotency token


def test_botos_paginator_and_max_results_page_the_same_rows(fake: FakeAthena) -> None:
    fake.page_size = 1000
    athena = client(fake)
    execution_id = run(athena, DAILY_BY_CLUSTER)["QueryExecutionId"]

    paginator = athena.get_paginator("get_query_results")
    pages = list(paginator.paginate(QueryExecutionId=execution_id, PaginationConfig={"PageSize": 5}))
    assert [len(page["ResultSet"]["Rows"]) for page in pages] == [5, 5, 1]
    rows = [row for page in pages for row in values(page["ResultSet"]["Rows"])]
    assert rows == [["day", "cluster", "cost", "_col3"], *EXPECTED_DAILY]
    whole = paginator.paginate(QueryExecutionId=execution_id).build_full_result()
    assert values(whole["ResultSet"]["Rows"])[1:] == EXPECTED_DAILY
    assert fake.calls.count("GetQueryResults") == 3 + 1


def test_values_are_athena_text_and_null_is_a_datum_without_a_value(fake: FakeAthena) -> None:
    fake.page_size = 1000
    fake.create_table(
        "cur",
        "samples",
        [
            ("name", "VARCHAR"),
            ("amount", "DOUBLE"),
            ("hours", "BIGINT"),
            ("usage_date", "DATE"),
            ("started", "TIMESTAMP"),
            ("spot", "BOOLEAN"),
            ("rate", "DECIMAL(18,6)"),
            ("tags", "MAP(VARCHAR, VARCHAR)"),
        ],
        [
            ("a", 0.096, 3, date(2024, 6, 1), datetime(2024, 6, 1, 12, 30, 15, 250_999), True, Decimal("0.096"),
             {"user_cluster": "prod"}),
            ("b", 0.0001, -1, date(2024, 6, 2), datetime(2024, 6, 2), False, Decimal("12"), {}),
            ("c", 123456789.0, 0, None, None, None, None, None),
            ("d", 12.0, None, None, None, None, None, None),
            ("e", None, None, None, None, None, None, None),
        ],
    )  # fmt: skip
    athena = client(fake)
    execution = run(athena, "SELECT *, hours / 2 AS halves FROM samples ORDER BY name")
    page = athena.get_query_results(QueryExecutionId=execution["QueryExecutionId"], MaxResults=10)

    assert values(page["ResultSet"]["Rows"]) == [
        ["name", "amount", "hours", "usage_date", "started", "spot", "rate", "tags", "halves"],
        ["a", "0.096", "3", "2024-06-01", "2024-06-01 12:30:15.250", "true", "0.096000", "{user_cluster=prod}", "1"],
        ["b", "1.0E-4", "-1", "2024-06-02", "2024-06-02 00:00:00.000", "false", "12.000000", "{}", "0"],
        ["c", "1.23456789E8", "0", None, None, None, None, None, "0"],
        ["d", "12.0", None, None, None, None, None, None, None],
        ["e", None, None, None, None, None, None, None, None],
    ]  # fmt: skip
    assert page["ResultSet"]["Rows"][5]["Data"][1:] == [{}] * 8  # NULL: no VarCharValue key at all
    info = page["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
    assert [c["Type"] for c in info] == [
        "varchar", "double", "bigint", "date", "timestamp", "boolean", "decimal", "map", "bigint"
    ]  # fmt: skip
    assert (info[6]["Precision"], info[6]["Scale"]) == (18, 6)
    assert info[0]["CaseSensitive"] is True and info[1]["CaseSensitive"] is False
    assert "NextToken" not in page


def test_a_missing_table_fails_the_query_not_the_call(fake: FakeAthena) -> None:
    athena = client(fake)
    sql = "SELECT line_item_resource_id,\n  sum(line_item_unblended_cost)\nFROM cur_report\nJOIN (SELECT 1 AS x)\n"
    sql += "  ON 1 = 1 JOIN\n     missing ON 1 = 1\nGROUP BY 1"
    execution = run(athena, sql)

    reason = "TABLE_NOT_FOUND: line 6:6: Table 'awsdatacatalog.cur.missing' does not exist"
    status = execution["Status"]
    assert status["State"] == "FAILED"
    assert status["StateChangeReason"] == reason
    assert status["AthenaError"] == {
        "ErrorCategory": 2,
        "ErrorType": 1301,
        "Retryable": False,
        "ErrorMessage": reason,
    }
    assert execution["Statistics"]["DataScannedInBytes"] == 0
    with pytest.raises(ClientError) as caught:
        athena.get_query_results(QueryExecutionId=execution["QueryExecutionId"])
    assert caught.value.response["Error"]["Code"] == "InvalidRequestException"
    assert caught.value.response["Error"]["Message"] == reason


def test_a_missing_column_and_an_unqualified_table_without_a_database_fail_like_trino(
    fake: FakeAthena,
) -> None:
    athena = client(fake)
    column = run(athena, "SELECT line_item_usage_start_date,\n       line_item_blended_cost FROM cur_report")
    assert column["Status"]["StateChangeReason"] == (
        "COLUMN_NOT_FOUND: line 2:8: Column 'line_item_blended_cost' cannot be resolved or requester is not "
        "authorized to access requested resources"
    )
    assert column["Status"]["AthenaError"]["ErrorCategory"] == 2

    default = run(athena, "SELECT count(*) FROM cur_report", QueryExecutionContext={})
    assert default["Status"]["StateChangeReason"] == (
        "TABLE_NOT_FOUND: line 1:22: Table 'awsdatacatalog.default.cur_report' does not exist"
    )
    schema = run(athena, "SELECT count(*)\nFROM cost.cur_report")
    assert schema["Status"]["StateChangeReason"] == "SCHEMA_NOT_FOUND: line 2:6: Schema 'cost' does not exist"
    qualified = run(athena, 'SELECT count(*) FROM "cur"."cur_report"', QueryExecutionContext={})
    assert qualified["Status"]["State"] == "SUCCEEDED"

    syntax = run(athena, "SELECT line_item_resource_id FROM cur_report WHERE")
    assert syntax["Status"]["StateChangeReason"].startswith("SYNTAX_ERROR: line 1:")
    assert syntax["Status"]["AthenaError"]["ErrorCategory"] == 2


def test_a_trino_function_sqlglot_cannot_translate_fails_loudly(fake: FakeAthena) -> None:
    execution = run(
        client(fake), "SELECT format_datetime(line_item_usage_start_date, 'yyyy-MM') FROM cur_report"
    )
    assert execution["Status"]["StateChangeReason"] == (
        "FUNCTION_NOT_FOUND: line 1:8: Function 'format_datetime' not registered"
    )


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("AccessDeniedException", 400),
        ("ThrottlingException", 400),
        ("TooManyRequestsException", 400),
        ("InternalServerException", 500),
        ("InvalidRequestException", 400),
        ("UnrecognizedClientException", 400),
    ],
)
def test_fail_next_answers_the_aws_error_botocore_raises(fake: FakeAthena, error: str, status: int) -> None:
    athena = client(fake)
    fake.fail_next("StartQueryExecution", error)
    with pytest.raises(ClientError) as caught:
        athena.start_query_execution(QueryString="SELECT 1", WorkGroup="finops")
    assert caught.value.response["Error"]["Code"] == error
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert caught.value.response["Error"]["Message"]
    assert run(athena, "SELECT 1")["Status"]["State"] == "SUCCEEDED"  # only the next call failed
    assert fake.calls[:2] == ["StartQueryExecution", "StartQueryExecution"]
    assert len(fake.queries) == 2


def test_access_denied_names_the_action_and_the_workgroup(fake: FakeAthena) -> None:
    athena = client(fake)
    fake.fail_next("GetQueryResults", "AccessDeniedException", count=2)
    execution_id = run(athena, DAILY_BY_CLUSTER, WorkGroup="finops")["QueryExecutionId"]
    for _ in range(2):
        with pytest.raises(ClientError) as caught:
            athena.get_query_results(QueryExecutionId=execution_id)
        assert caught.value.response["Error"]["Message"].startswith(
            "User: arn:aws:sts::123456789012:assumed-role/node-cost-exporter/botocore-session is not authorized "
            "to perform: athena:GetQueryResults on resource: arn:aws:athena:us-east-1:123456789012:workgroup/finops "
        )
    assert len(athena.get_query_results(QueryExecutionId=execution_id)["ResultSet"]["Rows"]) == 4


def test_botocore_retries_a_throttle_and_the_query_runs_once(
    fake: FakeAthena, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)  # no random sleep
    athena = client(fake, retries={"max_attempts": 2, "mode": "standard"})
    fake.fail_next("StartQueryExecution", "ThrottlingException")
    execution = run(athena, DAILY_BY_CLUSTER)
    assert execution["Status"]["State"] == "SUCCEEDED"
    assert fake.calls[:2] == ["StartQueryExecution", "StartQueryExecution"]
    assert fake.queries[0]["ClientRequestToken"] == fake.queries[1]["ClientRequestToken"]
    assert len(fake.executed) == 1


def test_the_same_client_request_token_is_the_same_execution(fake: FakeAthena) -> None:
    athena = client(fake)
    token = "a" * 32
    first = athena.start_query_execution(QueryString="SELECT 1", ClientRequestToken=token)
    again = athena.start_query_execution(QueryString="SELECT 1", ClientRequestToken=token)
    assert first["QueryExecutionId"] == again["QueryExecutionId"]
    assert len(fake.executed) == 1
    with pytest.raises(ClientError, match="Idempotent parameters do not match"):
        athena.start_query_execution(QueryString="SELECT 2", ClientRequestToken=token)


def test_a_slow_answer_is_a_read_timeout(fake: FakeAthena) -> None:
    athena = client(fake, read_timeout=0.25, connect_timeout=0.25)
    fake.delay_seconds = 0.6
    began = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        athena.start_query_execution(QueryString="SELECT 1")
    assert time.monotonic() - began < 0.6


def test_data_scanned_is_100_bytes_a_row_of_every_table_named_and_is_summed(fake: FakeAthena) -> None:
    fake.polls_before_done = 2
    fake.create_table("cur", "nodes", [("instance_id", "VARCHAR"), ("node", "VARCHAR")],
                      [(PROD, "ip-10-0-1-1"), (DEV, "ip-10-0-1-2"), ("i-gone", "ip-10-0-1-3")])  # fmt: skip
    athena = client(fake)
    join = (
        "SELECT n.node, sum(c.line_item_unblended_cost) AS cost FROM cur_report c "
        "JOIN nodes n ON n.instance_id = c.line_item_resource_id WHERE c.month = '6' GROUP BY 1 ORDER BY 1"
    )
    execution_id = athena.start_query_execution(QueryString=join, QueryExecutionContext={"Database": "cur"})[
        "QueryExecutionId"
    ]
    states = []
    for _ in range(3):
        execution = athena.get_query_execution(QueryExecutionId=execution_id)["QueryExecution"]
        states.append((execution["Status"]["State"], execution["Statistics"]["DataScannedInBytes"]))
    assert states == [("RUNNING", 0), ("RUNNING", 0), ("SUCCEEDED", 100 * (22 + 3))]
    assert execution["Status"]["CompletionDateTime"] >= execution["Status"]["SubmissionDateTime"]
    assert fake.scanned_bytes_total == 2500
    rows = values(athena.get_query_results(QueryExecutionId=execution_id)["ResultSet"]["Rows"])
    assert rows == [["node", "cost"], ["ip-10-0-1-1", "5.0"], ["ip-10-0-1-2", "1.25"]]

    assert run(athena, "SELECT count(*) FROM nodes")["Statistics"]["DataScannedInBytes"] == 300
    assert run(athena, "SELECT * FROM missing")["Statistics"]["DataScannedInBytes"] == 0
    assert fake.scanned_bytes_total == 2800


def test_results_wait_for_the_query_and_a_stopped_query_is_cancelled(fake: FakeAthena) -> None:
    athena = client(fake)
    started = athena.start_query_execution(QueryString="SELECT 1")
    with pytest.raises(ClientError, match=r"Query has not yet finished\. Current state: RUNNING"):
        athena.get_query_results(QueryExecutionId=started["QueryExecutionId"])

    assert athena.stop_query_execution(QueryExecutionId=started["QueryExecutionId"])["ResponseMetadata"]
    execution = athena.get_query_execution(QueryExecutionId=started["QueryExecutionId"])["QueryExecution"]
    assert execution["Status"]["State"] == "CANCELLED"
    with pytest.raises(ClientError, match="was not found"):
        athena.get_query_execution(QueryExecutionId="00000000-0000-0000-0000-000000000000")


def test_concurrent_callers_each_get_their_own_results(fake: FakeAthena) -> None:
    clients = [client(fake) for _ in range(6)]  # boto3 sessions are not thread-safe; clients are

    def node_cost(index: int) -> list[list[str | None]]:
        athena = clients[index]
        sql = (
            f"SELECT line_item_resource_id, sum(line_item_unblended_cost) * {index} AS cost FROM cur_report "
        )
        sql += f"WHERE line_item_resource_id = '{PROD}' GROUP BY 1"
        execution = run(athena, sql)
        return values(
            athena.get_query_results(QueryExecutionId=execution["QueryExecutionId"])["ResultSet"]["Rows"]
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(node_cost, range(6)))
    assert results == [[["line_item_resource_id", "cost"], [PROD, f"{12.0 * index}"]] for index in range(6)]
    assert len(fake.executed) == 6


def test_get_work_group_answers_a_minimal_enabled_workgroup(fake: FakeAthena) -> None:
    workgroup = client(fake).get_work_group(WorkGroup="finops")["WorkGroup"]
    assert (workgroup["Name"], workgroup["State"]) == ("finops", "ENABLED")
    assert workgroup["Configuration"]["ResultConfiguration"]["OutputLocation"] == (
        "s3://aws-athena-query-results-123456789012-us-east-1/"
    )


def test_execution_parameters_fill_placeholders(fake: FakeAthena) -> None:
    athena = client(fake)
    execution = run(
        athena,
        "SELECT count(*) AS n FROM cur_report WHERE billing_period = ? AND line_item_unblended_cost > ?",
        ExecutionParameters=["'2024-06'", "0.2"],
    )
    rows = values(
        athena.get_query_results(QueryExecutionId=execution["QueryExecutionId"])["ResultSet"]["Rows"]
    )
    assert rows == [["n"], ["11"]]


def test_mangle_rewrites_result_rows_but_not_the_header(fake: FakeAthena) -> None:
    fake.mangle = lambda rows: [[row[0], row[1], "not-a-number", None] for row in rows]
    athena = client(fake)
    execution_id = run(athena, DAILY_BY_CLUSTER)["QueryExecutionId"]
    rows = values(athena.get_query_results(QueryExecutionId=execution_id)["ResultSet"]["Rows"])
    assert rows[0] == ["day", "cluster", "cost", "_col3"]
    assert rows[1] == ["2024-06-01 00:00:00.000", "dev", "not-a-number", None]


def test_fail_next_query_fails_a_query_as_a_retryable_engine_error(fake: FakeAthena) -> None:
    fake.fail_next_query()
    athena = client(fake)
    failed = run(athena, DAILY_BY_CLUSTER)
    assert failed["Status"]["State"] == "FAILED"
    assert failed["Status"]["StateChangeReason"].startswith("GENERIC_INTERNAL_ERROR: ")
    assert failed["Status"]["AthenaError"]["ErrorCategory"] == 1
    assert failed["Status"]["AthenaError"]["Retryable"] is True
    assert run(athena, DAILY_BY_CLUSTER)["Status"]["State"] == "SUCCEEDED"


def test_an_unknown_operation_is_refused(fake: FakeAthena) -> None:
    request = urllib.request.Request(
        fake.url,
        data=b"{}",
        method="POST",
        headers={
            "X-Amz-Target": "AmazonAthena.ListEverything",
            "Content-Type": "application/x-amz-json-1.1",
            "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20240601/us-east-1/athena/aws4_request, "
            "SignedHeaders=host, Signature=0",
        },
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["__type"] == "UnknownOperationException"
    assert fake.calls == ["ListEverything"]
