"""The exporter with a cloud price list: shelf prices win over the offline table, a warm restart makes no
price call, and an outage keeps serving (last prices, else the fallback) and heals by itself.

One test runs the app's real threads end to end; the others take its turns themselves (`turn`) on a
fake clock, so refresh intervals and TTLs pass at once."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from exporter.app import App, demo_nodes_path
from exporter.config import Config, load_config
from exporter.http import serve
from fakes.azure_api import FakeRetailPricesAPI, vm_items
from tests.conftest import FakeClock, scrape, turn, wait_until, write


def hourly(text: str, node: str) -> str:
    return next(
        line for line in text.splitlines() if line.startswith(f'nodecost_node_hourly_cost{{node="{node}"')
    )


def configured(tmp_path: Path, endpoint: str, **overrides: Any) -> Config:
    nodes = tmp_path / "nodes.json"
    if not nodes.exists():
        nodes.write_text(Path(demo_nodes_path()).read_text())
    return load_config(
        None,
        env={},
        overrides={
            "kubernetes.nodes_file": str(nodes),
            "cache.path": str(tmp_path / "cache.sqlite"),
            "azure.retail.enabled": True,
            "azure.retail.endpoint_url": endpoint,
            "azure.retail.backoff_seconds": 0.01,
            "azure.retail.backoff_max_seconds": 0.02,
            **overrides,
        },
    )


@contextmanager
def running(tmp_path: Path, endpoint: str, **overrides: Any) -> Iterator[App]:
    """The app with its real threads and clock, ready."""
    app = App(configured(tmp_path, endpoint, **overrides))
    stop = threading.Event()
    app.start(stop)
    try:
        wait_until(app.ready)
        yield app
    finally:
        stop.set()


def started(tmp_path: Path, endpoint: str, clock: FakeClock, **overrides: Any) -> App:
    """The app on a fake clock after its first turn (nodes read, first refresh pass): ready."""
    app = App(configured(tmp_path, endpoint, **overrides), clock=clock)
    turn(app)
    assert app.ready()
    return app


AKS = "aks-nodepool1-27184539-vmss000000"
AKS_SPOT = "aks-spotpool-27184539-vmss000000"


def azure_items() -> list[dict[str, Any]]:
    return vm_items(
        "eastus", "Standard_D4s_v3", "DSv3", linux="0.192", windows="0.376", spot="0.0384"
    ) + vm_items("eastus", "Standard_D8s_v3", "DSv3", linux="0.384", windows="0.752", spot="0.0768")


def test_shelf_prices_win_and_a_warm_restart_makes_no_call(tmp_path: Path) -> None:
    with FakeRetailPricesAPI(azure_items()) as fake:
        with running(tmp_path, fake.url) as app:
            text = scrape(app)
            calls = fake.calls
            assert calls == 1  # one region, two sizes, spot and on-demand alike: one filtered query
            assert hourly(text, AKS) == (
                f'nodecost_node_hourly_cost{{node="{AKS}",source="azure_retail",price_basis="on_demand",currency="USD"}} 0.192'
            )
            assert hourly(text, AKS_SPOT) == (
                f'nodecost_node_hourly_cost{{node="{AKS_SPOT}",source="azure_retail",price_basis="spot",currency="USD"}} 0.0768'
            )
            assert 'nodecost_integration_up{integration="azure_retail"} 1.0' in text
            # the spot node's on-demand reference is fetched too (same query), so spot savings show
            listed = f'nodecost_node_list_hourly_cost{{node="{AKS_SPOT}",source="azure_retail",currency="USD"}} 0.384'
            wait_until(lambda: listed in scrape(app))
            assert 'nodecost_integration_requests_total{integration="azure_retail"} 1.0' in text
            assert 'nodecost_nodes{source="azure_retail"} 3.0' in text
        with running(tmp_path, fake.url) as app:
            assert hourly(scrape(app), AKS_SPOT).endswith(" 0.0768")
            assert fake.calls == calls  # served from the SQLite cache


def test_an_outage_at_start_falls_back_then_heals(tmp_path: Path) -> None:
    clock = FakeClock()
    with FakeRetailPricesAPI(azure_items()) as fake:
        fake.fail_next(4, 503)  # the first refresh: one call and its three retries
        app = started(tmp_path, fake.url, clock, **{"azure.retail.refresh_interval_seconds": 3600})
        text = scrape(app)
        assert 'nodecost_integration_up{integration="azure_retail"} 0.0' in text
        assert (
            'nodecost_integration_failure_info{integration="azure_retail",reason="unavailable"} 1.0' in text
        )
        assert hourly(text, AKS).startswith(f'nodecost_node_hourly_cost{{node="{AKS}",source="offline"')
        turn(app)
        assert fake.calls == 4  # the failed keys wait for the interval, not the next pass
        clock.advance(3600)
        turn(app)
        text = scrape(app)
        assert 'source="azure_retail"' in hourly(text, AKS)
        assert 'nodecost_integration_up{integration="azure_retail"} 1.0' in text
        assert (
            'nodecost_integration_errors_total{integration="azure_retail",reason="unavailable"} 4.0' in text
        )


def test_a_new_instance_type_is_fetched_on_first_sight(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.json"
    data = json.loads(Path(demo_nodes_path()).read_text())
    nodes.write_text(json.dumps(data))
    with FakeRetailPricesAPI(
        azure_items() + vm_items("eastus", "Standard_E4s_v5", "Esv5", linux="0.252")
    ) as fake:
        app = started(tmp_path, fake.url, FakeClock(), **{"azure.retail.refresh_interval_seconds": 3600})
        before = fake.calls
        new = json.loads(json.dumps(next(i for i in data["items"] if i["metadata"]["name"] == AKS)))
        new["metadata"].update(name="aks-mem-27184539-vmss000000", uid="5b1c3a52-0d6e-4b0e-9a57-3f2f1c9d8e11")
        new["metadata"]["labels"]["node.kubernetes.io/instance-type"] = "Standard_E4s_v5"
        data["items"].append(new)
        write(nodes, json.dumps(data))
        turn(app)  # the clock has not moved: the hourly interval is not what fetched it
        assert 'node="aks-mem-27184539-vmss000000",source="azure_retail"' in scrape(app)
        assert fake.calls == before + 1


def test_a_spot_nodes_list_price_is_refreshed_like_its_own(tmp_path: Path) -> None:
    """The on-demand reference of a spot node is a wanted key too, so it follows the TTL, not just first sight."""
    clock = FakeClock()
    with FakeRetailPricesAPI(azure_items()) as fake:
        app = started(
            tmp_path,
            fake.url,
            clock,
            **{"azure.retail.ttl_seconds": 86400, "azure.retail.refresh_interval_seconds": 3600},
        )
        listed = f'nodecost_node_list_hourly_cost{{node="{AKS_SPOT}",source="azure_retail",currency="USD"}}'
        assert f"{listed} 0.384" in scrape(app)
        fake.items = azure_items()[: len(azure_items()) // 2] + vm_items(
            "eastus", "Standard_D8s_v3", "DSv3", linux="0.4", windows="0.752", spot="0.0768"
        )
        clock.advance(3600)
        turn(app)
        assert f"{listed} 0.384" in scrape(app)  # refreshed, but younger than the TTL: not fetched again
        clock.advance(86400 - 3600)
        turn(app)
        assert f"{listed} 0.4" in scrape(app)


def test_a_hung_bill_at_cold_start_holds_up_neither_shelf_prices_nor_readiness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cold start, no cache, the billing service hung (Athena holds every request far past the test): every
    node is priced from the shelf (or the offline table) and /readyz is 200 within 20 s of the shelf
    answering, because no source waits on another."""
    from fakes.athena_api import FakeAthena
    from fakes.server import Fault

    for name, value in (("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "secret-example"),
                        ("AWS_EC2_METADATA_DISABLED", "true")):
        monkeypatch.setenv(name, value)
    with FakeRetailPricesAPI(azure_items()) as shelf, FakeAthena() as athena:
        athena.hold_seconds = 300.0
        athena.inject(Fault.TIMEOUT, None)
        config = configured(tmp_path, shelf.url, **{
            "aws.cur.enabled": True, "aws.cur.endpoint_url": athena.url, "aws.cur.database": "cur",
            "aws.cur.table": "data_exports", "aws.cur.timeout_seconds": 300, "aws.cur.retries": 0,
        })
        app = App(config)
        stop = threading.Event()
        started = time.monotonic()
        app.start(stop)
        server = serve(app, "127.0.0.1", 0)  # its loop runs on serve()'s own thread
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/readyz"
            wait_until(lambda: _status(url) == 200, timeout=20.0)
            assert time.monotonic() - started <= 20.0
            wait_until(lambda: bool(athena.requests))  # the bill is asked for, and hangs (not waited for)
            text = scrape(app)
            nodes = json.loads(Path(config.kubernetes.nodes_file).read_text())["items"]
            for item in nodes:
                if not item["spec"].get("providerID"):
                    continue  # an on-prem node: no price list has it
                line = hourly(text, item["metadata"]["name"])
                assert 'source="aws_cur"' not in line, line
            assert 'source="azure_retail"' in hourly(text, AKS)
        finally:
            stop.set()
            server.shutdown()
            server.server_close()


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0
