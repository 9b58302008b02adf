"""The alert rules (deploy/alerts/) pass promtool's checks and unit tests, every alert is tested firing and
resolving, and the Grafana-managed rule (deploy/grafana/alerting/) runs the same PromQL."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow  # runs promtool

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "alerts" / "node-cost-exporter.rules.yml"
UNIT_TESTS = ROOT / "deploy" / "alerts" / "tests.yml"
GRAFANA_RULES = ROOT / "deploy" / "grafana" / "alerting" / "node-cost-exporter.yaml"
ALERTS = {
    "NodeCostIntegrationDown",
    "NodeCostBillingDataStale",
    "NodeCostNodesUnpriced",
    "NodeCostFallbackPricing",
    "NodeCostKubernetesWatchDown",
    "NodeCostExporterAbsent",
    "NodeCostCommitmentUnderused",
}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert [g["name"] for g in groups] == ["node-cost-exporter"]
    return list(groups[0]["rules"])


def promtool_run(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, timeout=60)


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = promtool_run(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    result = promtool_run(promtool, "test", "rules", UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_labelled_and_explained() -> None:
    assert {rule["alert"] for rule in rules()} == ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert rule.get("for"), rule["alert"]


def test_every_alert_is_tested_firing_then_resolved() -> None:
    """Each alert has a unit test where it fires and, at a later eval_time of the same test, is gone;
    every rule of a name with several rules (NodeCostFallbackPricing) is seen firing."""
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    for alert in ALERTS:
        proven = False
        for test in tests:
            checks = sorted(
                (check for check in test.get("alert_rule_test", []) if check["alertname"] == alert),
                key=lambda check: parse_duration(check["eval_time"]),
            )
            fired = [i for i, check in enumerate(checks) if check["exp_alerts"]]
            if fired and any(not check["exp_alerts"] for check in checks[fired[0] + 1 :]):
                proven = True
        assert proven, f"{alert}: no unit test shows it firing and then resolved"
    fallback = [
        alert["exp_labels"]["fallback"]
        for test in tests
        for check in test.get("alert_rule_test", [])
        if check["alertname"] == "NodeCostFallbackPricing"
        for alert in check["exp_alerts"]
    ]
    assert {rule["labels"]["fallback"] for rule in rules() if "fallback" in rule["labels"]} <= set(fallback)


def parse_duration(text: str) -> int:
    """promtool's eval_time (`37h1m`) in seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    total, number = 0, ""
    for char in str(text):
        if char.isdigit():
            number += char
        else:
            total += int(number) * units[char]
            number = ""
    return total + (int(number) if number else 0)


def grafana_rule() -> dict[str, Any]:
    doc = yaml.safe_load(GRAFANA_RULES.read_text())
    assert doc["apiVersion"] == 1
    (group,) = doc["groups"]
    (rule,) = group["rules"]
    return dict(rule)


def test_grafana_rule_runs_the_same_promql_as_the_prometheus_rule() -> None:
    rule = grafana_rule()
    (prometheus_rule,) = [r for r in rules() if r["alert"] == "NodeCostIntegrationDown"]
    queries = {query["refId"]: query for query in rule["data"]}
    assert queries["A"]["model"]["expr"] == prometheus_rule["expr"]
    assert queries["A"]["datasourceUid"] != "__expr__"
    assert rule["title"] == "NodeCostIntegrationDown"
    assert rule["for"] == prometheus_rule["for"] == "15m"
    assert rule["labels"] == prometheus_rule["labels"]
    assert {"summary", "description", "runbook"} <= set(rule["annotations"])
    # The condition is a threshold over a reduction of A, as Grafana needs for a multi-series query.
    condition = queries[rule["condition"]]["model"]
    assert condition["type"] == "threshold"
    reduce = queries[condition["expression"]]["model"]
    assert reduce["type"] == "reduce" and reduce["expression"] == "A"
    assert rule["noDataState"] == "OK"  # no series: every integration is up


def test_grafana_rule_promql_passes_promtool(promtool: str, tmp_path: Path) -> None:
    expr = {q["refId"]: q for q in grafana_rule()["data"]}["A"]["model"]["expr"]
    path = tmp_path / "grafana.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [{"alert": "A", "expr": expr}]}]}))
    result = promtool_run(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_documented_metrics_are_used() -> None:
    """Every nodecost_/process_ metric named in the alerts, dashboards and recipes is in docs/metrics.md;
    besides those, only kube-state-metrics' series and Prometheus' `up`."""
    documented = set(re.findall(r"^\| `(\w+)` \|", (ROOT / "docs" / "metrics.md").read_text(), re.MULTILINE))
    assert "nodecost_node_hourly_cost" in documented
    others = {"kube_pod_container_resource_requests", "kube_node_labels", "kube_pod_status_phase"}
    files = [
        RULES,
        UNIT_TESTS,
        GRAFANA_RULES,
        ROOT / "deploy" / "grafana" / "dashboards" / "node-cost-exporter.json",
        ROOT / "docs" / "promql.md",
    ]
    for path in files:
        text = path.read_text()
        used = set(re.findall(r"\b(?:nodecost|process)_\w+", text))
        assert used <= documented, f"{path.name}: {sorted(used - documented)}"
        kube = set(re.findall(r"\bkube_\w+", text))
        assert kube <= others, f"{path.name}: {sorted(kube - others)}"
