"""A local fake of Amazon Athena that runs the submitted SQL for real, speaking Athena's wire protocol.

Athena is AWS JSON 1.1 (`POST /`, `X-Amz-Target: AmazonAthena.<Operation>`), so the real boto3 client reaches
`FakeAthena` through `endpoint_url` with its own serialisers, signer and parsers. The fake holds tables in an
in-process DuckDB database whose catalog is named `awsdatacatalog`, one schema per Athena database, and runs
every query: sqlglot parses it as Trino (Athena engine 3), the fake qualifies its table names (with the
execution context's database, `default` without one) and writes it out as DuckDB SQL. A misspelt column, a
wrong table or a Trino function the caller got wrong therefore fails here as it would in Athena, as a FAILED
query with Athena's StateChangeReason (`TABLE_NOT_FOUND: line 5:6: Table 'awsdatacatalog.cur.missing' does
not exist`), not as an API error.

What the fake reproduces of Athena:
- the execution lifecycle: StartQueryExecution answers an id at once; GetQueryExecution says RUNNING for the
  first `polls_before_done` polls, then SUCCEEDED, FAILED or (after StopQueryExecution) CANCELLED; and
  GetQueryResults refuses an unfinished query with InvalidRequestException. A retried StartQueryExecution
  carrying the same ClientRequestToken (botocore fills one in) gets the same execution, as in Athena.
- results as Athena pages them: every value a string, the first row of the first page the header (column
  names), that page holding at most MaxResults rows including the header; NULL as a Datum without a
  VarCharValue; output column names lower-cased, unnamed expressions named `_col0`, `_col1`, ...
- value text as Athena writes it: doubles in Java's Double.toString layout ("0.096", "1.0E-4", "1.23456789E8",
  "12.0"), bigint as digits (DuckDB's HUGEINT sums too), decimals in plain notation, timestamps
  "2024-06-01 00:00:00.000" (milliseconds, truncated), timestamps with time zone with " UTC", dates
  "2024-06-01", booleans "true"/"false", maps and rows "{k=v, k2=v2}", arrays "[a, b]".
- Trino's integer division (`5 / 2` is 2; DuckDB runs with `integer_division`).
- `?` placeholders filled from ExecutionParameters (SQL literals, in order).
- table names as Athena resolves them: `t`, `db.t`, `"db"."t"` and `AwsDataCatalog.db.t`, case-insensitively;
  Glue's `default` database always exists. `information_schema` is DuckDB's (its type names are DuckDB's).

Where it is not Athena: SQL that sqlglot cannot carry from Trino to DuckDB fails, mostly as FUNCTION_NOT_FOUND
(e.g. format_datetime, to_iso8601, at_timezone) or, for what the fake cannot place, as GENERIC_INTERNAL_ERROR
with DuckDB's message and SQL in the reason; a double divided by zero fails instead of giving Infinity.

DataScannedInBytes is not a byte count of anything: it is 100 bytes times the rows of every distinct table the
query names, whatever its WHERE, so a test can predict it; `scanned_bytes_total` adds it up once per query
that succeeds.

Test controls (it is a `FakeServer`): generic faults (`inject`) in Athena's shapes, `fail_next` answers the
next calls of an operation with an AWS error, `fail_next_query` makes the next queries FAIL whatever their
SQL, `delay_seconds` slows every answer (after the request took effect, as a lost answer would), `mangle`
rewrites result rows, and `calls`, `queries` and `executed` record what came in and what DuckDB ran.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from typing import Any

import duckdb
import sqlglot
from sqlglot import TokenType, exp
from sqlglot.errors import ParseError, TokenError

from fakes.server import Answer, FakeServer, Fault, Request, header_seconds

ACCOUNT = "123456789012"
CATALOG = "awsdatacatalog"  # Athena's Glue catalog, as Trino names it in messages
ROLE_ARN = f"arn:aws:sts::{ACCOUNT}:assumed-role/node-cost-exporter/botocore-session"
CONTENT_TYPE = "application/x-amz-json-1.1"
ENGINE_VERSION = {"SelectedEngineVersion": "AUTO", "EffectiveEngineVersion": "Athena engine version 3"}
BYTES_PER_ROW = 100  # DataScannedInBytes = BYTES_PER_ROW * rows of every table a query names
# The CUR 2.0 (Data Exports) columns the exporter's query reads, with their Athena types as the AWS Data
# Exports table dictionary gives them; tests add the tag and partition columns of the layout they model.
CUR_COLUMNS = [
    ("line_item_usage_account_id", "VARCHAR"),
    ("line_item_line_item_type", "VARCHAR"),
    ("line_item_usage_start_date", "TIMESTAMP"),
    ("line_item_usage_end_date", "TIMESTAMP"),
    ("line_item_product_code", "VARCHAR"),
    ("line_item_usage_type", "VARCHAR"),
    ("line_item_operation", "VARCHAR"),
    ("line_item_resource_id", "VARCHAR"),
    ("line_item_usage_amount", "DOUBLE"),
    ("line_item_currency_code", "VARCHAR"),
    ("line_item_unblended_cost", "DOUBLE"),
    ("line_item_net_unblended_cost", "DOUBLE"),
    ("pricing_public_on_demand_cost", "DOUBLE"),
    ("product_instance_type", "VARCHAR"),
    ("reservation_effective_cost", "DOUBLE"),
    ("reservation_net_effective_cost", "DOUBLE"),
    ("savings_plan_savings_plan_effective_cost", "DOUBLE"),
    ("savings_plan_net_savings_plan_effective_cost", "DOUBLE"),
    # Commitment columns, after the base ones so that a row builder writes the columns above in order and
    # `cur_row` fills these in by name. From the AWS CUR data dictionary ("Line item details", "Reservation
    # details", "Savings Plans details"; in CUR 2.0 the table dictionary's line_item, reservation and
    # savings_plan columns): a RIFee row is the RI's month, its usage amount the RI's hours in that month
    # and its unblended cost the month's recurring fee; a SavingsPlanRecurringFee row is one hour of a plan.
    ("line_item_normalization_factor", "DOUBLE"),
    ("line_item_normalized_usage_amount", "DOUBLE"),
    ("reservation_reservation_a_r_n", "VARCHAR"),
    ("reservation_amortized_upfront_fee_for_billing_period", "DOUBLE"),
    ("reservation_net_amortized_upfront_fee_for_billing_period", "DOUBLE"),
    ("savings_plan_savings_plan_a_r_n", "VARCHAR"),
    ("savings_plan_total_commitment_to_date", "DOUBLE"),
    ("savings_plan_used_commitment", "DOUBLE"),
    ("savings_plan_amortized_upfront_commitment_for_billing_period", "DOUBLE"),
    ("savings_plan_recurring_commitment_for_billing_period", "DOUBLE"),
    ("savings_plan_net_amortized_upfront_commitment_for_billing_period", "DOUBLE"),
    ("savings_plan_net_recurring_commitment_for_billing_period", "DOUBLE"),
]
CUR_BASE_COLUMNS = 18  # the columns a row builder gives positionally; `cur_row` adds the rest by name
_CUR_EXTRA = [name for name, _ in CUR_COLUMNS[CUR_BASE_COLUMNS:]]


def cur_row(base: Sequence[Any], **extra: Any) -> tuple[Any, ...]:
    """A CUR row of CUR_COLUMNS: the first CUR_BASE_COLUMNS values in order, the commitment columns by name
    (NULL unless given, as in a line item they do not apply to)."""
    if len(base) != CUR_BASE_COLUMNS or not set(extra) <= set(_CUR_EXTRA):
        raise ValueError(f"cur_row takes {CUR_BASE_COLUMNS} values and names of {_CUR_EXTRA}")
    return (*base, *(extra.get(name) for name in _CUR_EXTRA))


_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")

# AWS errors `fail_next` knows: HTTP status, and whether Athena's model spells the message "Message" (its own
# errors) or "message" (the ones AWS's front door raises before Athena sees the request).
_API_ERRORS: dict[str, tuple[int, str]] = {
    "AccessDeniedException": (400, "message"),
    "ThrottlingException": (400, "message"),
    "TooManyRequestsException": (400, "Message"),
    "InternalServerException": (500, "Message"),
    "InvalidRequestException": (400, "Message"),
    "UnrecognizedClientException": (400, "message"),
}

# Trino error name → (AthenaError.ErrorCategory, ErrorType). Categories are Athena's documented ones
# (1 SYSTEM, 2 USER). Of the types, 200 ("Query engine had an internal error") and 1000 ("User error") are
# from Athena's error catalog; 1301 for a missing table or schema is a plausible guess that could not be
# checked against the catalog. Callers should key on ErrorCategory and the reason's prefix, not on ErrorType.
_QUERY_ERRORS: dict[str, tuple[int, int]] = {
    "GENERIC_INTERNAL_ERROR": (1, 200),
    "SYNTAX_ERROR": (2, 1000),
    "TABLE_NOT_FOUND": (2, 1301),
    "SCHEMA_NOT_FOUND": (2, 1301),
    "CATALOG_NOT_FOUND": (2, 1000),
    "COLUMN_NOT_FOUND": (2, 1000),
    "FUNCTION_NOT_FOUND": (2, 1000),
    "EXPRESSION_NOT_AGGREGATE": (2, 1000),
    "INVALID_CAST_ARGUMENT": (2, 1000),
    "NUMERIC_VALUE_OUT_OF_RANGE": (2, 1000),
    "DIVISION_BY_ZERO": (2, 1000),
    "INVALID_PARAMETER_USAGE": (2, 1000),
}

# DuckDB type id → (Athena ColumnInfo.Type, Precision). Decimals take theirs from the type.
_COLUMN_TYPES: dict[str, tuple[str, int]] = {
    "varchar": ("varchar", 2147483647),
    "bigint": ("bigint", 19),
    "hugeint": ("bigint", 19),  # DuckDB's SUM of a bigint; Trino's is a bigint
    "ubigint": ("bigint", 19),
    "uinteger": ("bigint", 19),
    "integer": ("integer", 10),
    "usmallint": ("integer", 10),
    "smallint": ("smallint", 5),
    "utinyint": ("smallint", 5),
    "tinyint": ("tinyint", 3),
    "double": ("double", 17),
    "float": ("float", 17),
    "boolean": ("boolean", 0),
    "date": ("date", 0),
    "timestamp": ("timestamp", 3),
    "timestamp_s": ("timestamp", 3),
    "timestamp_ms": ("timestamp", 3),
    "timestamp_ns": ("timestamp", 3),
    "timestamp with time zone": ("timestamp with time zone", 3),
    "time": ("time", 3),
    "interval": ("interval day to second", 0),
    "blob": ("varbinary", 2147483647),
    "uuid": ("uuid", 0),
    "map": ("map", 0),
    "list": ("array", 0),
    "array": ("array", 0),
    "struct": ("row", 0),
    "null": ("unknown", 0),
}


_DUCKDB_CAST_TARGETS = {"INT64": "BIGINT", "INT32": "INTEGER", "INT16": "SMALLINT", "INT8": "TINYINT"}


@dataclass(frozen=True)
class QueryFailure:
    """Why a query FAILED, as Athena reports it in Status.StateChangeReason and Status.AthenaError."""

    error: str  # Trino's error name, e.g. TABLE_NOT_FOUND
    message: str  # e.g. "line 1:15: Table 'awsdatacatalog.cur.missing' does not exist"
    category: int = 2
    error_type: int = 1000
    retryable: bool = False

    @property
    def reason(self) -> str:
        return f"{self.error}: {self.message}"

    @classmethod
    def of(cls, error: str, message: str) -> QueryFailure:
        category, error_type = _QUERY_ERRORS.get(error, (1, 200))
        return cls(error, message, category, error_type)


@dataclass
class _Execution:
    id: str
    query: str
    context: dict[str, Any]
    workgroup: str
    output: str
    token: str | None
    submitted: float
    statement_type: str = "DML"
    substatement_type: str = "SELECT"
    failure: QueryFailure | None = None
    columns: list[dict[str, Any]] = field(default_factory=list)
    rows: list[list[str | None]] = field(default_factory=list)
    scanned: int = 0
    engine_ms: int = 0
    polls: int = 0
    cancelled: bool = False
    settled: bool = False  # the final state was reached (and, on success, its bytes counted)
    completed: float | None = None
    mangled: bool = False


class _Answer(Exception):
    """An API error answer from inside an operation handler."""

    def __init__(self, code: str, message: str, status: int = 400, **fields: Any) -> None:
        super().__init__(message)
        self.code, self.message, self.status, self.fields = code, message, status, fields


class FakeAthena(FakeServer):
    """Amazon Athena on 127.0.0.1: StartQueryExecution, GetQueryExecution, GetQueryResults,
    StopQueryExecution and GetWorkGroup, over real HTTP, running the SQL in DuckDB."""

    def __init__(self, *, page_size: int = 1000, polls_before_done: int = 1) -> None:
        super().__init__()
        self.page_size = page_size  # most rows per GetQueryResults page, whatever MaxResults asks for
        self.polls_before_done = polls_before_done  # GetQueryExecution polls answered RUNNING per query
        self.mangle: Callable[[list[list[str | None]]], list[list[str | None]]] | None = None
        self.executed: list[str] = []  # the DuckDB SQL of every query run, for debugging a test
        self.scanned_bytes_total = 0
        self._executions: dict[str, _Execution] = {}
        self._tokens: dict[str, str] = {}  # ClientRequestToken → execution id
        self._query_failures: deque[QueryFailure] = deque()
        self._empty_queries = 0  # the next queries this many succeed with no rows (Fault.NO_DATA)
        self._db = duckdb.connect(":memory:")
        self._db.execute(f"ATTACH ':memory:' AS {CATALOG}")
        self._db.execute(f"USE {CATALOG}")
        self._db.execute(f"CREATE SCHEMA {CATALOG}.default")  # every account has Glue's `default` database
        self._db.execute("SET TimeZone = 'UTC'")
        self._db.execute("SET integer_division = true")  # Trino: 5 / 2 = 2

    @property
    def calls(self) -> list[str]:
        """Every operation received, in order."""
        with self._lock:
            return [_operation(r) for r in self.requests]

    @property
    def queries(self) -> list[dict[str, Any]]:
        """Every StartQueryExecution body, failed calls included."""
        with self._lock:
            received = [r for r in self.requests if _operation(r) == "StartQueryExecution"]
        return [body for r in received if isinstance(body := r.json(), dict)]

    def stop(self) -> None:
        super().stop()
        with self._lock:
            self._db.close()

    # -- data -------------------------------------------------------------------------------------------

    def create_table(
        self,
        database: str,
        table: str,
        columns: Sequence[tuple[str, str]],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        """Create (or replace) `database.table` with DuckDB-typed columns, e.g. ("cost", "DOUBLE"),
        ("resource_tags", "MAP(VARCHAR, VARCHAR)"), and fill it. Names are lower-cased, as Glue keeps them."""
        name = _qualified(database, table)
        definition = ", ".join(f"{_quote(column.lower())} {kind}" for column, kind in columns)
        values = [tuple(row) for row in rows]
        with self._lock:
            self._db.execute(f"CREATE SCHEMA IF NOT EXISTS {CATALOG}.{_quote(database.lower())}")
            self._db.execute(f"CREATE OR REPLACE TABLE {name} ({definition})")
            row_marks = "(" + ", ".join("?" for _ in columns) + ")"
            for first in range(0, len(values), 500):  # one INSERT per 500 rows: executemany is slow
                chunk = values[first : first + 500]
                params = [value for row in chunk for value in row]
                self._db.execute(f"INSERT INTO {name} VALUES {', '.join(row_marks for _ in chunk)}", params)

    def create_table_as(self, database: str, table: str, select: str) -> None:
        """Create (or replace) `database.table` from a DuckDB SELECT: for benchmark-sized bills."""
        with self._lock:
            self._db.execute(f"CREATE SCHEMA IF NOT EXISTS {CATALOG}.{_quote(database.lower())}")
            self._db.execute(f"CREATE OR REPLACE TABLE {_qualified(database, table)} AS {select}")

    def drop_table(self, database: str, table: str) -> None:
        with self._lock:
            self._db.execute(f"DROP TABLE IF EXISTS {_qualified(database, table)}")

    # -- faults -----------------------------------------------------------------------------------------

    def fail_next(self, operation: str, error: str, count: int = 1, *, message: str = "") -> None:
        """Answer the next `count` calls of `operation` (e.g. "StartQueryExecution") with the AWS error
        `error`: AccessDeniedException, ThrottlingException, TooManyRequestsException,
        InternalServerException (HTTP 500), InvalidRequestException or UnrecognizedClientException.
        Queued after earlier failures of the same operation; `message` replaces the realistic default."""
        self.enqueue(
            lambda request: self._error(self._injected(error, message, request)),
            count,
            when=lambda request: _operation(request) == operation,
        )

    def fail_next_query(
        self,
        error: str = "GENERIC_INTERNAL_ERROR",
        message: str = "Encountered too many errors talking to a worker node. The node may have crashed "
        "or be under too much load. This is probably a transient issue, so please retry your query in a few "
        "minutes.",
        *,
        count: int = 1,
        retryable: bool = True,
    ) -> None:
        """Make the next `count` queries FAIL with this reason instead of running, e.g. to test a caller's
        retry of a transient (Retryable) engine failure."""
        category, error_type = _QUERY_ERRORS.get(error, (1, 200))
        with self._lock:
            for _ in range(count):
                self._query_failures.append(QueryFailure(error, message, category, error_type, retryable))

    # -- per request ------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        operation = _operation(request)
        scope = _SCOPE.search(request.headers.get("authorization") or "")
        region = scope.group(1) if scope else "us-east-1"
        params = request.json() if request.body else {}
        try:
            if scope is None:
                raise _Answer("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
            if scope.group(2) != "athena":
                raise _Answer(
                    "InvalidSignatureException",
                    f"Credential should be scoped to correct service: 'athena', not '{scope.group(2)}'",
                )
            if request.headers.get("content-type") != CONTENT_TYPE or not isinstance(params, dict):
                raise _Answer("SerializationException", "Start of structure or map found where not expected.")
            route = self._routes().get(operation)
            if route is None:
                raise _Answer("UnknownOperationException", "")
            return Answer.json(200, route(params, region), content_type=CONTENT_TYPE)
        except _Answer as answer:
            return self._error(answer)

    def answer_headers(self, request: Request) -> dict[str, str]:
        return {"x-amzn-RequestId": str(uuid.uuid4())}

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        """Athena's own errors, as its API reference lists them (InvalidRequestException,
        TooManyRequestsException with a Reason, InternalServerException) and the AWS front door's
        (UnrecognizedClientException, AccessDeniedException), in AWS JSON 1.1. A missing table and an empty
        bill are not API errors in Athena: the query FAILS with TABLE_NOT_FOUND, or SUCCEEDS with no rows;
        so NOT_FOUND and NO_DATA act on the next StartQueryExecution and every other call runs normally."""
        operation = _operation(request)
        if fault in (Fault.NOT_FOUND, Fault.NO_DATA):
            if operation == "StartQueryExecution":
                with self._lock:
                    if fault is Fault.NO_DATA:
                        self._empty_queries += 1
                    else:
                        self._query_failures.append(_table_not_found(request))
            return self.handle(request)
        if fault is Fault.BAD_RESPONSE:
            return self.handle(request).truncated()
        error = {
            Fault.AUTH: "UnrecognizedClientException",
            Fault.PERMISSION: "AccessDeniedException",
            Fault.THROTTLED: "TooManyRequestsException",
            Fault.UNAVAILABLE: "InternalServerException",
        }[fault]
        answer = self._error(self._injected(error, "", request))
        if fault is Fault.THROTTLED and retry_after is not None:
            answer = replace(answer, headers={**answer.headers, "Retry-After": header_seconds(retry_after)})
        return answer

    @staticmethod
    def _error(answer: _Answer) -> Answer:
        payload: dict[str, Any] = {"__type": answer.code, **answer.fields}
        if answer.message:
            payload[_API_ERRORS.get(answer.code, (400, "Message"))[1]] = answer.message
        return Answer.json(answer.status, payload, {"x-amzn-ErrorType": answer.code}, content_type=CONTENT_TYPE)

    def _routes(self) -> dict[str, Callable[[dict[str, Any], str], dict[str, Any]]]:
        return {
            "StartQueryExecution": self._start_query_execution,
            "GetQueryExecution": self._get_query_execution,
            "GetQueryResults": self._get_query_results,
            "StopQueryExecution": self._stop_query_execution,
            "GetWorkGroup": self._get_work_group,
        }

    def _injected(self, error: str, message: str, request: Request) -> _Answer:
        operation = _operation(request)
        scope = _SCOPE.search(request.headers.get("authorization") or "")
        region = scope.group(1) if scope else "us-east-1"
        body = request.json()
        params = body if isinstance(body, dict) else {}
        status = _API_ERRORS.get(error, (400, "Message"))[0]
        workgroup = params.get("WorkGroup") or "primary"
        with self._lock:
            execution = self._executions.get(str(params.get("QueryExecutionId")))
            if execution is not None:
                workgroup = execution.workgroup
        bucket = f"aws-athena-query-results-{ACCOUNT}-{region}"
        defaults = {
            "AccessDeniedException": f"User: {ROLE_ARN} is not authorized to perform: athena:{operation} on "
            f"resource: arn:aws:athena:{region}:{ACCOUNT}:workgroup/{workgroup} because no identity-based "
            f"policy allows the athena:{operation} action",
            "ThrottlingException": "Rate exceeded",
            "TooManyRequestsException": "You have exceeded the limit for the number of queries you can run "
            "concurrently. Reduce the number of concurrent queries submitted by this account. Contact customer "
            "support to request a concurrent query limit increase.",
            "InternalServerException": "We encountered an internal error. Please try again.",
            "InvalidRequestException": f"Unable to verify/create output bucket {bucket}"
            if operation == "StartQueryExecution"
            else "Request is not valid",
            "UnrecognizedClientException": "The security token included in the request is invalid.",
        }
        fields: dict[str, Any] = {}
        if error == "TooManyRequestsException":
            fields["Reason"] = "CONCURRENT_QUERY_LIMIT_EXCEEDED"
        return _Answer(error, message or defaults.get(error, error), status, **fields)

    # -- operations -------------------------------------------------------------------------------------

    def _start_query_execution(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        query = params.get("QueryString")
        if not isinstance(query, str) or not query:
            raise _Answer(
                "InvalidRequestException", "QueryString must not be empty", AthenaErrorCode="INVALID_INPUT"
            )
        token = params.get("ClientRequestToken")
        with self._lock:  # held throughout, so two retries of one token cannot both run
            return self._start(query, token, params, region)

    def _start(self, query: str, token: str | None, params: dict[str, Any], region: str) -> dict[str, Any]:
        if token and token in self._tokens:
            existing = self._executions[self._tokens[token]]
            if existing.query != query:
                raise _Answer(
                    "InvalidRequestException",
                    "Idempotent parameters do not match",
                    AthenaErrorCode="INVALID_INPUT",
                )
            return {"QueryExecutionId": existing.id}
        context = dict(params.get("QueryExecutionContext") or {})
        if context.get("Database"):
            context.setdefault("Catalog", "AwsDataCatalog")
        output = (params.get("ResultConfiguration") or {}).get("OutputLocation") or _default_output(region)
        execution = _Execution(
            id=str(uuid.uuid4()),
            query=query,
            context=context,
            workgroup=params.get("WorkGroup") or "primary",
            output=output,
            token=token,
            submitted=time.time(),
        )
        self._executions[execution.id] = execution
        if token:
            self._tokens[token] = execution.id
        if self._query_failures:
            execution.failure = self._query_failures.popleft()
        else:
            self._run(execution, params.get("ExecutionParameters") or [])
            if self._empty_queries and execution.failure is None:
                self._empty_queries -= 1
                execution.rows = []
        if self.polls_before_done <= 0:
            self._settle(execution)
        return {"QueryExecutionId": execution.id}

    def _get_query_execution(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        with self._lock:
            execution = self._execution(params)
            if not execution.settled and not execution.cancelled:
                if execution.polls < self.polls_before_done:
                    execution.polls += 1
                else:
                    self._settle(execution)
            return {"QueryExecution": self._describe(execution)}

    def _get_query_results(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        with self._lock:
            execution = self._execution(params)
            if not execution.settled and execution.polls >= self.polls_before_done:
                self._settle(execution)
            state = self._state(execution)
            if state == "FAILED" and execution.failure is not None:
                raise _Answer(
                    "InvalidRequestException", execution.failure.reason, AthenaErrorCode="INVALID_INPUT"
                )
            if state != "SUCCEEDED":
                raise _Answer(
                    "InvalidRequestException",
                    f"Query has not yet finished. Current state: {state}",
                    AthenaErrorCode="INVALID_INPUT",
                )
            if not execution.mangled:
                execution.mangled = True
                if self.mangle is not None:
                    execution.rows = self.mangle([list(row) for row in execution.rows])
            limit = params.get("MaxResults", 1000)
            if not isinstance(limit, int) or not 1 <= limit <= 1000:
                raise _Answer(
                    "InvalidRequestException",
                    f"1 validation error detected: Value '{limit}' at "
                    "'maxResults' failed to satisfy constraint: Member must have value less than or "
                    "equal to 1000",
                    AthenaErrorCode="INVALID_INPUT",
                )
            offset = 0
            if params.get("NextToken"):
                offset = _offset(params["NextToken"], execution.id)
            size = min(limit, max(self.page_size, 1))
            header = [[column["Name"] for column in execution.columns]] if execution.columns else []
            everything = header + execution.rows
            page = everything[offset : offset + size]
            answer: dict[str, Any] = {
                "UpdateCount": 0,
                "ResultSet": {
                    "Rows": [
                        {"Data": [{} if v is None else {"VarCharValue": v} for v in row]} for row in page
                    ],
                    "ResultSetMetadata": {"ColumnInfo": execution.columns},
                },
            }
            if offset + size < len(everything):
                answer["NextToken"] = _token(execution.id, offset + size)
            return answer

    def _stop_query_execution(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        with self._lock:
            execution = self._execution(params)
            if not execution.settled:
                execution.cancelled = True
                execution.settled = True
                execution.completed = time.time()
        return {}

    def _get_work_group(self, params: dict[str, Any], region: str) -> dict[str, Any]:
        name = params.get("WorkGroup") or "primary"
        return {
            "WorkGroup": {
                "Name": name,
                "State": "ENABLED",
                "Configuration": {
                    "ResultConfiguration": {"OutputLocation": _default_output(region)},
                    "EnforceWorkGroupConfiguration": False,
                    "PublishCloudWatchMetricsEnabled": True,
                    "RequesterPaysEnabled": False,
                    "EngineVersion": ENGINE_VERSION,
                },
                "Description": "",
                "CreationTime": 1_700_000_000.0,
            }
        }

    # -- executions -------------------------------------------------------------------------------------

    def _execution(self, params: dict[str, Any]) -> _Execution:
        execution_id = params.get("QueryExecutionId")
        execution = self._executions.get(execution_id) if isinstance(execution_id, str) else None
        if execution is None:
            raise _Answer(
                "InvalidRequestException",
                f"QueryExecution {execution_id} was not found",
                AthenaErrorCode="INVALID_INPUT",
            )
        return execution

    def _state(self, execution: _Execution) -> str:
        if execution.cancelled:
            return "CANCELLED"
        if not execution.settled:
            return "RUNNING"
        return "FAILED" if execution.failure is not None else "SUCCEEDED"

    def _settle(self, execution: _Execution) -> None:
        if execution.settled:
            return
        execution.settled = True
        execution.completed = time.time()
        if execution.failure is None:
            self.scanned_bytes_total += execution.scanned

    def _describe(self, execution: _Execution) -> dict[str, Any]:
        state = self._state(execution)
        status: dict[str, Any] = {"State": state, "SubmissionDateTime": execution.submitted}
        if execution.completed is not None:
            status["CompletionDateTime"] = execution.completed
        if state == "FAILED" and execution.failure is not None:
            failure = execution.failure
            status["StateChangeReason"] = failure.reason
            status["AthenaError"] = {
                "ErrorCategory": failure.category,
                "ErrorType": failure.error_type,
                "Retryable": failure.retryable,
                "ErrorMessage": failure.reason,
            }
        elif state == "CANCELLED":
            status["StateChangeReason"] = "Query cancelled by user"
        done = state in ("SUCCEEDED", "FAILED", "CANCELLED")
        engine = execution.engine_ms if done else 0
        return {
            "QueryExecutionId": execution.id,
            "Query": execution.query,
            "StatementType": execution.statement_type,
            "SubstatementType": execution.substatement_type,
            "ResultConfiguration": {"OutputLocation": f"{execution.output.rstrip('/')}/{execution.id}.csv"},
            "ResultReuseConfiguration": {"ResultReuseByAgeConfiguration": {"Enabled": False}},
            "QueryExecutionContext": execution.context,
            "Status": status,
            "Statistics": {
                "EngineExecutionTimeInMillis": engine,
                "DataScannedInBytes": execution.scanned if state == "SUCCEEDED" else 0,
                "TotalExecutionTimeInMillis": engine + 20 if done else 0,
                "QueryQueueTimeInMillis": 10,
                "ServicePreProcessingTimeInMillis": 5,
                "QueryPlanningTimeInMillis": 1 if done else 0,
                "ServiceProcessingTimeInMillis": 5 if done else 0,
                "ResultReuseInformation": {"ReusedPreviousResult": False},
            },
            "WorkGroup": execution.workgroup,
            "EngineVersion": ENGINE_VERSION,
        }

    def _run(self, execution: _Execution, parameters: list[str]) -> None:
        """Run the query in DuckDB (the caller holds the lock); keep its result or its failure."""
        catalog = str(execution.context.get("Catalog") or CATALOG).lower()
        database = str(execution.context.get("Database") or "default").lower()
        started = time.monotonic()
        sql, plan = execution.query, None
        try:
            if catalog != CATALOG:
                raise _Failed(QueryFailure.of("CATALOG_NOT_FOUND", f"Catalog '{catalog}' not found"))
            sql = _bind(execution.query, parameters)
            plan = _plan(sql, database)
            execution.statement_type, execution.substatement_type = plan.statement_type
            for reference in plan.tables:
                self._check_exists(reference, sql)
            execution.scanned = BYTES_PER_ROW * sum(
                self._db.execute(f"SELECT count(*) FROM {_qualified(db, name)}").fetchall()[0][0]
                for db, name in {(r.database, r.name) for r in plan.tables}
            )
            self.executed.append(plan.duckdb_sql)
            execution.columns, execution.rows = self._fetch(plan)
        except _Failed as failed:
            execution.failure = failed.failure
            execution.scanned = 0
        except duckdb.Error as error:
            execution.failure = _classify(error, sql, plan)
            execution.scanned = 0
        execution.engine_ms = max(1, round((time.monotonic() - started) * 1000))

    def _check_exists(self, reference: _TableRef, sql: str) -> None:
        where = _position(sql, reference.start)
        schema = self._db.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE catalog_name = ? AND schema_name = ?",
            [CATALOG, reference.database],
        ).fetchall()[0][0]
        if not schema:
            raise _Failed(
                QueryFailure.of("SCHEMA_NOT_FOUND", f"{where}: Schema '{reference.database}' does not exist")
            )
        table = self._db.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_catalog = ? AND table_schema = ? "
            "AND table_name = ?",
            [CATALOG, reference.database, reference.name],
        ).fetchall()[0][0]
        if not table:
            raise _Failed(
                QueryFailure.of(
                    "TABLE_NOT_FOUND",
                    f"{where}: Table '{CATALOG}.{reference.database}.{reference.name}' does not exist",
                )
            )

    def _fetch(self, plan: _Plan) -> tuple[list[dict[str, Any]], list[list[str | None]]]:
        relation = self._db.sql(plan.duckdb_sql)
        if relation is None:  # a statement without a result
            return [], []
        types = [str(kind.id) for kind in relation.types]
        specs = [str(kind) for kind in relation.types]
        if "timestamp with time zone" in types:  # fetching those needs pytz; read them as UTC timestamps
            select = ", ".join(
                f"CAST(#{i + 1} AS TIMESTAMP)" if kind == "timestamp with time zone" else f"#{i + 1}"
                for i, kind in enumerate(types)
            )
            relation = self._db.sql(f"SELECT {select} FROM ({plan.duckdb_sql}) AS _q")
        names = relation.columns if plan.names is None or len(plan.names) != len(types) else plan.names
        columns = [
            _column_info(name.lower(), kind, spec)
            for name, kind, spec in zip(names, types, specs, strict=True)
        ]
        athena_types = [column["Type"] for column in columns]
        rows = [
            [_text(value, kind) for value, kind in zip(row, athena_types, strict=True)]
            for row in relation.fetchall()
        ]
        return columns, rows


# -- SQL -----------------------------------------------------------------------------------------------


class _Failed(Exception):
    def __init__(self, failure: QueryFailure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


@dataclass(frozen=True)
class _TableRef:
    database: str
    name: str
    start: int  # offset of the reference in the SQL, for Trino's "line L:C"


@dataclass(frozen=True)
class _Plan:
    duckdb_sql: str
    tables: list[_TableRef]  # tables the query reads, in the order they appear
    names: list[str] | None  # Trino's output column names, when the select list tells them
    statement_type: tuple[str, str]  # StatementType, SubstatementType
    tree: exp.Expression


def _bind(sql: str, parameters: list[str]) -> str:
    """Fill `?` placeholders with ExecutionParameters (SQL literals), as Athena does."""
    try:
        tokens = sqlglot.Dialect.get_or_raise("trino").tokenize(sql)
    except TokenError as error:
        raise _Failed(QueryFailure.of("SYNTAX_ERROR", f"line 1:1: {error}")) from None
    marks = [token for token in tokens if token.token_type == TokenType.PLACEHOLDER and token.text == "?"]
    if len(marks) != len(parameters):
        raise _Failed(
            QueryFailure.of(
                "INVALID_PARAMETER_USAGE",
                f"line 1:1: Incorrect number of parameters: expected {len(marks)} but found {len(parameters)}",
            )
        )
    for token, value in reversed(list(zip(marks, parameters, strict=True))):
        sql = sql[: token.start] + value + sql[token.end + 1 :]
    return sql


def _plan(sql: str, database: str) -> _Plan:
    """Parse Trino SQL, qualify its tables as awsdatacatalog.<db>.<table>, and write it as DuckDB SQL."""
    try:
        statements = [tree for tree in sqlglot.parse(sql, read="trino") if tree is not None]
    except ParseError as error:
        detail = error.errors[0] if error.errors else {}
        line, col = detail.get("line", 1), detail.get("col", 1)
        highlight = str(detail.get("highlight", ""))
        column = max(1, col - len(highlight) + 1)
        message = f"line {line}:{column}: mismatched input '{highlight}'. {detail.get('description', error)}"
        raise _Failed(QueryFailure.of("SYNTAX_ERROR", message)) from None
    except TokenError as error:
        raise _Failed(QueryFailure.of("SYNTAX_ERROR", f"line 1:1: {error}")) from None
    if len(statements) != 1:
        raise _Failed(QueryFailure.of("SYNTAX_ERROR", "line 1:1: Only one sql statement is allowed"))
    tree = statements[0]
    if not isinstance(tree, exp.Expression):
        raise _Failed(QueryFailure.of("GENERIC_INTERNAL_ERROR", f"sqlglot parsed {type(tree).__name__}"))
    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    tables: list[_TableRef] = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            continue
        name = table.name.lower()
        if not table.args.get("db") and name in ctes:
            continue
        if table.db.lower() == "information_schema":
            continue  # DuckDB's own (its data_type spellings are DuckDB's, e.g. VARCHAR, not varchar)
        if table.args.get("catalog") and table.catalog.lower() != CATALOG:
            start = table.args["catalog"].meta.get("start", 0)
            message = f"{_position(sql, start)}: Catalog '{table.catalog.lower()}' not found"
            raise _Failed(QueryFailure.of("CATALOG_NOT_FOUND", message))
        first = table.parts[0]
        schema = (table.db or database).lower()
        tables.append(_TableRef(schema, name, first.meta.get("start", 0)))
        table.set("catalog", exp.to_identifier(CATALOG))
        table.set("db", exp.to_identifier(schema, quoted=True))
        table.set("this", exp.to_identifier(name, quoted=True))
    if not isinstance(tree, exp.Query):
        tables = []  # DDL and the like: no existence checks, no bytes scanned
    tables.sort(key=lambda reference: reference.start)
    return _Plan(tree.sql(dialect="duckdb"), tables, _output_names(tree), _statement_type(tree), tree)


def _output_names(tree: exp.Expression) -> list[str] | None:
    """Trino's names for the result columns: the alias, the column's name, else _col<position>."""
    if not isinstance(tree, exp.Query):
        return None
    selects = tree.selects
    if any(select.is_star for select in selects):
        return None
    names = []
    for index, select in enumerate(selects):
        if isinstance(select, exp.Alias):
            names.append(select.alias.lower())
        elif isinstance(select, exp.Column):
            names.append(select.name.lower())
        else:
            names.append(f"_col{index}")
    return names


def _statement_type(tree: exp.Expression) -> tuple[str, str]:
    if isinstance(tree, exp.Query):
        return "DML", "SELECT"
    if isinstance(tree, exp.Insert):
        return "DML", "INSERT"
    if isinstance(tree, exp.Create):
        return "DDL", f"CREATE_{tree.kind or 'TABLE'}".upper()
    if isinstance(tree, exp.Drop):
        return "DDL", f"DROP_{tree.kind or 'TABLE'}".upper()
    return "UTILITY", type(tree).__name__.upper()


def _classify(error: duckdb.Error, sql: str, plan: _Plan | None) -> QueryFailure:
    """A DuckDB error as the failure Athena would report for the same mistake."""
    text = str(error)
    first = text.splitlines()[0] if text else type(error).__name__
    detail = first.split(": ", 1)[-1]
    missing = re.search(r'Referenced column "([^"]+)" not found|does not have a column named "([^"]+)"', text)
    if missing and isinstance(error, duckdb.BinderException):
        column = (missing.group(1) or missing.group(2)).lower()
        start, shown = _column_start(plan, column, sql)
        message = (
            f"{_position(sql, start)}: Column '{shown}' cannot be resolved or requester is not authorized "
            "to access requested resources"
        )
        return QueryFailure.of("COLUMN_NOT_FOUND", message)
    function = re.search(r"Function with name (\w+) does not exist", text)
    if function and isinstance(error, duckdb.CatalogException):
        name = function.group(1)
        return QueryFailure.of(
            "FUNCTION_NOT_FOUND", f"{_position(sql, _find(sql, name))}: Function '{name}' not registered"
        )
    if isinstance(error, duckdb.BinderException) and "No function matches" in text:
        name = re.search(r"'(\w+)\(", text)
        start = _find(sql, name.group(1)) if name else 0
        return QueryFailure.of(
            "FUNCTION_NOT_FOUND", f"{_position(sql, start)}: Unexpected parameters: {detail}"
        )
    if isinstance(error, duckdb.BinderException) and "GROUP BY" in text:
        return QueryFailure.of("EXPRESSION_NOT_AGGREGATE", f"line 1:1: {detail}")
    if isinstance(error, duckdb.ConversionException):
        cast = re.search(r"Could not convert string '(.*)' to (\w+)", first)
        if cast:
            target = _DUCKDB_CAST_TARGETS.get(cast.group(2), cast.group(2))
            return QueryFailure.of("INVALID_CAST_ARGUMENT", f"Cannot cast '{cast.group(1)}' to {target}")
        return QueryFailure.of("INVALID_CAST_ARGUMENT", detail)
    if isinstance(error, duckdb.OutOfRangeException):
        return QueryFailure.of("NUMERIC_VALUE_OUT_OF_RANGE", detail)
    if "Division by zero" in text:
        return QueryFailure.of("DIVISION_BY_ZERO", "Division by zero")
    # Anything else is a gap in the fake (SQL sqlglot/DuckDB cannot run), reported loudly as Athena's
    # internal error, with what DuckDB said and the SQL it was given.
    ran = plan.duckdb_sql if plan is not None else sql
    return QueryFailure.of("GENERIC_INTERNAL_ERROR", f"{first} [DuckDB SQL: {ran}]")


def _column_start(plan: _Plan | None, column: str, sql: str) -> tuple[int, str]:
    if plan is not None:
        for node in plan.tree.find_all(exp.Column):
            if node.name.lower() == column:
                parts = [part for part in node.parts if part.meta.get("start") is not None]
                shown = ".".join(part.name for part in node.parts if part.name.lower() != CATALOG)
                if parts:
                    return int(parts[0].meta["start"]), shown
    return _find(sql, column), column


def _find(sql: str, word: str) -> int:
    match = re.search(rf"\b{re.escape(word)}\b", sql, re.IGNORECASE)
    return match.start() if match else 0


def _position(sql: str, start: int) -> str:
    """Trino's "line L:C" (both from 1) of an offset into the SQL."""
    line = sql.count("\n", 0, start) + 1
    column = start - (sql.rfind("\n", 0, start) + 1) + 1
    return f"line {line}:{column}"


def _operation(request: Request) -> str:
    return (request.headers.get("x-amz-target") or "").removeprefix("AmazonAthena.")


def _table_not_found(request: Request) -> QueryFailure:
    """TABLE_NOT_FOUND for the first table a StartQueryExecution's SQL names."""
    body = request.json() if request.body else None
    params = body if isinstance(body, dict) else {}
    database = str((params.get("QueryExecutionContext") or {}).get("Database") or "default")
    try:
        tables = _plan(str(params.get("QueryString") or ""), database).tables
    except _Failed:
        tables = []
    name = f"{tables[0].database}.{tables[0].name}" if tables else f"{database}.unknown"
    return QueryFailure.of("TABLE_NOT_FOUND", f"line 1:1: Table '{CATALOG}.{name}' does not exist")



def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(database: str, table: str) -> str:
    return f"{CATALOG}.{_quote(database.lower())}.{_quote(table.lower())}"


def _default_output(region: str) -> str:
    return f"s3://aws-athena-query-results-{ACCOUNT}-{region}/"


def _token(execution_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"id": execution_id, "offset": offset}).encode()).decode()


def _offset(token: str, execution_id: str) -> int:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        if decoded["id"] == execution_id:
            return int(decoded["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    raise _Answer("InvalidRequestException", "The NextToken is not valid", AthenaErrorCode="INVALID_INPUT")


# -- result text ---------------------------------------------------------------------------------------


def _column_info(name: str, kind: str, spec: str) -> dict[str, Any]:
    precision, scale = 0, 0
    if kind == "decimal":
        athena = "decimal"
        numbers = re.findall(r"\d+", spec)
        precision, scale = (int(numbers[0]), int(numbers[1])) if len(numbers) >= 2 else (38, 0)
    else:
        athena, precision = _COLUMN_TYPES.get(kind, (kind, 0))
    return {
        "CatalogName": "hive",
        "SchemaName": "",
        "TableName": "",
        "Name": name,
        "Label": name,
        "Type": athena,
        "Precision": precision,
        "Scale": scale,
        "Nullable": "UNKNOWN",
        "CaseSensitive": athena == "varchar",
    }


def _text(value: Any, athena_type: str) -> str | None:
    """One result value as Athena's VarCharValue; None for NULL."""
    if value is None:
        return None
    if athena_type == "timestamp with time zone" and isinstance(value, datetime):
        return f"{_timestamp(value)} UTC"
    if athena_type == "float" and isinstance(value, float):
        return _java_float(value, single=True)
    return _render(value)


def _render(value: Any) -> str:
    if value is None:
        return "null"  # inside an array, map or row
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _java_float(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, clock_time):
        return f"{value:%H:%M:%S}.{value.microsecond // 1000:03d}"
    if isinstance(value, timedelta):
        seconds = value.seconds
        return (
            f"{value.days} {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}."
            f"{value.microseconds // 1000:03d}"
        )
    if isinstance(value, bytes | bytearray | memoryview):
        return " ".join(f"{byte:02x}" for byte in bytes(value))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_render(k)}={_render(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render(item) for item in value) + "]"
    return str(value)


def _timestamp(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}.{value.microsecond // 1000:03d}"


def _java_float(value: float, *, single: bool = False) -> str:
    """Java's Double.toString (Float.toString with `single`), which is how Trino writes a double/real:
    plain decimals from 10^-3 up to 10^7 ("0.096", "12.0"), computerised scientific notation outside
    ("1.0E-4", "1.23456789E8"), always with a digit after the point."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    shortest = repr(value)
    if single:  # the fewest digits that still read back as the same 32-bit float
        for places in range(1, 10):
            candidate = f"{value:.{places}g}"
            if struct.unpack("f", struct.pack("f", float(candidate)))[0] == value:
                shortest = candidate
                break
    sign, digit_tuple, exponent = Decimal(shortest).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    point = len(digits) + exponent  # digits before the decimal point
    if -3 <= point - 1 < 7:
        if point <= 0:
            body = "0." + "0" * -point + digits
        elif point >= len(digits):
            body = digits + "0" * (point - len(digits)) + ".0"
        else:
            body = digits[:point] + "." + digits[point:]
    else:
        body = f"{digits[0]}.{digits[1:] or '0'}E{point - 1}"
    return ("-" if sign else "") + body
