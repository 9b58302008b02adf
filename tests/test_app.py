"""The wired app: inventory → engine → store, scheduler re-pricing, and start-up faults that must not crash."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from exporter.app import App, demo_nodes_path
from exporter.config import ConfigError, load_config
from tests.conftest import FakeClock, scrape, turn, wait_until, write


def test_custom_table_edit_reprices_served_nodes_without_restart(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text("prices:\n  - {provider: '', cpu_core_hourly: '0.01', memory_gib_hourly: '0.001'}\n")
    config = load_config(
        None,
        env={},
        overrides={
            "demo": True,
            "pricing.custom.file": str(table),
            "pricing.custom.reload_interval_seconds": 30,
        },
    )
    clock = FakeClock()
    app = App(config, clock=clock)
    turn(app)
    assert app.ready()
    text = scrape(app)
    assert (
        'nodecost_node_hourly_cost{node="rack3-worker-07",source="custom",price_basis="custom",currency="USD"}'
        in text
    )
    assert 'nodecost_nodes{source="unpriced"} 0.0' in text
    assert 'nodecost_integration_up{integration="custom_prices"} 1.0' in text

    def cpu_core_line() -> str:
        return next(
            line
            for line in scrape(app).splitlines()
            if line.startswith('nodecost_node_cpu_core_hourly_cost{node="rack3-worker-07"')
        )

    write(table, "prices:\n  - {provider: '', cpu_core_hourly: '0.02', memory_gib_hourly: '0.002'}\n")
    turn(app)
    assert "0.01" in cpu_core_line()  # re-read at the reload interval, not on every pass
    clock.advance(30)
    turn(app)
    assert "0.02" in cpu_core_line()


def test_invalid_custom_table_at_start_is_a_config_error(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text("prices:\n  - {instance_type: m5.large, hourly: 'about ten cents'}\n")
    with pytest.raises(ConfigError, match=r"^pricing\.custom\.file: .*prices\[0\]\.hourly"):
        App(load_config(None, env={}, overrides={"demo": True, "pricing.custom.file": str(table)}))


def test_corrupt_cache_file_starts_empty_and_says_so(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    cache.write_bytes(b"\x00garbage" * 512)
    nodes = tmp_path / "nodes.json"
    nodes.write_text(Path(demo_nodes_path()).read_text())
    app = App(
        load_config(None, env={}, overrides={"kubernetes.nodes_file": str(nodes), "cache.path": str(cache)})
    )
    stop = threading.Event()
    app.start(stop)
    try:
        wait_until(app.ready)
        text = scrape(app)
        assert 'nodecost_integration_up{integration="cache"} 0.0' in text
        assert 'nodecost_integration_failure_info{integration="cache",reason="corrupt"} 1.0' in text
        assert 'nodecost_nodes{source="offline"} 11.0' in text  # pricing unaffected
    finally:
        stop.set()


BILLING = {"NODECOST_AWS__CUR__ENABLED": "true", "NODECOST_AWS__CUR__DATABASE": "cur", "NODECOST_AWS__CUR__TABLE": "t"}


def test_billing_without_a_cache_says_once_that_a_restart_loses_the_bill(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = {"kubernetes.nodes_file": demo_nodes_path()}
    with caplog.at_level(logging.WARNING, "exporter.app"):
        App(load_config(None, env=BILLING, overrides={**nodes, "cache.enabled": False}))
        App(load_config(None, env=BILLING, overrides={**nodes, "cache.path": str(tmp_path / "c.sqlite")}))
        App(load_config(None, env={}, overrides={**nodes, "cache.enabled": False}))  # no billing: nothing lost
    messages = [r.getMessage() for r in caplog.records if r.name == "exporter.app"]
    assert len(messages) == 1 and "aws.cur" in messages[0] and "restart" in messages[0]


def test_malformed_node_in_a_nodes_file_is_counted_and_the_others_served(tmp_path: Path) -> None:
    data = json.loads(Path(demo_nodes_path()).read_text())
    data["items"].append({"metadata": {"name": "no-uid"}})
    data["items"].append("not even an object")
    nodes = tmp_path / "nodes.json"
    nodes.write_text(json.dumps(data))
    app = App(
        load_config(None, env={}, overrides={"kubernetes.nodes_file": str(nodes), "cache.enabled": False})
    )
    stop = threading.Event()
    app.start(stop)
    try:
        wait_until(app.ready)
        text = scrape(app)
        assert 'nodecost_invalid_inputs_total{kind="node"} 2.0' in text
        assert len(app.nodes()) == 12
    finally:
        stop.set()


@pytest.mark.slow  # the exporter as a process
def test_a_cloud_enabled_without_its_extra_is_a_config_error() -> None:
    """An image built without the aws extra, with AWS enabled in its config: exit 2 naming the key."""
    probe = (
        "import sys; sys.modules['boto3'] = None\n"  # as if boto3 were not installed
        "from exporter.cli import main\n"
        "sys.exit(main(['--demo', '--web.listen-address=127.0.0.1:0']))\n"
    )
    env = {**os.environ, "NODECOST_AWS__PRICING__ENABLED": "true"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    assert (
        "aws.pricing.enabled: needs the 'aws' extra, which is not installed (boto3 is missing): "
        "run `python3 scripts/uv.py run --frozen --extra aws node-cost-exporter <arguments>` in a checkout, or `pip install 'node-cost-exporter[aws]'` first"
    ) in result.stderr


def test_a_discount_beside_a_net_cur_basis_is_warned_about_at_start(caplog: pytest.LogCaptureFixture) -> None:
    """A net basis already carries the EDP: a non-zero pricing.discounts.aws beside it is a mistake to name."""
    nodes = {"kubernetes.nodes_file": demo_nodes_path(), "cache.enabled": False}
    for basis, discount, warned in (("amortized_net", "0.05", True), ("net_unblended", "0.05", True),
                                    ("amortized_net", "0", False), ("amortized", "0.05", False)):
        caplog.clear()
        env = {**BILLING, "NODECOST_AWS__CUR__COST_BASIS": basis, "NODECOST_PRICING__DISCOUNTS__AWS": discount}
        with caplog.at_level(logging.WARNING, "exporter.app"):
            App(load_config(None, env=env, overrides=nodes))
        said = [r.getMessage() for r in caplog.records if "pricing.discounts.aws" in r.getMessage()]
        assert len(said) == int(warned), (basis, discount, said)
        if warned:
            assert f"aws.cur.cost_basis is {basis}" in said[0] and "set pricing.discounts.aws to 0" in said[0]


def test_nodes_keep_only_labels_that_are_read(tmp_path: Path) -> None:
    """No billing tag allowlist and no custom table: a Node keeps no labels; a custom table's selectors may
    name any label (and change on reload), so with one every label is kept."""
    table = tmp_path / "prices.yaml"
    table.write_text("prices:\n  - {provider: '', cpu_core_hourly: '0.01', memory_gib_hourly: '0.001'}\n")
    kept = {}
    for name, overrides in (("none", {}), ("custom", {"pricing.custom.file": str(table)})):
        app = App(load_config(None, env={}, overrides={"demo": True, "cache.enabled": False, **overrides}))
        turn(app)
        kept[name] = [node.labels for node in app.nodes()]
    assert kept["none"] and all(labels == {} for labels in kept["none"])
    assert all("kubernetes.io/hostname" in labels for labels in kept["custom"])
