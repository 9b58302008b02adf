"""The Cost Management Query fake, driven by the real azure-mgmt-costmanagement client over HTTPS.

These pin both the fake's answers and what the SDK makes of them (return values, exception types, retries),
which is what a cost source built on the SDK will see against the real service.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any, cast

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.core.rest import HttpRequest
from azure.mgmt.costmanagement import CostManagementClient
from azure.mgmt.costmanagement.models import (
    QueryAggregation,
    QueryComparisonExpression,
    QueryDataset,
    QueryDefinition,
    QueryFilter,
    QueryGrouping,
    QueryResult,
    QueryTimePeriod,
)

from fakes.cost_management_api import FakeCostManagement, StaticToken, UsageRecord

SUB = "/subscriptions/11111111-12ab-34dc-56ef-123456abcdef"
OTHER_SUB = "/subscriptions/22222222-12ab-34dc-56ef-123456abcdef"
NODE_RG = f"{SUB}/resourceGroups/MC_rg_aks_eastus"
VMSS = f"{NODE_RG}/providers/Microsoft.Compute/virtualMachineScaleSets/aks-nodepool1-12345678-vmss"
SPOT_VMSS = f"{NODE_RG}/providers/Microsoft.Compute/virtualMachineScaleSets/aks-spotpool-12345678-vmss"
DISK = (
    f"{NODE_RG}/providers/Microsoft.Compute/disks/kubernetes-dynamic-pvc-1234abcd-ab12-cd34-ef56-123456abcd01"
)
OTHER_RG_VM = (
    f"{SUB}/resourceGroups/Example-Resource-Group/providers/Microsoft.Compute/"
    "virtualMachines/aks-nodepool1-34567890-0"
)
OTHER_SUB_VMSS = (
    f"{OTHER_SUB}/resourceGroups/MC_other_aks_westeurope/providers/Microsoft.Compute/"
    "virtualMachineScaleSets/aks-system-87654321-vmss"
)
RESERVATION_ORDER = "/providers/Microsoft.Capacity/reservationOrders/7a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
BILLING = "/providers/Microsoft.Billing/billingAccounts/70664866"
POOL_TAGS = {"aks-managed-poolName": "nodepool1", "aks-managed-orchestrator": "Kubernetes:1.29.4"}


def day(n: int) -> datetime.date:
    return datetime.date(2024, 6, n)


RECORDS = [
    UsageRecord(
        datetime.date(2024, 5, 31), VMSS, "OnDemand", 3.504, 3.504, tags=POOL_TAGS
    ),  # before the period
    UsageRecord(day(1), VMSS, "OnDemand", 1.752, 1.752, tags=POOL_TAGS),  # two instances, summed
    UsageRecord(day(1), VMSS, "OnDemand", 1.752, 1.752, tags=POOL_TAGS),
    UsageRecord(day(1), DISK, "OnDemand", 0.0013392, 0.0013392, meter_category="Storage"),
    UsageRecord(day(1), OTHER_RG_VM, "OnDemand", 0.5, 0.5),
    UsageRecord(day(1), OTHER_SUB_VMSS, "OnDemand", 9.99, 9.99),
    # The reservation day: covered usage is amortized, 0 in ActualCost; the purchase is a lump in ActualCost,
    # billed to the reservation order (outside any subscription).
    UsageRecord(day(2), VMSS, "Reservation", 2.1, 0.0, tags=POOL_TAGS),
    UsageRecord(day(2), VMSS, "OnDemand", 0.876, 0.876, tags=POOL_TAGS),
    UsageRecord(day(2), RESERVATION_ORDER, "Reservation", 0.0, 766.5),
    UsageRecord(day(3), VMSS, "OnDemand", 3.504, 3.504, tags=POOL_TAGS),
    UsageRecord(day(3), SPOT_VMSS, "Spot", 0.7, 0.7),
]

SUB_AMORTIZED = {  # (UsageDate, ResourceId, PricingModel) → cost, seen from the subscription scope
    (20240601, OTHER_RG_VM.lower(), "OnDemand"): 0.5,
    (20240601, DISK.lower(), "OnDemand"): 0.0013392,
    (20240601, VMSS.lower(), "OnDemand"): 3.504,
    (20240602, VMSS.lower(), "Reservation"): 2.1,
    (20240602, VMSS.lower(), "OnDemand"): 0.876,
    (20240603, VMSS.lower(), "OnDemand"): 3.504,
    (20240603, SPOT_VMSS.lower(), "Spot"): 0.7,
}


def query(
    kind: str = "AmortizedCost",
    *,
    granularity: str | None = "Daily",
    grouping: tuple[str, ...] = ("ResourceId", "PricingModel"),
    filter: QueryFilter | None = None,
    first: int = 1,
    last: int = 3,
) -> QueryDefinition:
    return QueryDefinition(
        type=kind,
        timeframe="Custom",
        time_period=QueryTimePeriod(
            from_property=datetime.datetime(2024, 6, first, tzinfo=datetime.UTC),
            to=datetime.datetime(2024, 6, last, 23, 59, 59, tzinfo=datetime.UTC),
        ),
        dataset=QueryDataset(
            granularity=granularity,
            aggregation={"totalCost": QueryAggregation(name="Cost", function="Sum")},
            grouping=[QueryGrouping(type="Dimension", name=name) for name in grouping],
            filter=filter,
        ),
    )


def dimension(name: str, *values: str) -> QueryFilter:
    return QueryFilter(
        dimensions=QueryComparisonExpression(name=name, operator="In", values_property=list(values))
    )


def by_key(rows: list[list[Any]]) -> dict[tuple[Any, ...], float]:
    """Cost per (date, group values…) of `Cost, UsageDate, g1, g2, Currency` rows; no key may repeat."""
    out: dict[tuple[Any, ...], float] = {}
    for cost, *key, currency in rows:
        assert currency == "USD"
        assert tuple(key) not in out, f"duplicate row {key}"
        out[tuple(key)] = cost
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeCostManagement]:
    with FakeCostManagement(tmp_path_factory.mktemp("cost-management")) as fake:
        yield fake


@pytest.fixture
def fake(server: FakeCostManagement) -> FakeCostManagement:
    server.reset()
    server.scopes.update({SUB, NODE_RG, OTHER_SUB, BILLING})
    server.records.extend(RECORDS)
    return server


@pytest.fixture
def client(fake: FakeCostManagement) -> Iterator[CostManagementClient]:
    client = CostManagementClient(
        StaticToken(fake.token), base_url=fake.url, retry_total=0, connection_verify=fake.ca_file
    )
    yield client
    client.close()


def usage(
    client: CostManagementClient, scope: str, definition: QueryDefinition, **kwargs: Any
) -> QueryResult:
    result = client.query.usage(scope, definition, **kwargs)
    assert result is not None
    return result


def response_headers(err: HttpResponseError) -> Any:
    """The headers of the response an SDK error carries (typed loosely by azure-core)."""
    assert err.response is not None
    return cast(Any, err.response).headers


# -- results -------------------------------------------------------------------------------------------------


def test_daily_amortized_cost_by_resource_and_pricing_model(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    result = usage(client, SUB, query("AmortizedCost"))

    assert [c.name for c in result.columns] == ["Cost", "UsageDate", "ResourceId", "PricingModel", "Currency"]
    assert [c.type for c in result.columns] == ["Number", "Number", "String", "String", "String"]
    assert result.next_link is None
    assert by_key(result.rows) == pytest.approx(SUB_AMORTIZED)
    assert all(row[2] == row[2].lower() for row in result.rows)  # ResourceId lower-cased, as Azure returns it
    assert str(result.id).startswith(SUB.lstrip("/") + "/providers/Microsoft.CostManagement/query/")
    assert result.type == "Microsoft.CostManagement/query"


def test_actual_cost_shows_reservation_covered_usage_as_zero(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    result = usage(client, SUB, query("ActualCost"))

    expected = dict(SUB_AMORTIZED)
    expected[(20240602, VMSS.lower(), "Reservation")] = 0.0  # the row stays, at zero
    assert by_key(result.rows) == pytest.approx(expected)


def test_billing_account_scope_sees_every_subscription_and_the_reservation_purchase(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    vms_only = dimension("MeterCategory", "Virtual Machines")
    actual = usage(
        client, BILLING, query("ActualCost", granularity=None, grouping=("PricingModel",), filter=vms_only)
    )
    amortized = usage(
        client, BILLING, query("AmortizedCost", granularity=None, grouping=("PricingModel",), filter=vms_only)
    )

    assert [c.name for c in actual.columns] == ["Cost", "PricingModel", "Currency"]
    assert by_key(actual.rows) == pytest.approx(
        {("OnDemand",): 3.504 + 0.876 + 3.504 + 0.5 + 9.99, ("Reservation",): 766.5, ("Spot",): 0.7}
    )
    assert by_key(amortized.rows) == pytest.approx(
        {("OnDemand",): 3.504 + 0.876 + 3.504 + 0.5 + 9.99, ("Reservation",): 2.1, ("Spot",): 0.7}
    )


def test_filter_by_meter_category_and_resource_id_case_insensitively(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    vms = usage(client, SUB, query(filter=dimension("MeterCategory", "Virtual Machines")))
    one_vmss = usage(
        client,
        SUB,
        query(
            filter=QueryFilter(
                and_property=[
                    dimension("MeterCategory", "Virtual Machines"),
                    dimension("ResourceId", VMSS.upper()),
                ]
            )
        ),
    )
    storage_or_spot = usage(
        client,
        SUB,
        query(
            filter=QueryFilter(
                or_property=[dimension("MeterCategory", "Storage"), dimension("PricingModel", "Spot")]
            )
        ),
    )

    assert by_key(vms.rows) == pytest.approx({k: v for k, v in SUB_AMORTIZED.items() if k[1] != DISK.lower()})
    assert by_key(one_vmss.rows) == pytest.approx(
        {k: v for k, v in SUB_AMORTIZED.items() if k[1] == VMSS.lower()}
    )
    assert set(by_key(storage_or_spot.rows)) == {
        (20240601, DISK.lower(), "OnDemand"),
        (20240603, SPOT_VMSS.lower(), "Spot"),
    }


def test_tag_filter_matches_tag_names_case_insensitively(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    tagged = QueryFilter(
        tags=QueryComparisonExpression(
            name="AKS-MANAGED-POOLNAME", operator="In", values_property=["nodepool1"]
        )
    )
    result = usage(client, SUB, query(granularity=None, grouping=("ResourceId",), filter=tagged))

    assert by_key(result.rows) == pytest.approx({(VMSS.lower(),): 3.504 + 2.1 + 0.876 + 3.504})


def test_node_resource_group_scope_sees_only_its_resources(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    result = usage(client, NODE_RG.lower(), query(granularity=None, grouping=("ResourceGroupName",)))

    assert [c.name for c in result.columns] == ["Cost", "ResourceGroupName", "Currency"]
    assert by_key(result.rows) == pytest.approx(
        {("MC_rg_aks_eastus",): 3.504 + 0.0013392 + 2.1 + 0.876 + 3.504 + 0.7}
    )


def test_usage_quantity_is_summed_beside_the_cost_per_meter_category(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    """UsageQuantity sums the records' quantities beside their cost (hours of the VM meters, GB of the
    Bandwidth ones), in both cost types; its column is named after the aggregated column, like a cost's."""
    fake.records[:] = [
        UsageRecord(day(1), VMSS, "OnDemand", 0.146 * 20, 0.146 * 20, quantity=20.0),  # instance _0, 20 h
        UsageRecord(day(1), VMSS, "OnDemand", 0.146 * 24, 0.146 * 24, quantity=24.0),  # instance _1
        UsageRecord(day(1), VMSS, "Reservation", 0.09 * 7.5, 0.0, quantity=7.5),  # covered: 0 in ActualCost
        UsageRecord(day(1), VMSS, "OnDemand", 0.00000204, 0.00000204, "Bandwidth", quantity=0.0002),
        UsageRecord(day(1), DISK, "OnDemand", 0.0013392, 0.0013392, "Storage", quantity=0.001),
        UsageRecord(day(2), VMSS, "OnDemand", 0.146 * 3, 0.146 * 3, quantity=3.0),
    ]
    for kind, covered in (("AmortizedCost", 0.09 * 7.5), ("ActualCost", 0.0)):
        definition = query(kind, grouping=("ResourceId", "MeterCategory"),
                           filter=dimension("MeterCategory", "Virtual Machines", "Bandwidth"))
        assert definition.dataset is not None
        definition.dataset.aggregation = {
            "totalCost": QueryAggregation(name="Cost", function="Sum"),
            "totalQuantity": QueryAggregation(name="UsageQuantity", function="Sum"),
        }
        result = usage(client, NODE_RG, definition)
        assert [(c.name, c.type) for c in result.columns] == [
            ("Cost", "Number"),
            ("UsageQuantity", "Number"),
            ("UsageDate", "Number"),
            ("ResourceId", "String"),
            ("MeterCategory", "String"),
            ("Currency", "String"),
        ]
        rows = {(r[2], r[3], r[4]): (r[0], r[1]) for r in result.rows}
        assert rows == {
            (20240601, VMSS.lower(), "Bandwidth"): (pytest.approx(0.00000204), pytest.approx(0.0002)),
            (20240601, VMSS.lower(), "Virtual Machines"): (
                pytest.approx(0.146 * 44 + covered),
                pytest.approx(51.5),
            ),
            (20240602, VMSS.lower(), "Virtual Machines"): (pytest.approx(0.438), pytest.approx(3.0)),
        }


def test_an_unknown_aggregation_column_is_refused(fake: FakeCostManagement, client: CostManagementClient) -> None:
    definition = query()
    assert definition.dataset is not None
    definition.dataset.aggregation = {"totalHours": QueryAggregation(name="UsageHours", function="Sum")}
    with pytest.raises(HttpResponseError) as raised:
        client.query.usage(SUB, definition)
    assert raised.value.status_code == 400 and "UsageQuantity" in str(raised.value)


def test_monthly_granularity_and_month_to_date(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    fake.today = day(2)
    definition = QueryDefinition(
        type="AmortizedCost",
        timeframe="MonthToDate",
        dataset=QueryDataset(
            granularity="Monthly",
            aggregation={"totalCost": QueryAggregation(name="PreTaxCost", function="Sum")},
            grouping=[QueryGrouping(type="Dimension", name="PricingModel")],
        ),
    )
    result = usage(client, SUB, definition)

    # The column is named after the aggregated column ("PreTaxCost"), not the alias ("totalCost").
    assert [(c.name, c.type) for c in result.columns] == [
        ("PreTaxCost", "Number"),
        ("BillingMonth", "Datetime"),
        ("PricingModel", "String"),
        ("Currency", "String"),
    ]
    assert by_key(result.rows) == pytest.approx(
        {
            ("2024-06-01T00:00:00", "OnDemand"): 3.504 + 0.0013392 + 0.5 + 0.876,
            ("2024-06-01T00:00:00", "Reservation"): 2.1,
        }
    )


def test_scope_spellings_and_what_the_sdk_sends(fake: FakeCostManagement) -> None:
    credential = StaticToken(fake.token)
    client = CostManagementClient(
        credential, base_url=fake.url, retry_total=0, connection_verify=fake.ca_file
    )
    with client:
        results = [usage(client, scope, query()) for scope in (SUB, SUB.lstrip("/"), SUB + "/", SUB.upper())]

    assert all(by_key(r.rows) == pytest.approx(SUB_AMORTIZED) for r in results)
    call = fake.calls[0]
    assert call["method"] == "POST"
    assert call["path"] == f"{SUB}/providers/Microsoft.CostManagement/query"
    assert call["query"] == {"api-version": "2025-03-01"}
    assert call["headers"]["authorization"] == "Bearer good-token"
    assert call["body"]["dataset"]["aggregation"] == {"totalCost": {"name": "Cost", "function": "Sum"}}
    assert call["body"]["timePeriod"] == {"from": "2024-06-01T00:00:00Z", "to": "2024-06-03T23:59:59Z"}
    assert credential.requests[0] == ("https://management.azure.com/.default",)


# -- paging --------------------------------------------------------------------------------------------------


def test_next_link_paging_through_send_request_returns_every_row_once(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    fake.page_size = 2
    definition = query()
    first = usage(client, SUB, definition)
    rows, link, pages = list(first.rows), first.next_link, 1
    while link:
        assert link.startswith(
            f"{fake.url}{SUB}/providers/Microsoft.CostManagement/query?api-version=2025-03-01&"
        )
        response = client.send_request(HttpRequest("POST", link, json=definition.as_dict()))
        response.raise_for_status()
        page = QueryResult(response.json())
        rows += page.rows
        link, pages = page.next_link, pages + 1

    assert pages == 4  # 7 rows, 2 a page
    assert by_key(rows) == pytest.approx(SUB_AMORTIZED)
    assert [c["body"] for c in fake.calls] == [definition.as_dict()] * 4
    assert all("$skiptoken" in c["query"] for c in fake.calls[1:])


def test_next_link_with_another_body_is_refused(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    fake.page_size = 2
    link = usage(client, SUB, query()).next_link
    assert link is not None

    response = client.send_request(HttpRequest("POST", link, json=query("ActualCost").as_dict()))

    assert response.status_code == 400
    with pytest.raises(HttpResponseError):
        response.raise_for_status()


def test_mangled_rows_reach_the_caller_unchecked(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    fake.mangle = lambda rows: [[str(rows[0][0]), *rows[0][1:]], [None, "20240601"]]

    result = usage(client, SUB, query())

    assert result.rows[0][0] == str(result.rows[0][0])  # the SDK does not validate row values
    assert result.rows[1] == [None, "20240601"]


# -- faults --------------------------------------------------------------------------------------------------


def test_no_content_yields_none(fake: FakeCostManagement) -> None:
    fake.no_content = True

    with fake.client() as client:  # the helper: StaticToken(fake.token), retry_total=0, trusts ca_file
        assert client.query.usage(SUB, query()) is None
    assert fake.calls[-1]["status"] == 204


def test_wrong_token_is_client_authentication_error(fake: FakeCostManagement) -> None:
    client = CostManagementClient(
        StaticToken("stale-token"), base_url=fake.url, retry_total=0, connection_verify=fake.ca_file
    )
    with client, pytest.raises(ClientAuthenticationError) as caught:
        client.query.usage(SUB, query())

    assert caught.value.status_code == 401
    assert caught.value.error is not None and caught.value.error.code == "InvalidAuthenticationToken"
    assert "WWW-Authenticate" in response_headers(caught.value)
    assert len(fake.calls) == 1  # a challenge without claims is not retried


def test_unauthenticated_fault_then_recovery(fake: FakeCostManagement, client: CostManagementClient) -> None:
    fake.fail_next("unauthenticated")

    with pytest.raises(ClientAuthenticationError) as caught:
        client.query.usage(SUB, query())
    assert caught.value.error is not None and caught.value.error.code == "AuthenticationFailed"
    assert usage(client, SUB, query()).rows


def test_forbidden_is_http_response_error_403(fake: FakeCostManagement, client: CostManagementClient) -> None:
    fake.fail_next("forbidden")

    with pytest.raises(HttpResponseError) as caught:
        client.query.usage(SUB, query())

    err = caught.value
    assert not isinstance(err, ClientAuthenticationError)
    assert err.status_code == 403
    assert err.error is not None and err.error.code == "AuthorizationFailed"
    assert (
        "does not have authorization to perform action 'Microsoft.CostManagement/query/action'" in err.message
    )
    assert f"over scope '{SUB}'" in err.message


def test_unknown_scope_is_resource_not_found(fake: FakeCostManagement, client: CostManagementClient) -> None:
    with pytest.raises(ResourceNotFoundError) as no_sub:
        client.query.usage("/subscriptions/99999999-0000-0000-0000-000000000000", query())
    with pytest.raises(ResourceNotFoundError) as no_group:
        client.query.usage(f"{SUB}/resourceGroups/MC_gone_aks_eastus", query())

    assert no_sub.value.status_code == 404
    assert no_sub.value.error is not None and no_sub.value.error.code == "SubscriptionNotFound"
    assert no_group.value.error is not None and no_group.value.error.code == "ResourceGroupNotFound"


def test_throttled_carries_cost_management_retry_after_and_is_not_retried(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    fake.fail_next("throttled", retry_after=7)

    with pytest.raises(HttpResponseError) as caught:
        client.query.usage(SUB, query())

    err = caught.value
    assert err.status_code == 429
    headers = response_headers(err)
    assert headers["x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after"] == "7"
    assert headers["x-ms-ratelimit-microsoft.costmanagement-entity-retry-after"] == "7"
    assert headers["x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after"] == "7"
    assert "x-ms-ratelimit-microsoft.costmanagement-qpu-remaining" in headers
    assert "Retry-After" not in headers
    assert len(fake.calls) == 1


def test_default_retry_policy_skips_post_429_but_retries_post_503(fake: FakeCostManagement) -> None:
    client = CostManagementClient(
        StaticToken(fake.token),
        base_url=fake.url,
        retry_total=3,
        retry_backoff_factor=0,
        connection_verify=fake.ca_file,
    )
    with client:
        fake.fail_next("throttled", retry_after=1)
        with pytest.raises(HttpResponseError) as caught:
            client.query.usage(SUB, query())
        assert caught.value.status_code == 429
        assert len(fake.calls) == 1  # no Retry-After and a POST: azure-core does not retry a 429

        fake.fail_next("unavailable")
        assert usage(client, SUB, query()).rows  # a POST 503 is retried by azure-core
        assert [c["status"] for c in fake.calls[1:]] == [503, 200]


def test_unavailable_is_http_response_error_503(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    fake.fail_next("unavailable", retry_after=30)

    with pytest.raises(HttpResponseError) as caught:
        client.query.usage(SUB, query())

    assert caught.value.status_code == 503
    assert response_headers(caught.value)["Retry-After"] == "30"
    assert len(fake.calls) == 1


def test_bad_requests_are_http_response_error_400(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    fake.fail_next("bad_request")
    with pytest.raises(HttpResponseError) as canned:
        client.query.usage(SUB, query())
    with pytest.raises(HttpResponseError) as three_groupings:
        client.query.usage(SUB, query(grouping=("ResourceId", "PricingModel", "MeterCategory")))
    with pytest.raises(HttpResponseError) as usage_type:
        client.query.usage(SUB, query("Usage"))

    for caught in (canned, three_groupings, usage_type):
        assert caught.value.status_code == 400
        assert caught.value.error is not None and caught.value.error.code == "BadRequest"
    assert "Only two groupings are allowed" in three_groupings.value.message


def test_slow_answer_with_short_read_timeout_is_service_response_timeout(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    fake.delay_seconds = 0.5
    started = time.monotonic()

    with pytest.raises(ServiceResponseTimeoutError) as caught:
        client.query.usage(SUB, query(), read_timeout=0.1)

    assert isinstance(caught.value, ServiceResponseError)
    assert time.monotonic() - started < 0.45
    assert len(fake.calls) == 1


def test_connection_timeout_does_not_bound_a_slow_answer(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    fake.delay_seconds = 0.3

    assert usage(client, SUB, query(), connection_timeout=0.05).rows  # it only bounds connecting


# -- commitments ---------------------------------------------------------------------------------------------

RESERVATION = f"{RESERVATION_ORDER}/reservations/0d4c3b2a-1e0f-4a9b-8c7d-6e5f4a3b2c1d"
COMMITMENT_RECORDS = [
    UsageRecord(day(1), VMSS, "Reservation", 1.44, 0.0, quantity=24.0, reservation_id=RESERVATION),
    UsageRecord(day(1), "", "Reservation", 0.72, 0.0, charge_type="UnusedReservation",
                reservation_id=RESERVATION, subscription=SUB.split("/")[-1]),
    UsageRecord(day(1), "", "Reservation", 0.0, 788.4, charge_type="Purchase", reservation_id=RESERVATION,
                subscription=SUB.split("/")[-1]),
]


def test_unused_reservation_rows_are_amortized_only_and_seen_at_the_subscription_not_the_group(
    fake: FakeCostManagement, client: CostManagementClient
) -> None:
    """learn.microsoft.com, "View amortized benefit costs": the unused part of a reservation's day is a
    charge of type UnusedReservation, seen only in amortized cost and attributed to no resource."""
    fake.records[:] = COMMITMENT_RECORDS
    grouping = ("ReservationId", "ChargeType")
    amortized = usage(client, SUB, query("AmortizedCost", grouping=grouping, first=1, last=1))
    assert [c.name for c in amortized.columns] == ["Cost", "UsageDate", "ReservationId", "ChargeType", "Currency"]
    assert by_key(amortized.rows) == pytest.approx(
        {(20240601, RESERVATION, "Usage"): 1.44, (20240601, RESERVATION, "UnusedReservation"): 0.72}
    )
    actual = usage(client, SUB, query("ActualCost", grouping=grouping, first=1, last=1))
    assert by_key(actual.rows) == pytest.approx(
        {(20240601, RESERVATION, "Usage"): 0.0, (20240601, RESERVATION, "Purchase"): 788.4}
    )
    in_group = usage(client, NODE_RG, query("AmortizedCost", grouping=grouping, first=1, last=1))
    assert by_key(in_group.rows) == pytest.approx({(20240601, RESERVATION, "Usage"): 1.44})
    unused_only = dimension("ChargeType", "UnusedReservation")
    other = usage(client, OTHER_SUB, query("AmortizedCost", grouping=grouping, filter=unused_only, first=1, last=1))
    assert other.rows == []
