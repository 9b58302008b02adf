"""The README's first lines are the contract with users and CI; keep them and .ci/run in step."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = ROOT.joinpath("README.md").read_text().splitlines()
    assert lines[0] == "```sh"
    return lines[1 : lines.index("```", 1)]


def test_readme_starts_with_the_demo_and_the_test_command() -> None:
    demo, tests = readme_commands()
    assert demo.endswith("node-cost-exporter --demo")
    assert tests.endswith("pytest")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, tests = readme_commands()
    ci = ROOT.joinpath(".ci", "run").read_text().splitlines()
    assert ci[-1] == tests
