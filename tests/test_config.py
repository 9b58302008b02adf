import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.config import Config, ConfigError, load_config
from exporter.config.sections import sections

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_without_file() -> None:
    config = load_config(None, env={})
    assert config == Config(sources=config.sources)  # the core sections are the model's defaults
    assert config.sources == {key: settings() for key, settings in sections().items()}  # every source off
    assert "aws.cur" in config.sources
    assert config.pricing.precedence == ("billing", "shelf", "custom", "offline")
    assert "karpenter.sh/capacity-type=spot" in config.kubernetes.spot_labels


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "web:\n  listen_address: ':9000'\nlog:\n  level: debug\npricing:\n  discounts:\n    aws: 0.1\n")
    env = {"NODECOST_LOG__LEVEL": "warn", "NODECOST_PRICING__DISCOUNTS__GCP": "0.25", "OTHER": "x"}
    config = load_config(path, env=env, overrides={"web.listen_address": "127.0.0.1:9100"})
    assert config.web.listen_address == "127.0.0.1:9100"
    assert config.log.level == "warn"
    assert config.pricing.discounts.aws == Decimal("0.1")
    assert config.pricing.discounts.gcp == Decimal("0.25")


def test_env_list_is_comma_separated() -> None:
    config = load_config(None, env={"NODECOST_KUBERNETES__SPOT_LABELS": "a=b, c"})
    assert config.kubernetes.spot_labels == ("a=b", "c")


CUR = "enabled: true\n    database: cur\n    table: data"
AZ = "enabled: true\n    scope: /subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("web:\n  listen_adress: ':1'\n", "web.listen_adress", "unknown key"),
        ("web:\n  listen_address: 'localhost'\n", "web.listen_address", "[host]:port"),
        ("log:\n  format: text\n", "log.format", "logfmt or json"),
        ("kubernetes:\n  page_size: many\n", "kubernetes.page_size", "whole number"),
        ("kubernetes:\n  page_size: 0\n", "kubernetes.page_size", "between"),
        ("kubernetes:\n  spot_labels: ['=spot']\n", "kubernetes.spot_labels[0]", "key=value"),
        ("cache:\n  enabled: 'yes please'\n", "cache.enabled", "true or false"),
        ("pricing:\n  discounts:\n    aws: 1.5\n", "pricing.discounts.aws", "fraction"),
        ("pricing:\n  discounts:\n    aws: '$0.2'\n", "pricing.discounts.aws", "decimal number"),
        ("pricing:\n  precedence: [shelf, bill]\n", "pricing.precedence[1]", "must be one of"),
        ("pricing:\n  precedence: [shelf, shelf]\n", "pricing.precedence[1]", "twice"),
        ("pricing:\n  currency: usd\n", "pricing.currency", "ISO 4217"),
        ("pricing:\n  custom:\n    file: /nonexistent/prices.yaml\n", "pricing.custom.file", "does not exist"),
        ("pricing: [1, 2]\n", "pricing", "mapping"),
        ("- a\n- b\n", "config.file", "mapping at the top level"),
        ("aws:\n  cur:\n    enabled: true\n    table: cur\n", "aws.cur.database", "must be set"),
        (f"aws:\n  cur:\n    {CUR}\n    cost_basis: blended\n", "aws.cur.cost_basis", "amortized_net"),
        (f"aws:\n  cur:\n    {CUR}\n    cur_version: '1'\n", "aws.cur.cur_version", "legacy"),
        (f"aws:\n  cur:\n    {CUR}\n    output_location: /tmp\n", "aws.cur.output_location", "s3://"),
        (f"aws:\n  cur:\n    {CUR}\npricing:\n  currency: EUR\n", "pricing.currency", "CUR is in USD"),
        ("aws:\n  cur:\n    lookback_days: 0\n", "aws.cur.lookback_days", "between 1 and 31"),
        ("gcp:\n  bigquery:\n    enabled: true\n    project: p\n    dataset: d\n", "gcp.bigquery.table", "must be set"),
        ("gcp:\n  bigquery:\n    max_staleness_seconds: 0\n", "gcp.bigquery.max_staleness_seconds", "positive"),
        ("azure:\n  cost_management:\n    enabled: true\n    scope: /subscriptions/x\n",
         "azure.cost_management.scope", "/subscriptions/<id>"),
        (f"azure:\n  cost_management:\n    {AZ}\n    cost_type: Usage\n", "azure.cost_management.cost_type",
         "AmortizedCost"),
        (f"aws:\n  cur:\n    {CUR}\n    tags: [cost-center, cost_center]\n", "tags", "tag_cost_center"),
        ("web: {listen_address: [\n", "config.file", "not valid YAML"),
        ("log:\n  level_sdk: trace\n", "log.level_sdk", "must be one of debug, info, warn, error"),
    ],
)
def test_invalid_config_names_the_key(tmp_path: Path, text: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert problem in str(caught.value)


def test_bad_env_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^log\.format: "):
        load_config(None, env={"NODECOST_LOG__FORMAT": "xml"})


def test_missing_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^config\.file: cannot read"):
        load_config("/nonexistent/config.yaml", env={})


CONFIG_EXAMPLES = sorted(p for p in (ROOT / "config").glob("*.yaml") if not p.name.startswith("custom-prices"))


@pytest.mark.parametrize("example", CONFIG_EXAMPLES, ids=lambda p: p.name)
def test_shipped_examples_are_valid(example: Path) -> None:
    # The examples point at in-cluster paths; the custom table is swapped for the shipped example table.
    table = str(ROOT / "config" / "custom-prices.example.yaml")
    config = load_config(str(example), env={"NODECOST_PRICING__CUSTOM__FILE": table})
    assert config.pricing.currency == "USD"


@pytest.mark.slow  # the exporter as a process
def test_cli_exits_non_zero_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "pricing:\n  discounts:\n    azure: -0.2\n")
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", path], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "pricing.discounts.azure" in result.stderr
    assert "fraction" in result.stderr
