"""The console script and `python -m exporter` start the real server and stop cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts the exporter as a process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "command", [["node-cost-exporter"], [sys.executable, "-m", "exporter"]], ids=["script", "module"]
)
def test_demo_serves_metrics_and_stops_on_sigterm(command: list[str]) -> None:
    if command[0] == "node-cost-exporter":
        script = shutil.which("node-cost-exporter", path=str(Path(sys.executable).parent))
        assert script, "console script not installed"
        command = [script]
    port = free_port()
    proc = subprocess.Popen(
        [*command, "--demo", f"--web.listen-address=127.0.0.1:{port}", "--log.format=json"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        body = b""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read()
        assert b'nodecost_nodes{source="offline"} 11.0' in body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert '"msg": "shutting down"' in stderr


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "--demo", f"--web.listen-address=127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_backfill_refuses_bad_days_and_a_config_without_billing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["backfill", "--from", "2024-06-31", "--to", "2024-07-01", "--out", "-"])
    assert exit_info.value.code == 2
    assert "'2024-06-31' is not a YYYY-MM-DD day" in capsys.readouterr().err
    args = ["--from", "2024-06-01", "--to", "2024-06-02", "--out", str(tmp_path / "x.om")]
    assert main(["backfill", "--cache.path", str(tmp_path / "c.sqlite"), *args]) == 2
    assert "enable aws.cur, gcp.bigquery or azure.cost_management" in capsys.readouterr().err
    assert not (tmp_path / "x.om").exists()


def _readme_flags() -> set[str]:
    """The flags in the first column of the README's flag table."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `--")]
    assert len(rows) >= 10, "the README's flag table was not found"
    return {flag for row in rows for flag in re.findall(r"`(--[a-z][a-z.-]*)`", row.split("|")[1])}


def _help(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", *args, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_lists_the_subcommands_and_exactly_the_readme_flags() -> None:
    text = _help()
    assert re.search(r"^  snapshot  write an offline price table", text, re.MULTILINE), text
    assert re.search(r"^  backfill  write reconciled hourly node costs", text, re.MULTILINE), text
    options = set(re.findall(r"^  (?:-\w, )?(--[a-z][a-z.-]*)", text, re.MULTILINE)) - {"--help"}
    assert options == _readme_flags()
    # Each subcommand's own help answers too (and names what it is).
    assert "offline price table" in " ".join(_help("snapshot").split())
    assert "OpenMetrics" in " ".join(_help("backfill").split())


def test_version_prints_the_package_version() -> None:
    from exporter import __version__

    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"node-cost-exporter {__version__}"


def _listening(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp{,6} write them) of sockets listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's /proc/net/tcp")
def test_demo_listens_on_loopback_only_by_default() -> None:
    port = 9798  # the default: --demo is given no address
    if _listening(port):
        pytest.skip(f"port {port} is in use on this machine")
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--log.format=json"], stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        while not _listening(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert _listening(port) == {"0100007F"}  # 127.0.0.1 only: not 0.0.0.0, not IPv6
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            assert response.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert '"msg": "listening on 127.0.0.1:9798"' in stderr


# Imported first by every Python process whose PYTHONPATH holds it: makes the modules named in
# BLOCK_MODULES (and their submodules) unimportable, as if their extra had not been installed.
BLOCKER = '''
import importlib.abc, os, sys

BLOCKED = [name for name in os.environ["BLOCK_MODULES"].split(",") if name]


class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Block())
'''


def _without(
    modules: str, tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The console script, run as if the SDK `modules` were not installed."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    script = shutil.which("node-cost-exporter", path=str(Path(sys.executable).parent))
    assert script, "console script not installed"
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(tmp_path), "BLOCK_MODULES": modules}
    return subprocess.run([script, *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)


def test_the_blocker_does_block(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "BLOCK_MODULES": "boto3"}
    probe = subprocess.run([sys.executable, "-c", "import boto3"], capture_output=True, text=True, env=env)
    assert probe.returncode == 1 and "No module named 'boto3'" in probe.stderr


@pytest.mark.parametrize(
    ("extra", "modules", "key", "missing"),
    [("aws", "boto3,botocore", "aws.pricing", "boto3"), ("gcp", "google", "gcp.catalog", "google.auth")],
)
def test_snapshot_without_its_extra_prints_the_command_to_run(
    tmp_path: Path, extra: str, modules: str, key: str, missing: str
) -> None:
    args = ["snapshot", "--provider", extra, "--regions", "us-east-1,eu-west-1", "--types", "m5.large"]
    result = _without(modules, tmp_path, *args, "--out", "offline prices.csv")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"node-cost-exporter snapshot: invalid configuration: {key}.enabled: needs the '{extra}' extra, "
        f"which is not installed ({missing} is missing): run `python3 scripts/uv.py run --frozen --extra {extra} node-cost-exporter "
        f"snapshot --provider {extra} --regions us-east-1,eu-west-1 --types m5.large --out 'offline prices.csv'` in a checkout, "
        f"or `pip install 'node-cost-exporter[{extra}]'` first"
    ]
    assert not (tmp_path / "offline prices.csv").exists()


def test_backfill_without_its_extra_prints_the_command_to_run(tmp_path: Path) -> None:
    config = tmp_path / "cur.yaml"
    config.write_text("aws:\n  cur:\n    enabled: true\n    database: cur\n    table: data\n")
    args = ["backfill", f"--config.file={config}", "--cache.path=c.sqlite", "--from=2024-06-01", "--to=2024-06-02"]
    result = _without("boto3,botocore", tmp_path, *args, "--out=-")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "node-cost-exporter backfill: invalid configuration: aws.cur.enabled: needs the 'aws' extra, which is "
        f"not installed (boto3 is missing): run `python3 scripts/uv.py run --frozen --extra aws node-cost-exporter {' '.join(args)} --out=-` in a checkout, "
        "or `pip install 'node-cost-exporter[aws]'` first"
    ]


def test_the_exporter_with_a_source_enabled_without_its_extra_prints_the_command_to_run(tmp_path: Path) -> None:
    args = ["--demo", "--log.format=json", "--web.listen-address=127.0.0.1:0"]
    result = _without("boto3,botocore", tmp_path, *args, env={"NODECOST_AWS__SPOT__ENABLED": "true"})
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert json.loads(result.stderr)["msg"] == (
        "invalid configuration: aws.spot.enabled: needs the 'aws' extra, which is not installed (boto3 is "
        f"missing): run `python3 scripts/uv.py run --frozen --extra aws node-cost-exporter {' '.join(args)}` in a checkout, "
        "or `pip install 'node-cost-exporter[aws]'` first"
    )
