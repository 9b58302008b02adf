"""docs/adding-a-source.md stays true to the code: every name its examples import from the exporter or the
test helpers exists, and the API it describes has the parameters and methods it names."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

from exporter.pricing.sources.billing import BillingSource
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.registry import register
from exporter.pricing.sources.shelf import ShelfSource

DOC = Path(__file__).resolve().parents[1] / "docs" / "adding-a-source.md"
HYPOTHETICAL = ("exporter.pricing.sources.oci", "exporter.config.sources.oci", "fakes.oci_api")  # what the walkthrough adds


def _imports() -> list[tuple[str, str]]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert blocks
    found = []
    for block in blocks:
        for statement in ast.walk(ast.parse(block)):
            if isinstance(statement, ast.ImportFrom) and statement.module:
                found += [(statement.module, alias.name) for alias in statement.names]
    return found


def test_every_imported_name_exists() -> None:
    checked = 0
    for module, name in _imports():
        if module.startswith(HYPOTHETICAL) or not module.startswith(("exporter", "tests")):
            continue
        assert hasattr(importlib.import_module(module), name), f"{module}.{name}"
        checked += 1
    assert checked >= 10


def test_the_api_it_describes() -> None:
    assert list(inspect.signature(register).parameters) == ["key", "settings", "extra", "sdk", "rank"]
    assert hasattr(SourceContext, "fetcher")
    assert {"key", "fetch"} <= ShelfSource.__abstractmethods__
    assert {"resource", "query", "where"} <= BillingSource.__abstractmethods__
