"""A server handing the same next-page token (or link) again stops paging with BAD_RESPONSE, on every paging
source: without the check a source would ask for the same page until its deadline, or forever.

Each source runs against its fake (the harnesses of tests/test_source_contract.py); the fake answers the
first page of the paged call as it would, with its token set to "stuck", and then that same answer to every
later page request: the same token twice. Only the token field differs per API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.health import Reason
from fakes.server import Answer, Request
from tests.test_source_contract import HARNESSES

Rewrite = Callable[[Answer, Request, str], Answer]  # (the fake's answer, its request, the fake's url) → stuck


def _json(answer: Answer, change: Callable[[dict[str, Any]], None]) -> Answer:
    body = json.loads(answer.body)
    change(body)
    return Answer.json(answer.status, body, answer.headers, content_type=answer.content_type)


def _aws_json(answer: Answer, _request: Request, _url: str) -> Answer:
    """GetProducts and Athena GetQueryResults: a top-level `NextToken`."""
    return _json(answer, lambda body: body.__setitem__("NextToken", "stuck"))


def _ec2_xml(answer: Answer, _request: Request, _url: str) -> Answer:
    """DescribeSpotPriceHistory (EC2 Query API, XML): `<nextToken>`."""
    body = re.sub(rb"<nextToken>[^<]*</nextToken>", b"<nextToken>stuck</nextToken>", answer.body)
    return Answer(answer.status, body, answer.headers, answer.content_type)


def _gcp_catalog(answer: Answer, _request: Request, _url: str) -> Answer:
    """services.skus.list: `nextPageToken`."""
    return _json(answer, lambda body: body.__setitem__("nextPageToken", "stuck"))


def _bigquery(answer: Answer, _request: Request, _url: str) -> Answer:
    """jobs.getQueryResults: `pageToken`."""
    return _json(answer, lambda body: body.__setitem__("pageToken", "stuck"))


def _azure_retail(answer: Answer, request: Request, url: str) -> Answer:
    """Retail Prices: `NextPageLink`, an absolute URL."""
    return _json(answer, lambda body: body.__setitem__("NextPageLink", f"{url}{request.target}&$skip=100"))


def _azure_cost(answer: Answer, request: Request, url: str) -> Answer:
    """Cost Management query: `properties.nextLink`, an absolute URL."""
    link = f"{url}{request.target}&$skiptoken=stuck"
    return _json(answer, lambda body: body["properties"].__setitem__("nextLink", link))


def _paged(operation: str) -> Callable[[Request], bool]:
    return lambda request: (request.headers.get("x-amz-target") or "").endswith(operation)


def _bigquery_results(request: Request) -> bool:
    return request.method == "GET" and "/queries/" in request.path and request.query.get("maxResults") != "0"


CASES: dict[str, tuple[Rewrite, Callable[[Request], bool] | None, str]] = {
    "aws_pricing": (_aws_json, _paged("GetProducts"), "repeated a NextToken"),
    "aws_spot": (_ec2_xml, None, "repeated a NextToken"),
    "aws_cur": (_aws_json, _paged("GetQueryResults"), "repeated a NextToken"),
    "gcp_catalog": (_gcp_catalog, lambda request: "/skus" in request.path, "repeated a page token"),
    "gcp_bigquery": (_bigquery, _bigquery_results, "repeated a pageToken"),
    "azure_retail": (_azure_retail, None, "NextPageLink loops back"),
    "azure_cost": (_azure_cost, lambda request: "/query" in request.path, "repeated a nextLink"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", list(CASES))
def test_a_repeated_page_token_stops_paging(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rewrite, when, detail = CASES[name]
    with HARNESSES[name](tmp_path, monkeypatch) as harness:
        fake = harness.fake
        first: list[Answer] = []

        def stuck(request: Request) -> Answer:
            if not first:
                first.append(rewrite(fake.handle(request), request, fake.url))
            return first[0]

        fake.enqueue(stuck, None, when=when)
        asked = len(fake.requests)
        harness.refresh()
        assert (harness.status.up, harness.status.reason) == (False, Reason.BAD_RESPONSE), harness.status.detail
        assert detail in harness.status.detail
        paged = [r for r in fake.requests[asked:] if when is None or when(r)]
        assert len(paged) == 2, "the second answer repeats the first's token: no third request"
