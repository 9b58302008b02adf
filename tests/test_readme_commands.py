"""Every command in the README's fenced blocks, run as written in a copy of the checkout (issue 13, item 2).

The commands run in order in one fresh checkout with a fresh HOME, as a newcomer would type them, through
bash, once with Debian's externally managed python3 and once with a venv's first on PATH and no uv (the first
command fetches it). What a command reaches outside the checkout is faked at the wire: a Kubernetes API
server behind the user's kubeconfig, and AWS's price list and EC2 behind the endpoint settings (environment variables, so each command line stays as written). Only the two first
lines are run elsewhere: the demo line by test_setup.py, and the test line by .ci/run, verbatim. The image
commands need a Docker engine, which CI and this machine lack: without one, only the release version line
runs, and `docker push` names a placeholder registry, so it is checked against the build line, not run.
"""

from __future__ import annotations

import csv
import functools
import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fakes.aws_api import Ec2Api, PricingApi, ec2_product
from fakes.kube_api import FakeKubeAPI, make_node, self_signed_cert, write_kubeconfig
from tests.checkout import copy_checkout, python_on_path, readme_blocks, scrape, serving, user_env

pytestmark = pytest.mark.slow  # real processes: bash, kubectl, uv, the exporter, the benchmark

FIRST_LINES, RUNNING_IT, IMAGE_BUILDS, RELEASE, BENCHMARKS = readme_blocks()
NODES = [make_node(f"ip-10-0-1-{i}.ec2.internal") for i in range(6)] + [
    make_node(f"ip-10-0-2-{i}.eu-west-1.compute.internal", instance_type="m6i.xlarge", zone="eu-west-1a", spot=True)
    for i in range(3)
]
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class Shell:
    """A newcomer's shell in a fresh checkout, whose kubeconfig and AWS endpoints lead to the fakes."""

    checkout: Path
    env: dict[str, str]
    logs: Path

    def run(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", command], cwd=self.checkout, env=self.env, capture_output=True,
                              text=True, timeout=timeout)


@pytest.fixture(scope="module", params=["system-pep668", "venv"])
def shell(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shell]:
    """A fresh checkout and HOME, and a PATH whose python3 is Debian's PEP 668 one or a venv's, with no uv:
    the first command fetches it, as on a new machine."""
    tmp = tmp_path_factory.mktemp(f"readme-{request.param}")
    bin_dir = python_on_path(request.param, tmp)
    cert, key = self_signed_cert(tmp)
    with FakeKubeAPI(token="readme-token", tls=(cert, key)) as kube, PricingApi() as pricing, Ec2Api() as ec2:
        kube.load(NODES)
        for region, itype, price in [("us-east-1", "m5.xlarge", "0.1920000000"), ("us-east-1", "m5.large", "0.0960000000"),
                                     ("us-east-1", "m6i.xlarge", "0.1920000000"), ("eu-west-1", "m5.large", "0.1070000000"),
                                     ("eu-west-1", "m6i.xlarge", "0.2140000000")]:
            pricing.add(ec2_product(region, itype, price))
        ec2.add("eu-west-1a", "m6i.xlarge", "0.0712000000", "2026-11-22T10:00:00.000Z")
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", kube.url, kube.token, ca_file=cert)
        none = str(tmp / "none")
        env = user_env(tmp / "home", [bin_dir], {
            **AWS_ENV, "AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none,
            "KUBECONFIG": str(kubeconfig),
            "NODECOST_AWS__PRICING__ENDPOINT_URL": pricing.url,
            "NODECOST_AWS__SPOT__ENDPOINT_URL": ec2.url,
            "NODECOST_CACHE__PATH": str(tmp / "cache.sqlite"),  # config/aws.yaml's /var/cache is the pod's
        })
        yield Shell(copy_checkout(tmp / "checkout"), env, tmp)


def _command(block: list[str], start: str) -> str:
    [command] = [c for c in block if c.startswith(start)]
    return command


def test_every_fenced_command_has_a_test() -> None:
    """A command added to the README without a test here fails this, naming it."""
    covered = {
        FIRST_LINES[0]: "test_setup.py runs it under the PEP 668 system python3, a venv's, and with uv on PATH",
        FIRST_LINES[1]: ".ci/run runs it verbatim (test_readme.py)",
        **dict.fromkeys(RUNNING_IT, "this module"),
        **dict.fromkeys(IMAGE_BUILDS, "this module, with a Docker engine"),
        **dict.fromkeys(RELEASE, "this module (docker lines with a Docker engine)"),
        **dict.fromkeys(BENCHMARKS, "this module"),
    }
    assert [c for c in FIRST_LINES if c.startswith("python3 scripts/uv.py run --frozen")] == FIRST_LINES
    assert [_command(RUNNING_IT, p) for p in ("kubectl get nodes", "python3 scripts/uv.py run --frozen node-cost-exporter --nodes-file",
                                              "python3 scripts/uv.py run --frozen --extra aws node-cost-exporter --config.file",
                                              "python3 scripts/uv.py run --frozen python -m exporter --help",
                                              "python3 scripts/uv.py run --frozen --extra aws node-cost-exporter snapshot")] == RUNNING_IT
    assert all(c.startswith("docker build ") for c in IMAGE_BUILDS)
    assert [c.split()[0] for c in RELEASE] == ["VERSION=$(sed", "docker", "docker"]
    assert BENCHMARKS == ["python3 scripts/uv.py run --frozen --all-extras python -m bench"]
    assert set(covered) == {c for block in readme_blocks() for c in block}


def test_a_saved_node_list_is_priced_offline(shell: Shell) -> None:
    saved = shell.run(_command(RUNNING_IT, "kubectl get nodes"))
    assert saved.returncode == 0, saved.stderr
    assert len(json.loads((shell.checkout / "nodes.json").read_text())["items"]) == len(NODES)

    with serving(_command(RUNNING_IT, "python3 scripts/uv.py run --frozen node-cost-exporter --nodes-file"),
                 shell.checkout, shell.env, shell.logs / "nodes-file.log") as url:
        text = scrape(url)
    info = [line for line in text.splitlines() if line.startswith("nodecost_node_info{")]
    assert len(info) == len(NODES)
    assert 'nodecost_nodes{source="offline"} 6' in text  # m5.xlarge in us-east-1 is in the bundled table,
    assert 'nodecost_nodes{source="unpriced"} 3' in text  # m6i.xlarge in eu-west-1 is not
    assert not (shell.checkout / "cache.sqlite").exists()  # --no-cache


def test_a_cloud_config_with_its_extra_prices_the_cluster_from_the_price_lists(shell: Shell) -> None:
    with serving(_command(RUNNING_IT, "python3 scripts/uv.py run --frozen --extra aws node-cost-exporter --config.file"),
                 shell.checkout, shell.env, shell.logs / "aws.log") as url:
        text = scrape(url)
    lines = text.splitlines()
    assert sum(line.startswith("nodecost_node_info{") for line in lines) == len(NODES)
    on_demand = [line for line in lines if line.startswith("nodecost_node_hourly_cost{") and 'price_basis="on_demand"' in line]
    spot = [line for line in lines if line.startswith("nodecost_node_hourly_cost{") and 'price_basis="spot"' in line]
    assert len(on_demand) == 6 and all(line.endswith(" 0.192") for line in on_demand), on_demand
    assert len(spot) == 3 and all(line.endswith(" 0.0712") for line in spot), spot


def test_the_module_form_prints_the_same_help_with_the_subcommands(shell: Shell) -> None:
    result = shell.run(_command(RUNNING_IT, "python3 scripts/uv.py run --frozen python -m exporter --help"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: node-cost-exporter")
    assert "snapshot" in result.stdout and "backfill" in result.stdout


def test_snapshot_writes_the_offline_table_from_the_price_list(shell: Shell) -> None:
    result = shell.run(_command(RUNNING_IT, "python3 scripts/uv.py run --frozen --extra aws node-cost-exporter snapshot"))
    assert result.returncode == 0, result.stderr
    with (shell.checkout / "offline_prices.csv").open() as table:
        rows = {(r["region"], r["instance_type"]): r["hourly"] for r in csv.DictReader(table)}
    assert rows == {("us-east-1", "m5.large"): "0.096", ("us-east-1", "m6i.xlarge"): "0.192",
                    ("eu-west-1", "m5.large"): "0.107", ("eu-west-1", "m6i.xlarge"): "0.214"}


@pytest.mark.parametrize("shell", ["venv"], indirect=True)  # minutes: once is enough
def test_the_benchmark_command_writes_its_report(shell: Shell) -> None:
    report = shell.checkout / "docs" / "performance.md"
    before = report.read_text()
    result = shell.run(BENCHMARKS[0], timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    after = report.read_text()
    assert after != before
    assert "## Summary" in after and "- **Command**: `python3 scripts/uv.py run --frozen --all-extras python -m bench`" in after


def test_the_release_version_line_reads_the_project_version(shell: Shell) -> None:
    result = shell.run(f'{RELEASE[0]} && printf %s "$VERSION"')
    assert result.returncode == 0, result.stderr
    pyproject = (shell.checkout / "pyproject.toml").read_text()
    assert result.stdout == re.search(r'^version = "(.+)"$', pyproject, re.M).group(1)  # type: ignore[union-attr]


def test_the_push_line_pushes_the_tag_the_build_line_made() -> None:
    built = re.search(r"-t (\S+) \.$", RELEASE[1])
    assert built is not None and RELEASE[2] == f"docker push {built.group(1)}"


@functools.cache
def docker_engine() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.parametrize("command", [*IMAGE_BUILDS, f"{RELEASE[0]} && {RELEASE[1]}"])
def test_the_image_builds(shell: Shell, command: str) -> None:
    if not docker_engine():
        pytest.skip("no Docker engine reachable (`docker info` fails)")
    subprocess.run(["git", "init", "-q"], cwd=shell.checkout, check=True)  # the release line reads HEAD
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "t", "--allow-empty"],
                   cwd=shell.checkout, check=True)
    result = shell.run(command, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
