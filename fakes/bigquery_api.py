"""A local fake of the BigQuery REST API v2 (its query half), reached by the real `google-cloud-bigquery`
client through `ClientOptions(api_endpoint=fake.url)`, that EXECUTES the GoogleSQL it is sent.

Each query is parsed with sqlglot (`read="bigquery"`); its named (`@start`) or positional (`?`) parameters
are replaced by literals of their declared types (`CAST('…' AS TIMESTAMP)`, `CAST([…] AS ARRAY<STRING>)`);
its 3-part (`project.dataset.table`, backticked whole or per part, or unquoted) and 2-part names are
resolved against the tables made with `create_table`; the tree is rendered for duckdb (`dialect="duckdb"`,
what `sqlglot.transpile(sql, read="bigquery", write="duckdb")` does) and run in an in-process duckdb
database whose session time zone is UTC. Each job's duckdb SQL is kept in `jobs[i]["duckdbSql"]`.
A few GoogleSQL forms are rewritten first, because duckdb reads them differently: decimal literals (`1.5`)
are FLOAT64, DATE_TRUNC/DATE_ADD/DATE_SUB return a DATE, `FROM UNNEST(labels)` without an alias exposes
the STRUCT fields (`WHERE key = 'team'`), `_PARTITIONDATE` is `DATE(_PARTITIONTIME)`, and a wildcard table
(`…_v1_*`) is the UNION ALL of the matching tables with a `_TABLE_SUFFIX` column.

What it models, because the client (and any caller's error handling) depends on each of these:
- the endpoints `google-cloud-bigquery` 3.x uses for queries, under `/bigquery/v2/projects/{project}/`:
  `POST jobs` (jobs.insert), `POST queries` (jobs.query), `GET queries/{job}` (jobs.getQueryResults),
  `GET jobs/{job}` (jobs.get) and `POST jobs/{job}/cancel`; the `fields` partial response (top-level
  names); `location` checks on job look-ups; a jobs.insert reusing a job ID → 409 `duplicate`;
- job life: a job runs when it is submitted, but reports itself unfinished (`status.state` RUNNING,
  `jobComplete: false`) to its first `polls_before_done` status reads (jobs.get, getQueryResults, and the
  jobs.query answer itself), then DONE;
- failures as BigQuery reports them: a failed job is DONE with `status.errorResult` {reason, message}
  (jobs.insert, jobs.get), while jobs.query and getQueryResults answer with the HTTP error (`notFound` →
  404, `invalidQuery` → 400, `bytesBilledLimitExceeded` → 400), in Google's JSON error body
  `{"error": {"code", "message", "errors": [{"message", "domain": "global", "reason"}], "status"}}`.
  A missing table: "Not found: Table p:d.t was not found in location US"; a missing dataset: "Not found:
  Dataset p:d was not found in location US"; anything sqlglot or duckdb refuses: `invalidQuery`;
- rows encoded as the REST API does (`{"f": [{"v": …}]}`; every scalar a string; NULL as null; FLOAT as
  decimal text, "NaN", "Infinity"; NUMERIC without trailing zeros; DATE "2024-06-01"; TIMESTAMP as int64
  microseconds when `formatOptions.useInt64Timestamp` is true, else seconds in Java's E-notation,
  "1.7172E9"; ARRAY as `[{"v": …}]`, [] for NULL; STRUCT as `{"f": […]}`), a legacy-typed schema from the
  duckdb result types (VARCHAR→STRING, DOUBLE/FLOAT→FLOAT, any integer→INTEGER, DECIMAL→NUMERIC,
  DATE→DATE, TIMESTAMP/TIMESTAMPTZ→TIMESTAMP, TIME→TIME, BOOLEAN→BOOLEAN, BLOB→BYTES, lists→mode
  REPEATED, structs→RECORD with `fields`), and anonymous result columns named `f0_`, `f1_`… as BigQuery
  names them;
- paging: `maxResults` (capped at `page_size`; 0 → no rows and no token), `startIndex`, opaque
  `pageToken`, `totalRows`;
- statistics, deterministic: `totalBytesProcessed` = `row_bytes` (100) times the row count of every
  distinct table the query references (no partition or column pruning); `totalBytesBilled` = that rounded
  up to a whole MiB, at least 10 MiB, or 0 for a query that reads no table and for a dry run; a job whose
  billed bytes would exceed `maximumBytesBilled` fails with `bytesBilledLimitExceeded` and bills nothing.
  `bytes_billed_total` adds each job's totalBytesBilled once;
- test controls (it is a `FakeServer`): generic faults (`inject`) in BigQuery's shapes; `fail_next` (accessDenied, notFound, rateLimitExceeded, quotaExceeded, backendError,
  unauthorized, invalidQuery) on the submitting call, the results call or jobs.get; `delay_seconds` before
  every answer; `mangle` to corrupt encoded cells; a record of every request (`calls`) and every
  submitted query configuration (`jobs`).

Table data: `create_table` takes duckdb column types; a naive TIMESTAMP holds UTC, and the billing export's
`_PARTITIONTIME` pseudo-column is an ordinary column (so, unlike BigQuery, `SELECT *` returns it).

Not modelled: legacy SQL (refused with `invalidQuery`), scripts, DML and DDL (one query per job),
destination tables, the query cache, sessions, the BigQuery Storage API, authentication (no credential is
needed; with AnonymousCredentials a 401 makes google-auth raise "Anonymous credentials cannot be
refreshed"), locations (every dataset is in `LOCATION`; a job's location is echoed back), and the GoogleSQL
semantics sqlglot does not carry over to duckdb: FORMAT('%s', …) (duckdb's FORMAT uses `{}`; the format
string comes back unchanged) and WEEK(<weekday>) / WEEK (BigQuery weeks start on Sunday, duckdb's on
Monday).
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import re
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import sqlglot
from sqlglot import exp

from fakes.server import Answer, FakeServer, Fault, Request

API_PREFIX = "/bigquery/v2"
LOCATION = "US"  # where the fake's datasets live, and a job's location when the request names none

# The detailed billing export table (`gcp_billing_export_resource_v1_…`) as DuckDB columns; the real
# `_PARTITIONTIME` pseudo-column is stored as an ordinary one.
BILLING_COLUMNS = [
    ("billing_account_id", "VARCHAR"),
    ("service", "STRUCT(id VARCHAR, description VARCHAR)"),
    ("sku", "STRUCT(id VARCHAR, description VARCHAR)"),
    ("usage_start_time", "TIMESTAMP"),
    ("usage_end_time", "TIMESTAMP"),
    ("project", "STRUCT(id VARCHAR, number VARCHAR, name VARCHAR)"),
    ("labels", "STRUCT(key VARCHAR, value VARCHAR)[]"),
    ("system_labels", "STRUCT(key VARCHAR, value VARCHAR)[]"),
    ("location", "STRUCT(location VARCHAR, country VARCHAR, region VARCHAR, zone VARCHAR)"),
    ("resource", "STRUCT(name VARCHAR, global_name VARCHAR)"),
    ("export_time", "TIMESTAMP"),
    ("cost", "DOUBLE"),
    ("currency", "VARCHAR"),
    ("currency_conversion_rate", "DOUBLE"),
    ("usage", "STRUCT(amount DOUBLE, unit VARCHAR, amount_in_pricing_units DOUBLE, pricing_unit VARCHAR)"),
    ("credits", "STRUCT(name VARCHAR, amount DOUBLE, full_name VARCHAR, id VARCHAR, type VARCHAR)[]"),
    ("invoice", "STRUCT(month VARCHAR)"),
    ("cost_type", "VARCHAR"),
    # since 2026-01 (Google's "Spend-based CUDs data model updates"): set on usage a migrated spend-based
    # CUD covered, which is billed at its discounted price; NULL elsewhere
    ("consumption_model", "STRUCT(id VARCHAR, description VARCHAR)"),
    ("_PARTITIONTIME", "TIMESTAMP"),
]
ROW_BYTES = 100  # bytes "processed" per row of every table a query references
MIB = 2**20
MIN_BILLED_BYTES = 10 * MIB  # BigQuery bills at least 10 MB a query that reads a table

_PATH = re.compile(r"^/bigquery/v2/projects/([^/]+)/(jobs|queries)(?:/([^/]+))?(/cancel)?$")
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
# reason → HTTP status, as BigQuery answers them
_REASON_STATUS = {
    "accessDenied": 403,
    "notFound": 404,
    "rateLimitExceeded": 403,
    "quotaExceeded": 403,
    "backendError": 500,
    "unauthorized": 401,
    "invalidQuery": 400,
    "invalid": 400,
    "bytesBilledLimitExceeded": 400,
    "duplicate": 409,
}
_FAIL_STEPS = ("insert", "results", "get")
_FLOAT_LITERAL = re.compile(r"^(\d*\.\d*([eE][+-]?\d+)?|\d+[eE][+-]?\d+)$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# duckdb type id → BigQuery (legacy) schema type
_SCALAR_TYPES = {
    "varchar": "STRING",
    "uuid": "STRING",
    "double": "FLOAT",
    "float": "FLOAT",
    "tinyint": "INTEGER",
    "smallint": "INTEGER",
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "hugeint": "INTEGER",
    "utinyint": "INTEGER",
    "usmallint": "INTEGER",
    "uinteger": "INTEGER",
    "ubigint": "INTEGER",
    "uhugeint": "INTEGER",
    "null": "INTEGER",  # `SELECT NULL` is an INT64 in GoogleSQL
    "decimal": "NUMERIC",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "timestamp_s": "TIMESTAMP",
    "timestamp_ms": "TIMESTAMP",
    "timestamp_ns": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMP",
    "time": "TIME",
    "blob": "BYTES",
    "json": "JSON",
    "interval": "INTERVAL",
}
# query parameter type → GoogleSQL type name
_PARAM_TYPES = {
    "INTEGER": "INT64",
    "FLOAT": "FLOAT64",
    "BOOLEAN": "BOOL",
    "RECORD": "STRUCT",
    "NUMERIC": "NUMERIC(38, 9)",
    "BIGNUMERIC": "NUMERIC(38, 9)",
    "DECIMAL": "NUMERIC(38, 9)",
    "BIGDECIMAL": "NUMERIC(38, 9)",
}


def google_error(code: int, reason: str, message: str) -> dict[str, Any]:
    """BigQuery's JSON error body."""
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": _STATUS.get(code, "UNKNOWN"),
        }
    }


class QueryError(Exception):
    """A job failure: `reason` and `message` as BigQuery puts them in `status.errorResult`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    @property
    def status(self) -> int:
        return _REASON_STATUS.get(self.reason, 400)

    def error_result(self) -> dict[str, Any]:
        result = {"reason": self.reason, "message": self.message}
        if self.reason == "invalidQuery":
            result["location"] = "query"
        return result


@dataclass
class _Job:
    project: str
    job_id: str
    location: str
    configuration: dict[str, Any]  # the job resource's `configuration`
    created_ms: int
    pending_polls: int
    error: QueryError | None = None
    fields: list[dict[str, Any]] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    bytes_processed: int = 0
    bytes_billed: int = 0
    tables: list[str] = field(default_factory=list)
    ended_ms: int = 0
    encoded: dict[bool, list[list[Any]]] = field(default_factory=dict)  # by useInt64Timestamp

    @property
    def reference(self) -> dict[str, str]:
        return {"projectId": self.project, "jobId": self.job_id, "location": self.location}

    @property
    def dry_run(self) -> bool:
        return bool(self.configuration.get("dryRun"))


class FakeBigQuery(FakeServer):
    """The server; use as a context manager (`with FakeBigQuery() as fake: fake.url …`) or start()/stop().

    `page_size` caps the rows in any one page, whatever `maxResults` asks for; `polls_before_done` is how
    many status reads see a job unfinished before it reports DONE (0: done as soon as it is submitted).
    """

    delay_first = True  # `delay_seconds` passes before a request takes effect: a timed-out insert never ran

    def __init__(self, *, page_size: int = 1000, polls_before_done: int = 1) -> None:
        super().__init__()
        self.page_size = page_size
        self.polls_before_done = polls_before_done
        self.jobs: list[dict[str, Any]] = []  # every submitted query configuration, see `_record`
        self.bytes_billed_total = 0
        self.errors: list[str] = []  # tracebacks of the fake's own failures (answered 400 "invalid")
        self.row_bytes = ROW_BYTES  # bytes "processed" per row read: raise it to bill past 10 MiB cheaply
        # rows → rows, to inject malformed cells: called once per job (and timestamp format) with all its rows,
        # each the list of its cells' encoded `v` values, when its rows are first served; pages follow
        self.mangle: Callable[[list[list[Any]]], list[list[Any]]] | None = None
        self._db_lock = threading.Lock()
        self._empty_jobs = 0  # the next jobs this many succeed with no rows (Fault.NO_DATA)
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._tables: dict[str, int] = {}  # "project.dataset.table" → row count
        self._db = duckdb.connect(":memory:")
        self._db.execute("SET TimeZone = 'UTC'")

    @property
    def calls(self) -> list[str]:
        """"METHOD path" of every request, e.g. "GET /bigquery/v2/projects/p/jobs/j" (no query string)."""
        with self._lock:
            return [f"{r.method} {r.path}" for r in self.requests]

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """stop(), then drop the database: the end of the context manager."""
        self.stop()
        with self._db_lock:
            self._db.close()

    # -- data ------------------------------------------------------------------------------------------------

    def create_table(
        self, table_id: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]
    ) -> None:
        """Create (or replace) table "project.dataset.table" with (name, duckdb type) columns and rows of
        Python values: str, int, float, Decimal, bool, date, datetime (naive = UTC), dicts for STRUCTs
        (by field name), lists for arrays, None."""
        if table_id.count(".") != 2 or not all(table_id.split(".")):
            raise ValueError(f"table_id must be 'project.dataset.table', got {table_id!r}")
        name = _quote(table_id)
        ddl = ", ".join(f"{_quote(column)} {kind}" for column, kind in columns)
        data = [list(row) for row in rows]
        for row in data:
            if len(row) != len(columns):
                raise ValueError(f"row has {len(row)} values for {len(columns)} columns: {row!r}")
        with self._db_lock:
            self._db.execute(f"CREATE OR REPLACE TABLE {name} ({ddl})")
            types = list(self._db.sql(f"SELECT * FROM {name}").types)
            if data:
                # Through JSON, cast to a STRUCT of the row, so duckdb converts every value to its declared
                # type (a Python dict with keys "key" and "value" would be taken for a MAP otherwise).
                record = "STRUCT(" + ", ".join(f'"c{i}" {t}' for i, t in enumerate(types)) + ")"
                shapes = [_shape(t) for t in types]
                payload = [
                    {
                        f"c{i}": _storable(v, shape)
                        for i, (v, shape) in enumerate(zip(row, shapes, strict=True))
                    }
                    for row in data
                ]
                self._db.execute(
                    f"INSERT INTO {name} SELECT UNNEST(CAST(e AS {record})) "
                    "FROM (SELECT UNNEST(CAST(CAST(? AS JSON) AS JSON[])) AS e)",
                    [json.dumps(payload, default=_json_default)],
                )
        with self._lock:
            self._tables[table_id] = len(data)

    def drop_table(self, table_id: str) -> None:
        with self._db_lock:
            self._db.execute(f"DROP TABLE IF EXISTS {_quote(table_id)}")
        with self._lock:
            self._tables.pop(table_id, None)

    # -- test controls ---------------------------------------------------------------------------------------

    def fail_next(
        self, error: str, count: int = 1, *, on: str = "insert", message: str | None = None
    ) -> None:
        """Answer the next `count` calls of step `on` with BigQuery's error `error` (queued after earlier
        failures of that step). Steps: "insert" (jobs.insert and jobs.query), "results"
        (jobs.getQueryResults), "get" (jobs.get). Errors, with their HTTP status: accessDenied (403),
        notFound (404), rateLimitExceeded (403, as BigQuery rate limits are), quotaExceeded (403),
        backendError (500), unauthorized (401 UNAUTHENTICATED, reason authError), invalidQuery (400).
        `message` replaces the default message (see `_failure_message`)."""
        if error not in _REASON_STATUS or error in ("duplicate", "invalid", "bytesBilledLimitExceeded"):
            raise ValueError(f"unknown error {error!r}")
        if on not in _FAIL_STEPS:
            raise ValueError(f"on must be one of {_FAIL_STEPS}, got {on!r}")
        self.enqueue(
            lambda request: self._failure(error, message, request), count, when=lambda request: _step(request) == on
        )

    def job(self, job_id: str) -> dict[str, Any]:
        """The job resource jobs.get would answer now (without counting as a poll)."""
        with self._lock:
            for (_, jid), job in self._jobs.items():
                if jid == job_id:
                    return self._resource(job)
        raise KeyError(job_id)

    # -- per request -----------------------------------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        body = request.json() if request.body else {}
        if request.body and body is None:
            status, payload = 400, google_error(400, "parseError", "Parse Error")
        else:
            try:
                status, payload = self._route(request.method, request.path, request.query, body)
            except Exception as error:  # a bug in the fake (or in `mangle`): fail fast, not retried
                with self._lock:
                    self.errors.append(traceback.format_exc())
                status, payload = 400, google_error(400, "invalid", f"FakeBigQuery failed: {error!r}")
        if status == 200 and request.query.get("fields"):
            payload = _partial(payload, request.query["fields"])
        return Answer.json(status, payload, content_type=_JSON)

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        """BigQuery's errors as its REST API sends them (cloud.google.com/bigquery/docs/error-messages):
        Google's error body plus the legacy `errors[].reason` the client keys on (authError,
        accessDenied, notFound, rateLimitExceeded as a 403, backendError). BigQuery sends no Retry-After:
        its client backs off by itself. An empty bill is a job that succeeds with no rows, so NO_DATA acts
        on the next submitted job and lets every other call run normally."""
        if fault is Fault.NO_DATA:
            if _step(request) == "insert":
                with self._lock:
                    self._empty_jobs += 1
            return self.handle(request)
        if fault is Fault.BAD_RESPONSE:
            return self.handle(request).truncated()
        reason = {
            Fault.AUTH: "unauthorized",
            Fault.PERMISSION: "accessDenied",
            Fault.NOT_FOUND: "notFound",
            Fault.THROTTLED: "rateLimitExceeded",
            Fault.UNAVAILABLE: "backendError",
        }[fault]
        return self._failure(reason, None, request)

    def _failure(self, reason: str, message: str | None, request: Request) -> Answer:
        """An injected error for this request's step, worded like BigQuery's (see `_failure_message`)."""
        match = _PATH.match(request.path)
        project = match.group(1) if match else ""
        step = _step(request)
        if step == "insert":
            body = request.json() or {}
            query = str(((body.get("configuration") or {}).get("query") or body).get("query", ""))
        else:
            job = self._find(project, match.group(3) if match else "", request.query)
            query = _job_query(job)
        text = message or _failure_message(reason, step, project, _tables_named(query))
        status = _REASON_STATUS[reason]
        return Answer.json(
            status, google_error(status, "authError" if reason == "unauthorized" else reason, text), content_type=_JSON
        )

    def _route(
        self, method: str, path: str, params: dict[str, str], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        match = _PATH.match(path)
        if match is None:
            return 404, google_error(404, "notFound", f"Not found: URL {path}")
        project, collection, job_id, cancel = match.groups()
        if method == "POST" and collection == "jobs" and job_id is None:
            return self._insert(project, body)
        if method == "POST" and collection == "queries" and job_id is None:
            return self._query(project, body)
        if method == "GET" and collection == "queries" and job_id is not None:
            return self._get_query_results(project, job_id, params)
        if method == "GET" and collection == "jobs" and job_id is not None and not cancel:
            return self._get(project, job_id, params)
        if method == "POST" and collection == "jobs" and job_id is not None and cancel:
            return self._cancel(project, job_id, params)
        return 404, google_error(404, "notFound", f"Not found: URL {path}")

    # -- jobs.insert / jobs.query ----------------------------------------------------------------------------

    def _insert(self, project: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        configuration = dict(body.get("configuration") or {})
        reference = body.get("jobReference") or {}
        job_id = reference.get("jobId") or f"job_{uuid.uuid4().hex}"
        location = reference.get("location") or LOCATION
        query_config = configuration.get("query")
        if not isinstance(query_config, dict) or "query" not in query_config:
            return 400, google_error(400, "invalid", "FakeBigQuery runs query jobs only.")
        entry = self._record("jobs.insert", job_id, location, configuration, query_config)
        with self._lock:
            if (project, job_id) in self._jobs:
                message = f"Already Exists: Job {project}:{location}.{job_id}"
                return 409, google_error(409, "duplicate", message)
        job = self._submit(project, job_id, location, configuration, entry)
        return 200, self._resource(job)

    def _query(self, project: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """jobs.query: QueryRequest keys are the job's `configuration.query` keys, plus a few of the job's."""
        location = body.get("location") or LOCATION
        job_id = f"job_{uuid.uuid4().hex}"
        outer = {"labels", "dryRun", "jobTimeoutMs"}
        request_only = {"location", "timeoutMs", "maxResults", "requestId", "formatOptions", "kind"}
        request_only |= {"jobCreationMode", "queryResultsFormat", "arrowSerializationOptions"}
        query_config = {k: v for k, v in body.items() if k not in outer | request_only}
        configuration: dict[str, Any] = {k: body[k] for k in outer if k in body}
        configuration["query"] = query_config
        entry = self._record("jobs.query", job_id, location, configuration, query_config)
        job = self._submit(project, job_id, location, configuration, entry)
        with self._lock:
            if job.error is not None:
                return job.error.status, google_error(job.error.status, job.error.reason, job.error.message)
            if job.pending_polls > 0:
                job.pending_polls -= 1
                return 200, {
                    "kind": "bigquery#queryResponse",
                    "jobReference": job.reference,
                    "jobComplete": False,
                }
        page = self._page(job, body.get("maxResults"), None, None, _int64_timestamps(body))
        page["kind"] = "bigquery#queryResponse"
        page["totalBytesBilled"] = str(job.bytes_billed)
        page["queryId"] = job.job_id
        return 200, page

    def _record(
        self,
        api: str,
        job_id: str,
        location: str,
        configuration: dict[str, Any],
        query_config: dict[str, Any],
    ) -> dict[str, Any]:
        """Add to `jobs`: {"api": "jobs.insert"|"jobs.query", "jobId", "location", "labels", "dryRun", then
        every key of the query configuration as sent (query, queryParameters, parameterMode, useLegacySql,
        defaultDataset, maximumBytesBilled, …)}; "duckdbSql" is added once the query is transpiled."""
        entry: dict[str, Any] = {
            "api": api,
            "jobId": job_id,
            "location": location,
            "labels": configuration.get("labels") or {},
            "dryRun": bool(configuration.get("dryRun")),
        }
        entry.update(query_config)
        with self._lock:
            self.jobs.append(entry)
        return entry

    def _submit(
        self, project: str, job_id: str, location: str, configuration: dict[str, Any], entry: dict[str, Any]
    ) -> _Job:
        """Run the query now (the job only pretends to run while polled); `entry` is its record in `jobs`."""
        configuration = {**configuration, "jobType": "QUERY"}
        polls = 0 if configuration.get("dryRun") else self.polls_before_done  # a dry run answers at once
        job = _Job(project, job_id, location, configuration, _now_ms(), polls)
        query_config = configuration["query"]
        try:
            duck_sql, names, tables = self._transpile(project, query_config)
            with self._lock:
                entry["duckdbSql"] = duck_sql
                job.tables = tables
                processed = self.row_bytes * sum(self._tables.get(t, 0) for t in tables)
            billed = 0 if not tables or job.dry_run else max(MIN_BILLED_BYTES, -(-processed // MIB) * MIB)
            limit = query_config.get("maximumBytesBilled")
            if limit is not None and billed > int(limit):
                raise QueryError(
                    "bytesBilledLimitExceeded",
                    f"Query exceeded limit for bytes billed: {int(limit)}. {billed} or higher required.",
                )
            job.fields, job.rows = self._execute(duck_sql, names)
            with self._lock:
                empty, self._empty_jobs = self._empty_jobs > 0, max(0, self._empty_jobs - 1)
            if job.dry_run or empty:
                job.rows = []
            job.bytes_processed, job.bytes_billed = processed, billed
        except QueryError as error:
            job.error = QueryError(error.reason, error.message)  # without the traceback and its frames
        job.ended_ms = _now_ms()
        with self._lock:
            self._jobs[(project, job_id)] = job
            self.bytes_billed_total += job.bytes_billed
        return job

    # -- SQL -------------------------------------------------------------------------------------------------

    def _transpile(self, project: str, config: dict[str, Any]) -> tuple[str, list[str] | None, list[str]]:
        """GoogleSQL → (duckdb SQL, BigQuery's result column names or None to keep duckdb's, tables read)."""
        if config.get("useLegacySql", True):
            raise QueryError(
                "invalidQuery",
                "FakeBigQuery runs GoogleSQL only: this job asks for legacy SQL (useLegacySql true or "
                "unset).",
            )
        sql = str(config["query"])
        try:
            statements = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
        except sqlglot.errors.SqlglotError as error:
            raise QueryError("invalidQuery", f"Syntax error: {_first_line(error)}") from None
        if len(statements) != 1 or not isinstance(statements[0], exp.Query):
            raise QueryError(
                "invalidQuery", "FakeBigQuery runs a single SELECT query per job (no scripts/DML)."
            )
        tree = statements[0]
        tree = tree.transform(_float_literal).transform(_date_result)
        tree = _bind_parameters(tree, config.get("queryParameters") or [], config.get("parameterMode"))
        tables = self._resolve_tables(tree, project, config.get("defaultDataset") or {})
        tree = self._rewrite_for_tables(tree, tables)
        names = _column_names(tree)
        try:
            return tree.sql(dialect="duckdb"), names, tables
        except sqlglot.errors.SqlglotError as error:
            raise QueryError("invalidQuery", _first_line(error)) from None

    def _resolve_tables(
        self, tree: exp.Expression, project: str, default_dataset: dict[str, str]
    ) -> list[str]:
        """Point every table reference at its duckdb table (quoted full id), checking it exists."""
        ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
        read: list[str] = []
        for table in list(tree.find_all(exp.Table)):
            if not table.name or (not table.db and table.name in ctes):
                continue
            if table.catalog:
                full = (table.catalog, table.db, table.name)
            elif table.db:
                full = (project, table.db, table.name)
            elif default_dataset.get("datasetId"):
                full = (default_dataset.get("projectId") or project, default_dataset["datasetId"], table.name)
            else:
                raise QueryError(
                    "invalidQuery",
                    f'Table "{table.name}" must be qualified with a dataset (e.g. dataset.table).',
                )
            proj, dataset, name = full
            with self._lock:
                known = dict(self._tables)
            if not any(t.startswith(f"{proj}.{dataset}.") for t in known):
                raise QueryError(
                    "notFound", f"Not found: Dataset {proj}:{dataset} was not found in location {LOCATION}"
                )
            alias = table.alias or name
            if name.endswith("*"):
                matches = sorted(t for t in known if t.startswith(f"{proj}.{dataset}.{name[:-1]}"))
                if not matches:
                    raise QueryError(
                        "invalidQuery",
                        f"Table {proj}:{dataset}.{name} does not match any table.",
                    )
                selects = [
                    exp.select(
                        exp.Star(),
                        exp.alias_(exp.Literal.string(t.rsplit(".", 1)[1][len(name) - 1 :]), "_TABLE_SUFFIX"),
                    ).from_(exp.Table(this=exp.to_identifier(t, quoted=True)))
                    for t in matches
                ]
                union: exp.Query = selects[0]
                for select in selects[1:]:
                    union = exp.union(union, select, distinct=False)
                table.replace(exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier(alias))))
                read.extend(matches)
                continue
            table_id = f"{proj}.{dataset}.{name}"
            if table_id not in known:
                raise QueryError(
                    "notFound",
                    f"Not found: Table {proj}:{dataset}.{name} was not found in location {LOCATION}",
                )
            table.set("catalog", None)
            table.set("db", None)
            table.set("this", exp.to_identifier(table_id, quoted=True))
            table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
            read.append(table_id)
        return sorted(set(read))

    def _rewrite_for_tables(self, tree: exp.Expression, tables: list[str]) -> exp.Expression:
        """Two GoogleSQL forms that need the tables' columns: `FROM UNNEST(labels)` without an alias, whose
        STRUCT fields are columns in the FROM scope (`WHERE key = 'team'`), and the `_PARTITIONDATE`
        pseudo-column, read as `DATE(_PARTITIONTIME)` when the table stores only `_PARTITIONTIME`."""
        # column name (upper case) → duckdb type id, "list<struct>" for an ARRAY of STRUCTs
        columns: dict[str, str] = {}
        with self._db_lock:
            for table_id in tables:
                relation = self._db.sql(f"SELECT * FROM {_quote(table_id)} LIMIT 0")
                for name, kind in zip(relation.columns, relation.types, strict=True):
                    nested = kind.id in ("list", "array") and dict(kind.children)["child"].id == "struct"
                    columns[name.upper()] = "list<struct>" if nested else kind.id
        counter = 0

        def rewrite(node: exp.Expression) -> exp.Expression:
            nonlocal counter
            if (
                isinstance(node, exp.Unnest)
                and isinstance(node.parent, exp.From | exp.Join)
                and node.args.get("alias") is None
                and len(node.expressions) == 1
                and isinstance(node.expressions[0], exp.Column)
                and columns.get(node.expressions[0].name.upper()) == "list<struct>"
            ):
                alias = f"_unnest{counter}"
                counter += 1
                select = sqlglot.parse_one(
                    f"SELECT {alias}.* FROM UNNEST(_array) AS {alias}", read="bigquery"
                )
                unnest = select.find(exp.Unnest)
                assert unnest is not None
                unnest.set("expressions", [node.expressions[0].copy()])
                return exp.Subquery(this=select)
            if (
                isinstance(node, exp.Column)
                and node.name.upper() == "_PARTITIONDATE"
                and "_PARTITIONDATE" not in columns
                and "_PARTITIONTIME" in columns
            ):
                partition_time = exp.column("_PARTITIONTIME", table=node.table or None)
                return exp.cast(partition_time, exp.DataType.build("DATE"))
            return node

        return tree.transform(rewrite)

    def _execute(
        self, duck_sql: str, names: list[str] | None
    ) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
        with self._db_lock:
            try:
                relation = self._db.sql(duck_sql)
                if relation is None:
                    raise QueryError("invalidQuery", "FakeBigQuery runs queries that return rows only.")
                types = list(relation.types)
                columns = list(relation.columns)
                # duckdb hands TIMESTAMPTZ to Python only with pytz installed: read those as UTC TIMESTAMP.
                if any("TIME ZONE" in str(t) for t in types):
                    inner = [f"c{i}" for i in range(len(columns))]
                    outer = [
                        f"CAST({c} AS {_without_time_zone(str(t))})" if "TIME ZONE" in str(t) else c
                        for c, t in zip(inner, types, strict=True)
                    ]
                    relation = self._db.sql(
                        f"SELECT {', '.join(outer)} FROM ({duck_sql}) AS _q({', '.join(inner)})"
                    )
                    types = list(relation.types)
                rows = relation.fetchall()
            except duckdb.Error as error:
                raise QueryError("invalidQuery", _first_line(error)) from None
        if names is None or len(names) != len(columns):
            names = columns
        return [_schema_field(name, t) for name, t in zip(names, types, strict=True)], rows

    # -- reading results -------------------------------------------------------------------------------------

    def _find(self, project: str, job_id: str, params: dict[str, str]) -> _Job | None:
        with self._lock:
            job = self._jobs.get((project, job_id))
        location = params.get("location")
        if job is not None and location and location.lower() != job.location.lower():
            return None
        return job

    def _job_not_found(self, project: str, job_id: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        location = params.get("location") or LOCATION
        return 404, google_error(404, "notFound", f"Not found: Job {project}:{location}.{job_id}")

    def _poll(self, job: _Job) -> bool:
        """One status read: False while the job still pretends to run."""
        with self._lock:
            if job.pending_polls > 0:
                job.pending_polls -= 1
                return False
            return True

    def _get(self, project: str, job_id: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        job = self._find(project, job_id, params)
        if job is None:
            return self._job_not_found(project, job_id, params)
        return 200, self._resource(job, done=self._poll(job))

    def _cancel(self, project: str, job_id: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        job = self._find(project, job_id, params)
        if job is None:
            return self._job_not_found(project, job_id, params)
        return 200, {"kind": "bigquery#jobCancelResponse", "job": self._resource(job)}

    def _get_query_results(
        self, project: str, job_id: str, params: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        job = self._find(project, job_id, params)
        if job is None:
            return self._job_not_found(project, job_id, params)
        if not self._poll(job):
            return 200, {
                "kind": "bigquery#getQueryResultsResponse",
                "etag": _etag(job),
                "jobReference": job.reference,
                "jobComplete": False,
            }
        if job.error is not None:
            return job.error.status, google_error(job.error.status, job.error.reason, job.error.message)
        try:
            page = self._page(
                job,
                params.get("maxResults"),
                params.get("startIndex"),
                params.get("pageToken"),
                params.get("formatOptions.useInt64Timestamp", "").lower() == "true",
            )
        except ValueError as error:
            return 400, google_error(400, "invalid", str(error))
        page["kind"] = "bigquery#getQueryResultsResponse"
        return 200, page

    def _page(
        self,
        job: _Job,
        max_results: Any,
        start_index: str | None,
        page_token: str | None,
        int64_timestamps: bool,
    ) -> dict[str, Any]:
        """One page of a finished job's results (getQueryResults / jobs.query shape, without `kind`)."""
        with self._lock:
            rows = job.encoded.get(int64_timestamps)
            if rows is None:
                rows = [
                    [_encode(f, value, int64_timestamps) for f, value in zip(job.fields, row, strict=True)]
                    for row in job.rows
                ]
                if self.mangle is not None:
                    rows = self.mangle(rows)
                job.encoded[int64_timestamps] = rows
        offset = _token_offset(page_token, job.job_id) if page_token else int(start_index or 0)
        size = self.page_size if max_results in (None, "") else min(int(max_results), self.page_size)
        size = max(size, 0)
        chunk = rows[offset : offset + size]
        page: dict[str, Any] = {
            "etag": _etag(job),
            "schema": {"fields": job.fields},
            "jobReference": job.reference,
            "totalRows": str(len(job.rows)),
            "totalBytesProcessed": str(job.bytes_processed),
            "jobComplete": True,
            "cacheHit": False,
            "location": job.location,
        }
        if chunk:
            page["rows"] = [{"f": [{"v": v} for v in row]} for row in chunk]
        if size > 0 and offset + size < len(rows):
            page["pageToken"] = _token(job.job_id, offset + size)
        return page

    def _resource(self, job: _Job, *, done: bool | None = None) -> dict[str, Any]:
        """The job resource (jobs.insert / jobs.get / jobs.cancel); `done` defaults to the job's state."""
        if done is None:
            with self._lock:
                done = job.pending_polls <= 0
        statistics: dict[str, Any] = {"creationTime": str(job.created_ms), "startTime": str(job.created_ms)}
        status: dict[str, Any] = {"state": "DONE" if done else "RUNNING"}
        if done:
            statistics["endTime"] = str(job.ended_ms)
            if job.error is not None:
                status["errorResult"] = job.error.error_result()
                status["errors"] = [job.error.error_result()]
            else:
                statistics["totalBytesProcessed"] = str(job.bytes_processed)
                statistics["query"] = {
                    "totalBytesProcessed": str(job.bytes_processed),
                    "totalBytesBilled": str(job.bytes_billed),
                    "billingTier": 1,
                    "cacheHit": False,
                    "statementType": "SELECT",
                    "totalSlotMs": "0",
                    "schema": {"fields": job.fields},
                    "referencedTables": [
                        dict(zip(("projectId", "datasetId", "tableId"), t.split(".", 2), strict=True))
                        for t in job.tables
                    ],
                }
        return {
            "kind": "bigquery#job",
            "etag": _etag(job),
            "id": f"{job.project}:{job.location}.{job.job_id}",
            "selfLink": (
                f"{self.url}{API_PREFIX}/projects/{job.project}/jobs/{job.job_id}?location={job.location}"
            ),
            "user_email": "fake-caller@example.com",
            "configuration": job.configuration,
            "jobReference": job.reference,
            "statistics": statistics,
            "status": status,
        }


# -- helpers -------------------------------------------------------------------------------------------------


_JSON = "application/json; charset=UTF-8"


def _step(request: Request) -> str:
    """Which `fail_next` step a request is: "insert" (jobs.insert, jobs.query), "results" or "get"."""
    match = _PATH.match(request.path)
    if match is None:
        return ""
    _, collection, job_id, cancel = match.groups()
    if request.method == "POST" and job_id is None:
        return "insert"
    if request.method == "GET" and job_id is not None and not cancel:
        return "results" if collection == "queries" else "get"
    return ""


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _now_ms() -> int:
    return int(time.time() * 1000)


def _etag(job: _Job) -> str:
    return base64.b64encode(f"{job.job_id}:{job.pending_polls}".encode()).decode()[:24]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot store {value!r} ({type(value).__name__})")


def _shape(kind: duckdb.typing.DuckDBPyType) -> Any:
    """A column type's nesting, for `_storable`: None (scalar), ("list", shape) or ("struct", {name: shape},
    type name)."""
    if kind.id in ("list", "array"):
        return ("list", _shape(dict(kind.children)["child"]))
    if kind.id == "struct":
        return ("struct", {name: _shape(child) for name, child in kind.children}, str(kind))
    return None


def _storable(value: Any, shape: Any) -> Any:
    """`value` with every STRUCT completed with its missing fields (None); unknown fields are an error."""
    if value is None or shape is None:
        return value
    if shape[0] == "list":
        return [_storable(item, shape[1]) for item in value]
    members = shape[1]
    if not isinstance(value, dict):
        raise TypeError(f"a STRUCT value must be a dict, got {value!r}")
    unknown = set(value) - set(members)
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not fields of {shape[2]}")
    return {name: _storable(value.get(name), child) for name, child in members.items()}


def _without_time_zone(kind: str) -> str:
    return kind.replace("TIMESTAMP WITH TIME ZONE", "TIMESTAMP").replace("TIME WITH TIME ZONE", "TIME")


def _int64_timestamps(body: dict[str, Any]) -> bool:
    options = body.get("formatOptions") or {}
    return bool(options.get("useInt64Timestamp"))


def _token(job_id: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"job": job_id, "offset": offset}).encode()).decode()


def _token_offset(token: str, job_id: str) -> int:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
        if decoded["job"] != job_id:
            raise ValueError
        return int(decoded["offset"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"Invalid page token: {token}") from None


def _partial(payload: dict[str, Any], fields: str) -> dict[str, Any]:
    """The `fields` partial response, on top-level names (`a,b/c,d(e)` keeps a, b and d)."""
    keep: set[str] = set()
    depth = 0
    name = ""
    for char in fields + ",":
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            keep.add(name.split("/")[0].strip())
            name = ""
        elif depth == 0:
            name += char
    return {k: v for k, v in payload.items() if k in keep}


def _job_query(job: _Job | None) -> str:
    return str(job.configuration["query"].get("query", "")) if job is not None else ""


def _tables_named(query: str) -> list[tuple[str, str, str]]:
    """(project, dataset, table) named in `query`, best effort, for error messages."""
    try:
        tree = sqlglot.parse_one(query, read="bigquery") if query else None
    except sqlglot.errors.SqlglotError:
        return []
    if tree is None:
        return []
    return [(t.catalog, t.db, t.name) for t in tree.find_all(exp.Table) if t.db]


def _failure_message(reason: str, step: str, project: str, tables: list[tuple[str, str, str]]) -> str:
    """The default message of an injected failure, worded like BigQuery's."""
    proj, dataset, table = (
        (tables[0][0] or project, tables[0][1], tables[0][2]) if tables else (project, "", "")
    )
    if reason == "accessDenied":
        if step == "insert" or not tables:
            return (
                f"Access Denied: Project {project}: User does not have bigquery.jobs.create permission in "
                f"project {project}."
            )
        name = f"{proj}:{dataset}.{table}"
        return (
            f"Access Denied: Table {name}: User does not have permission to query table {name}, or perhaps "
            "it does not exist."
        )
    if reason == "notFound":
        if tables:
            return f"Not found: Dataset {proj}:{dataset} was not found in location {LOCATION}"
        return f"Not found: Project {project}"
    return {
        "rateLimitExceeded": (
            "Exceeded rate limits: too many concurrent queries for this project_and_region. For more "
            "information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas"
        ),
        "quotaExceeded": (
            "Quota exceeded: Your project exceeded quota for free query bytes scanned. For more information, "
            "see https://cloud.google.com/bigquery/docs/troubleshoot-quotas"
        ),
        "backendError": "Error encountered during execution. Retrying may solve the problem.",
        "unauthorized": (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
            "other valid authentication credential. See "
            "https://developers.google.com/identity/sign-in/web/devconsole-project."
        ),
        "invalidQuery": "Syntax error: Unexpected end of script at [1:1]",
    }[reason]


# -- SQL rewriting -------------------------------------------------------------------------------------------


def _float_literal(node: exp.Expression) -> exp.Expression:
    """GoogleSQL reads `1.5` and `1e3` as FLOAT64 (duckdb as DECIMAL)."""
    if isinstance(node, exp.Literal) and not node.is_string and _FLOAT_LITERAL.match(node.this):
        return exp.cast(node.copy(), exp.DataType.build("FLOAT64", dialect="bigquery"))
    return node


def _date_result(node: exp.Expression) -> exp.Expression:
    """GoogleSQL's DATE_TRUNC / DATE_ADD / DATE_SUB return a DATE (duckdb's a TIMESTAMP)."""
    if isinstance(node, exp.DateTrunc | exp.DateAdd | exp.DateSub):
        return exp.cast(node.copy(), exp.DataType.build("DATE"))
    return node


def _param_type(ptype: dict[str, Any]) -> str:
    """A query parameter's type as a GoogleSQL type name."""
    kind = str(ptype.get("type", "")).upper()
    if kind == "ARRAY":
        return f"ARRAY<{_param_type(ptype.get('arrayType') or {})}>"
    if kind in ("STRUCT", "RECORD"):
        members = ", ".join(
            f"{m.get('name') or 'f'} {_param_type(m['type'])}" for m in ptype.get("structTypes") or []
        )
        return f"STRUCT<{members}>"
    return _PARAM_TYPES.get(kind, kind)


def _literal(ptype: dict[str, Any], pvalue: dict[str, Any] | None) -> exp.Expression:
    """A typed GoogleSQL literal for a query parameter's value."""
    kind = str(ptype.get("type", "")).upper()
    datatype = exp.DataType.build(_param_type(ptype), dialect="bigquery")
    if pvalue is None:
        return exp.cast(exp.null(), datatype)
    if kind == "ARRAY":
        items = [_literal(ptype.get("arrayType") or {}, v) for v in pvalue.get("arrayValues") or []]
        return exp.cast(exp.Array(expressions=items), datatype)
    if kind in ("STRUCT", "RECORD"):
        values = pvalue.get("structValues") or {}
        members = [
            exp.PropertyEQ(
                this=exp.to_identifier(m.get("name") or f"_field_{i + 1}"),
                expression=_literal(m["type"], values.get(m.get("name"))),
            )
            for i, m in enumerate(ptype.get("structTypes") or [])
        ]
        return exp.Struct(expressions=members)
    value = pvalue.get("value")
    if value is None:
        return exp.cast(exp.null(), datatype)
    if kind == "STRING":
        return exp.Literal.string(str(value))
    if kind in ("BOOL", "BOOLEAN"):
        return exp.Boolean(this=str(value).lower() == "true")
    if kind == "BYTES":
        return exp.func("FROM_BASE64", exp.Literal.string(str(value)))
    return exp.cast(exp.Literal.string(str(value)), datatype)


def _bind_parameters(
    tree: exp.Expression, parameters: list[dict[str, Any]], mode: str | None
) -> exp.Expression:
    """Replace `@name` (NAMED mode) and `?` (POSITIONAL mode) with the parameters' typed literals."""
    named = {str(p.get("name", "")).lower(): p for p in parameters if p.get("name")}
    positional = [p for p in parameters if not p.get("name")]
    position = 0

    def bind(node: exp.Expression) -> exp.Expression:
        nonlocal position
        if isinstance(node, exp.Parameter):
            name = node.name
            parameter = named.get(name.lower())
            if parameter is None:
                raise QueryError("invalidQuery", f"Query parameter '{name}' not found")
            return _literal(parameter.get("parameterType") or {}, parameter.get("parameterValue"))
        if isinstance(node, exp.Placeholder) and node.this is None:
            if position >= len(positional):
                raise QueryError("invalidQuery", f"No value for positional query parameter {position + 1}")
            parameter = positional[position]
            position += 1
            return _literal(parameter.get("parameterType") or {}, parameter.get("parameterValue"))
        return node

    if mode and mode.upper() not in ("NAMED", "POSITIONAL"):
        raise QueryError("invalid", f"Invalid parameterMode: {mode}")
    return tree.transform(bind)


def _column_names(tree: exp.Expression) -> list[str] | None:
    """BigQuery's names for the result columns (anonymous ones are f0_, f1_, …); None when unsure."""
    if not isinstance(tree, exp.Select):
        return None
    names: list[str] = []
    anonymous = 0
    for projection in tree.expressions:
        if isinstance(projection, exp.Star) or (isinstance(projection, exp.Column) and projection.is_star):
            return None
        if isinstance(projection, exp.Alias | exp.Column | exp.Dot) and projection.alias_or_name:
            names.append(projection.alias_or_name)
        else:
            names.append(f"f{anonymous}_")
            anonymous += 1
    return names


# -- result encoding -----------------------------------------------------------------------------------------


def _schema_field(name: str, kind: duckdb.typing.DuckDBPyType) -> dict[str, Any]:
    type_id = kind.id
    if type_id in ("list", "array"):
        inner = _schema_field(name, dict(kind.children)["child"])
        if inner["mode"] == "REPEATED":
            raise QueryError("invalidQuery", "Cannot construct array with element type ARRAY")
        inner["mode"] = "REPEATED"
        return inner
    if type_id == "struct":
        return {
            "name": name,
            "type": "RECORD",
            "mode": "NULLABLE",
            "fields": [_schema_field(n, child) for n, child in kind.children],
        }
    return {"name": name, "type": _SCALAR_TYPES.get(type_id, "STRING"), "mode": "NULLABLE"}


def _encode(schema: dict[str, Any], value: Any, int64_timestamps: bool) -> Any:
    """A cell's `v` as the REST API writes it."""
    if schema.get("mode") == "REPEATED":
        scalar = {**schema, "mode": "NULLABLE"}
        return [{"v": _encode(scalar, item, int64_timestamps)} for item in value or []]
    if value is None:
        return None
    kind = schema["type"]
    if kind == "RECORD":
        return {"f": [{"v": _encode(f, value.get(f["name"]), int64_timestamps)} for f in schema["fields"]]}
    if kind == "FLOAT":
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return repr(number)
    if kind == "INTEGER":
        return str(int(value))
    if kind == "NUMERIC":
        text = format(decimal.Decimal(value), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if kind == "BOOLEAN":
        return "true" if value else "false"
    if kind == "TIMESTAMP":
        if isinstance(value, dt.datetime):
            moment = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
            micros = (moment - _EPOCH) // dt.timedelta(microseconds=1)
        else:  # a DATE cast, or duckdb's infinity
            micros = (
                dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC) - _EPOCH
            ) // dt.timedelta(microseconds=1)
        return str(micros) if int64_timestamps else _java_double(micros / 1e6)
    if kind in ("DATE", "TIME"):
        return value.isoformat()
    if kind == "BYTES":
        return base64.b64encode(bytes(value)).decode()
    if kind == "INTERVAL" and isinstance(value, dt.timedelta):
        seconds = value.seconds + value.microseconds / 1e6
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        return f"0-0 {value.days} {int(hours)}:{int(minutes)}:{secs:g}"
    return str(value)


def _java_double(number: float) -> str:
    """Java's Double.toString, which BigQuery uses for float timestamps: 1.7172E9, 123.5, 1.0E-4."""
    if number == 0:
        return "0.0"
    if 1e-3 <= abs(number) < 1e7:
        text = repr(number)
        return text if "." in text or "e" in text else text + ".0"
    sign, digit_tuple, exp10 = decimal.Decimal(repr(number)).normalize().as_tuple()
    assert isinstance(exp10, int)
    text = "".join(str(d) for d in digit_tuple)
    power = len(text) - 1 + exp10
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{power}"
