"""ruff and mypy (strict on exporter/) are part of the suite, so the README's one test command covers them."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow  # runs ruff and mypy

ROOT = Path(__file__).resolve().parents[1]
RUFF_TREES = ("exporter", "tests", "bench", "fakes")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", *RUFF_TREES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_pre_commit_runs_the_same_checks() -> None:
    """.pre-commit-config.yaml runs ruff on the trees checked here and mypy as pyproject configures it."""
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    hooks = {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}
    assert "ruff check" in hooks["ruff"]["entry"]
    trees = re.fullmatch(r"\^\((.+)\)/", hooks["ruff"]["files"])
    assert trees is not None and trees[1].split("|") == list(RUFF_TREES)
    assert hooks["mypy"]["entry"].endswith(" mypy") and hooks["mypy"]["pass_filenames"] is False
