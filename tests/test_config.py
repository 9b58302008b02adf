import dataclasses
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from exporter.config import Config, ConfigError, load_config
from exporter.config.errors import shown
from exporter.config.sections import cloud_sections, sections

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_without_file() -> None:
    config = load_config(None, env={})
    assert config == Config(sources=config.sources, clouds=config.clouds)  # the core sections' defaults
    assert config.sources == {key: settings() for key, settings in sections().items()}  # every source off
    assert config.clouds == {cloud: shared() for cloud, shared in cloud_sections().items()}
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
        ("web:\n  telemetry_path: /healthz\n", "web.telemetry_path", "/healthz"),
        ("web:\n  telemetry_path: /readyz\n", "web.telemetry_path", "/readyz"),
        ("web:\n  telemetry_path: /\n", "web.telemetry_path", "landing page"),
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


SECRET = "s3cr3t-Value-4711"


@pytest.mark.parametrize(
    "text",
    [
        f"gcp:\n  catalog:\n    api_key: [{SECRET}]\n",
        f"gcp:\n  catalog:\n    api_key: {{nested: {SECRET}}}\n",
        f'gcp:\n  catalog:\n    api_key: "{SECRET}\n',  # unterminated: the YAML error would quote the line
        f"gcp:\n  catalog:\n    api_key: {SECRET}\n    enabled: true\n  - {SECRET}\n",
    ],
    ids=["list", "mapping", "unterminated", "bad-indent"],
)
def test_config_errors_never_show_a_secret_value(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    assert SECRET not in str(caught.value)
    assert caught.value.key in ("gcp.catalog.api_key", "config.file")


@pytest.mark.parametrize(
    "key", ["gcp.catalog.api_key", "x.client_secret", "db.password", "auth.token", "aws.credentials"]
)
def test_secret_like_keys_are_recognised(key: str) -> None:
    assert SECRET not in shown(key, SECRET)
    assert shown("aws.cur.table", "cur") == "'cur'"


def test_environment_strings_stay_strings() -> None:
    env = {
        "NODECOST_AWS__CUR__TABLE": "123_456",
        "NODECOST_GCP__BIGQUERY__PROJECT": "0123",
        "NODECOST_GCP__BIGQUERY__DATASET": "1e3",
        "NODECOST_GCP__CATALOG__API_KEY": "0x1F",
        "NODECOST_KUBERNETES__CONTEXT": "null",
        "NODECOST_LOG__LEVEL": "debug",
    }
    config = load_config(None, env=env)
    assert config.sources["aws.cur"].table == "123_456"  # type: ignore[attr-defined]
    bigquery = config.sources["gcp.bigquery"]
    assert (bigquery.project, bigquery.dataset) == ("0123", "1e3")  # type: ignore[attr-defined]
    assert config.sources["gcp.catalog"].api_key == "0x1F"  # type: ignore[attr-defined]
    assert config.kubernetes.context == "null"


def test_typed_keys_still_parse_from_the_environment() -> None:
    env = {
        "NODECOST_KUBERNETES__PAGE_SIZE": "1_000",
        "NODECOST_CACHE__ENABLED": "False",
        "NODECOST_PRICING__OFFLINE__ENABLED": "yes",
        "NODECOST_GCP__CATALOG__TTL_SECONDS": "3600.5",
        "NODECOST_GCP__CATALOG__RETRIES": "2",
        "NODECOST_PRICING__DISCOUNTS__AWS": "0.1",
        "NODECOST_PRICING__PRECEDENCE": "custom,offline",
        "NODECOST_AWS__CUR__TAGS": "team, 42",
        "NODECOST_GCP__BIGQUERY__SPEND_BASED_CUD_DISCOUNT": "0.2",
    }
    config = load_config(None, env=env)
    assert config.kubernetes.page_size == 1000
    assert config.cache.enabled is False and config.pricing.offline.enabled is True
    catalog = config.sources["gcp.catalog"]
    assert (catalog.ttl_seconds, catalog.retries) == (3600.5, 2)  # type: ignore[attr-defined]
    assert config.pricing.discounts.aws == Decimal("0.1")
    assert config.pricing.precedence == ("custom", "offline")
    assert config.sources["aws.cur"].tags == ("team", "42")  # type: ignore[attr-defined]
    assert config.sources["gcp.bigquery"].spend_based_cud_discount == 0.2  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "raw", "problem"),
    [
        ("NODECOST_KUBERNETES__PAGE_SIZE", "many", "whole number"),
        ("NODECOST_CACHE__ENABLED", "1", "true or false"),
        ("NODECOST_GCP__CATALOG__TTL_SECONDS", "soon", "must be a number"),
    ],
)
def test_a_bad_typed_environment_value_names_the_key(name: str, raw: str, problem: str) -> None:
    key = name.removeprefix("NODECOST_").lower().replace("__", ".")
    with pytest.raises(ConfigError, match=rf"^{key}: .*{problem}"):
        load_config(None, env={name: raw})


@pytest.mark.parametrize("bad", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize(
    "key",
    [
        "pricing.discounts.aws",
        "pricing.split.gpu",
        "pricing.custom.reload_interval_seconds",
        "gcp.catalog.ttl_seconds",
        "aws.cur.settle_hours",
        "gcp.bigquery.spend_based_cud_discount",
        "azure.retail.backoff_max_seconds",
    ],
)
def test_non_finite_floats_are_rejected_naming_the_key(tmp_path: Path, key: str, bad: str) -> None:
    *parents, leaf = key.split(".")
    text = "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(parents)) + f"{'  ' * len(parents)}{leaf}: {bad}\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    assert caught.value.key == key
    assert "finite" in str(caught.value)


@pytest.mark.parametrize("raw", ["nan", "inf", "-Infinity"])
def test_non_finite_floats_from_the_environment_are_rejected(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"^aws\.pricing\.timeout_seconds: .*finite"):
        load_config(None, env={"NODECOST_AWS__PRICING__TIMEOUT_SECONDS": raw})


def test_demo_listens_on_this_host_only_unless_an_address_is_given(tmp_path: Path) -> None:
    assert load_config(None, env={}).web.listen_address == ":9798"  # the container's default is unchanged
    assert load_config(None, env={}, overrides={"demo": True}).web.listen_address == "127.0.0.1:9798"
    assert load_config(write(tmp_path, "demo: true\n"), env={}).web.listen_address == "127.0.0.1:9798"
    given = {
        "flag": load_config(None, env={}, overrides={"demo": True, "web.listen_address": ":9798"}),
        "env": load_config(None, env={"NODECOST_WEB__LISTEN_ADDRESS": ":9798"}, overrides={"demo": True}),
        "file": load_config(write(tmp_path, "web:\n  listen_address: ':9798'\n"), env={}, overrides={"demo": True}),
    }
    for where, config in given.items():
        assert config.demo, where
        assert config.web.listen_address == ":9798", where


# A commented-out setting in an example: `<indent># <key>: <value>`, the key in lower snake case.
COMMENTED_SETTING = re.compile(r"^(\s*)# ([a-z][a-z0-9_]*:(?: .*)?)$", re.MULTILINE)

# Keys an example sets to something else than the default on purpose: they show what to set.
EXAMPLE_VALUES = {
    "kubernetes.spot_labels": "each cloud's example lists that cloud's labels only",
    "pricing.custom.file": "onprem.yaml points at the table it prices with",
    "aws.pricing.enabled": "the cloud's example turns its price lists on",
    "aws.spot.enabled": "as above",
    "azure.retail.enabled": "as above",
    "gcp.catalog.enabled": "as above",
    "gcp.catalog.timeout_seconds": "gcp.yaml raises it to 60 and says the default (30) beside it",
    "aws.cur.database": "placeholders to replace; they must be set when the source is enabled",
    "aws.cur.table": "as above",
    "azure.cost_management.scope": "as above",
    "gcp.bigquery.project": "as above",
    "gcp.bigquery.dataset": "as above",
    "gcp.bigquery.table": "as above",
    "aws.cur.tags": "an example of the allowlist",
    "gcp.bigquery.tags": "as above",
}


def _settings_defaults() -> dict[str, object]:
    """Every key the loader reads, dotted, with its default: the core dataclasses and each source's."""
    out: dict[str, object] = {}

    def walk(cls: type, prefix: str) -> None:
        for field in dataclasses.fields(cls):
            if field.name in ("sources", "clouds"):
                continue
            factory = field.default_factory
            default = field.default if factory is dataclasses.MISSING else factory()
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{prefix}{field.name}.")
            else:
                out[prefix + field.name] = default

    walk(Config, "")
    for key, settings_type in sections().items():
        defaults = settings_type()
        for field in dataclasses.fields(settings_type):
            out[f"{key}.{field.name}"] = getattr(defaults, field.name)
    for cloud, shared_type in cloud_sections().items():
        shared = shared_type()
        for field in dataclasses.fields(shared_type):
            out[f"{cloud}.{field.name}"] = getattr(shared, field.name)
    return out


def _uncommented(path: Path) -> dict[str, object]:
    tree = yaml.safe_load(COMMENTED_SETTING.sub(r"\1\2", path.read_text(encoding="utf-8")))
    assert isinstance(tree, dict)
    return tree


def _at(tree: object, dotted: str) -> tuple[bool, object]:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False, None
        tree = tree[part]
    return True, tree


def _same(value: object, default: object) -> bool:
    if isinstance(default, tuple):
        return isinstance(value, list) and tuple(value) == default
    if isinstance(default, (int, float, Decimal)) and not isinstance(default, bool):
        return not isinstance(value, bool) and isinstance(value, (int, float)) and Decimal(str(value)) == Decimal(str(default))
    return value == default


@pytest.mark.parametrize("example", CONFIG_EXAMPLES, ids=lambda p: p.name)
def test_examples_with_their_commented_settings_uncommented_are_valid(example: Path, tmp_path: Path) -> None:
    uncommented = tmp_path / example.name
    uncommented.write_text(yaml.safe_dump(_uncommented(example)))
    table = str(ROOT / "config" / "custom-prices.example.yaml")
    load_config(str(uncommented), env={"NODECOST_PRICING__CUSTOM__FILE": table})


def test_every_config_key_is_in_an_example_with_its_default() -> None:
    trees = {path.name: _uncommented(path) for path in CONFIG_EXAMPLES}
    defaults = _settings_defaults()
    assert "aws.cur.settle_hours" in defaults and "kubernetes.page_size" in defaults  # the walk sees both
    assert set(EXAMPLE_VALUES) <= set(defaults), "EXAMPLE_VALUES names a key the code does not read"
    problems = []
    for dotted, default in defaults.items():
        shown_in = {name: value for name, tree in trees.items() for found, value in [_at(tree, dotted)] if found}
        if not shown_in:
            problems.append(f"{dotted}: in no example under config/ (default {default!r})")
        elif dotted not in EXAMPLE_VALUES and not any(_same(v, default) for v in shown_in.values()):
            problems.append(f"{dotted}: shown as {shown_in}, never with its default {default!r}")
    assert not problems, "\n".join(problems)
