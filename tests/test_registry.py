"""The source registry: discovery is SDK-free, every registered source is documented and has a config
example (and every documented one is registered), a missing SDK is a config error with the fix, and the
one Retry-After parser."""

from __future__ import annotations

import email.utils
import re
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from exporter.config import load_config
from exporter.config.sections import sections
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import parse_retry_after
from exporter.pricing.sources.registry import SourceEntry, entries, registered

ROOT = Path(__file__).resolve().parents[1]
SDK_PREFIXES = ("boto3", "botocore", "google", "azure", "requests")

DISCOVERY_PROBE = f"""
import sys
from exporter.pricing.sources.registry import entries
assert entries()
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in {SDK_PREFIXES!r})))
"""


@pytest.mark.slow  # a Python process
def test_discovery_imports_no_cloud_sdk() -> None:
    result = subprocess.run([sys.executable, "-c", DISCOVERY_PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_registered_sources_build_in_precedence_order() -> None:
    keys = [entry.key for entry in entries()]
    assert keys.index("aws.spot") < keys.index("aws.pricing")  # a spot node takes its spot price first
    kinds = [entry.kind for entry in entries()]
    assert kinds == sorted(kinds)  # billing before shelf
    assert {entry.name for entry in entries()} >= {"aws_cur", "gcp_catalog", "azure_retail"}


def test_every_extra_is_a_pyproject_extra_and_every_sdk_is_installed_with_it() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for entry in entries():
        assert entry.extra is None or entry.extra in extras, entry.key
        assert entry.missing_sdk() is None, entry.key  # the suite runs with --all-extras
        assert (entry.extra is None) == (not entry.sdk), entry.key


def _documented() -> dict[str, tuple[str, str, str]]:
    """Rows of docs/pricing.md's integrations table: integration → (config key, kind, extra)."""
    text = (ROOT / "docs" / "pricing.md").read_text()
    section = text.split("## Integrations", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| `([\w.]+)` \| (\w+) \| `?(\w+)`? \|$", section, re.MULTILINE)
    return {name: (key, kind, extra) for name, key, kind, extra in rows}


def test_docs_list_exactly_the_registered_sources() -> None:
    documented = _documented()
    registered_rows = {e.name: (e.key, e.kind, e.extra or "none") for e in entries()}
    assert documented == registered_rows


@pytest.mark.parametrize("entry", entries(), ids=lambda e: e.key)
def test_every_registered_source_has_a_config_example(entry: SourceEntry) -> None:
    def has(tree: object, parts: list[str]) -> bool:
        return not parts or (isinstance(tree, dict) and has(tree.get(parts[0]), parts[1:]))

    examples = [yaml.safe_load(path.read_text()) for path in sorted((ROOT / "config").glob("*.yaml"))]
    assert any(has(example, entry.key.split(".")) for example in examples), entry.key


MISSING_SDK_PROBE = """
import sys
sys.modules["boto3"] = None  # as if the aws extra were not installed
from exporter.app import App
from exporter.config import ConfigError, load_config
try:
    App(load_config(None, env={"NODECOST_AWS__CUR__ENABLED": "true", "NODECOST_AWS__CUR__DATABASE": "cur",
                               "NODECOST_AWS__CUR__TABLE": "data"}, overrides={"demo": True}))
except ConfigError as err:
    print(err)
"""


@pytest.mark.slow  # a Python process
def test_an_enabled_source_without_its_sdk_names_the_key_the_extra_and_the_command() -> None:
    result = subprocess.run([sys.executable, "-c", MISSING_SDK_PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "aws.cur.enabled: needs the 'aws' extra, which is not installed (boto3 is missing): "
        "run `python3 scripts/uv.py run --frozen --extra aws node-cost-exporter <arguments>` in a checkout, or `pip install 'node-cost-exporter[aws]'` first"
    )


def test_a_registered_source_builds_from_its_config_section() -> None:
    config = load_config(None, env={"NODECOST_AZURE__RETAIL__ENABLED": "true"})
    entry = registered("azure.retail")
    source = entry.build(config.sources["azure.retail"], SourceContext())
    assert (source.name, source.kind) == ("azure_retail", "shelf")


NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),  # never negative
        (email.utils.format_datetime(datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC), usegmt=True), 30.0),
        ("Sun, 01 Mar 2026 11:00:00 GMT", 0.0),  # a date in the past: now
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None) -> None:
    assert parse_retry_after(value, NOW) == seconds


def test_every_config_section_has_exactly_its_registered_source() -> None:
    """A settings type in exporter/config/sources/ without a source (or the other way round) would be a
    config key that does nothing, or a source nobody can enable."""
    assert {entry.key: entry.settings for entry in entries()} == dict(sections())


@pytest.mark.slow  # a Python process
def test_every_section_is_known_whichever_cloud_was_imported_first() -> None:
    """Discovery runs once, whatever a caller imported before (here: one cloud's settings module alone)."""
    probe = (
        "import exporter.config.sources.gcp\n"
        "from exporter.config.sections import sections\n"
        "print(','.join(sections()))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert {"aws.cur", "azure.retail", "gcp.catalog"} <= set(result.stdout.strip().split(","))
