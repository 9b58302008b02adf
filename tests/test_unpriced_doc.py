"""docs/pricing.md, "Why is my node unpriced?", held to the engine: its table lists every `reason` the code
can put on nodecost_node_unpriced, and no other; docs/operations.md's failure-mode row names the same set."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

from exporter.pricing.engine import PricingEngine

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Why is my node unpriced?"


def reasons_in_code() -> list[str]:
    """The first element of every `return "<reason>", detail` of PricingEngine._unpriced_reason."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(PricingEngine._unpriced_reason)))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            first = node.value.elts[0]
            assert isinstance(first, ast.Constant) and isinstance(first.value, str), ast.dump(node)
            found.append((node.lineno, first.value))
    return [reason for _, reason in sorted(found)]  # in the order the engine tries them


def reasons_in_table() -> list[str]:
    text = (ROOT / "docs" / "pricing.md").read_text()
    section = text[text.index(SECTION) :]
    end = section.find("\n## ", 1)
    section = section if end < 0 else section[:end]
    body = section[section.index("\n|---") + 1 :]  # the rows after the header
    return re.findall(r"^\| `([a-z_]+)` \|", body, flags=re.MULTILINE)


def test_the_code_produces_a_closed_set_of_reasons() -> None:
    code = reasons_in_code()
    assert len(code) == len(set(code)) >= 5, code


def test_the_unpriced_table_lists_every_reason_the_code_can_produce_in_order() -> None:
    assert reasons_in_table() == reasons_in_code()  # in the order the engine tries them, as the doc says


def test_the_failure_mode_row_of_operations_names_the_same_reasons() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    (row,) = [line for line in text.splitlines() if line.startswith("| a node no source can price")]
    assert set(re.findall(r'"([a-z_]+)"', row)) == set(reasons_in_code())
