"""The README's first lines are the contract with users and CI; keep them and .ci/run in step."""

from tests.checkout import ROOT, readme_blocks


def test_readme_starts_with_the_demo_and_the_test_command() -> None:
    assert ROOT.joinpath("README.md").read_text().startswith("```sh\n")
    demo, tests = readme_blocks()[0]
    assert demo.endswith("node-cost-exporter --demo")
    assert tests.endswith("pytest")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, tests = readme_blocks()[0]
    ci = ROOT.joinpath(".ci", "run").read_text().splitlines()
    assert ci[-1] == tests
