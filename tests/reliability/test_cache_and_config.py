"""The real exporter process: an unusable cache path, secrets, environment text, non-finite floats and a
custom table that is not UTF-8 (docs/operations.md)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from exporter.app import demo_nodes_path
from tests.reliability.running import free_port, start
from tests.test_cache import unwritable_dir

pytestmark = pytest.mark.slow  # starts the exporter as a process

SECRET = "s3cr3t-Value-4711"


def exporter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the exporter to its exit: here, a refusal to start."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def serve_and_scrape(*args: str, env: dict[str, str] | None = None) -> tuple[bytes, str]:
    """Start the exporter on the demo nodes file, wait for /readyz, scrape /metrics, stop it: (body, stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        running = start([f"--nodes-file={demo_nodes_path()}", *args], Path(tmp) / "stderr.log", env)
        try:
            running.wait_listening()
            running.wait_ready()
            with urllib.request.urlopen(f"{running.url}/metrics", timeout=5) as response:
                body = response.read()
        finally:
            running.signal(signal.SIGTERM)
            stderr = running.finish()
    assert running.proc.returncode == 0, stderr
    return body, stderr


@pytest.mark.parametrize("layout", ["read_only_dir", "file_as_dir"])
def test_an_unusable_cache_path_serves_from_memory_and_says_why_once(tmp_path: Path, layout: str) -> None:
    if layout == "file_as_dir":
        (tmp_path / "blocker").write_text("not a directory")
        path = tmp_path / "blocker" / "cache.sqlite"
    else:
        path = unwritable_dir(tmp_path) / "cache.sqlite"
    body, stderr = serve_and_scrape(f"--cache.path={path}")
    assert b"nodecost_cache_persistent 0.0" in body
    assert b'nodecost_integration_up{integration="cache"} 0.0' in body
    assert b'nodecost_nodes{source="offline"} 11.0' in body
    why = [line for line in stderr.splitlines() if "in-memory cache" in line]
    assert len(why) == 1, stderr
    assert str(path.parent) in why[0]
    assert not path.exists()


def test_a_usable_cache_path_is_persistent(tmp_path: Path) -> None:
    body, _ = serve_and_scrape(f"--cache.path={tmp_path / 'cache.sqlite'}")
    assert b"nodecost_cache_persistent 1.0" in body


@pytest.mark.parametrize(
    ("text", "env"),
    [
        (f"gcp:\n  catalog:\n    api_key: [{SECRET}]\n", {}),
        (f'gcp:\n  catalog:\n    api_key: "{SECRET}\n', {}),
        ("gcp:\n  catalog:\n    enabled: true\n", {"NODECOST_GCP__CATALOG__API_KEY__X": SECRET}),
    ],
    ids=["list", "unterminated", "env-under-a-secret"],
)
def test_a_secret_never_reaches_stderr(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    result = exporter(f"--config.file={config}", env=env)
    assert result.returncode == 2
    assert "invalid configuration" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_environment_text_stays_text_and_typed_keys_still_parse(tmp_path: Path) -> None:
    """YAML read `no` as false and `123_456` as 123456: the table name stopped the start (exit 2)."""
    cache = tmp_path / "0123"
    env = {
        "NODECOST_AWS__CUR__TABLE": "no",
        "NODECOST_GCP__BIGQUERY__PROJECT": "123_456",
        "NODECOST_CACHE__PATH": str(cache),
        "NODECOST_CACHE__ENABLED": "off",  # typed bool: still parsed
    }
    body, stderr = serve_and_scrape(env=env)
    assert b"nodecost_cache_persistent 0.0" in body, stderr
    assert not cache.exists()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("aws:\n  pricing:\n    ttl_seconds: .inf\n", "aws.pricing.ttl_seconds"),
        ("pricing:\n  custom:\n    reload_interval_seconds: .nan\n", "pricing.custom.reload_interval_seconds"),
        ("pricing:\n  split:\n    gpu: .nan\n", "pricing.split.gpu"),
        ("pricing:\n  discounts:\n    gcp: -.inf\n", "pricing.discounts.gcp"),
    ],
)
def test_a_non_finite_float_stops_the_start_naming_the_key(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text)
    result = exporter(f"--config.file={config}", "--demo", f"--web.listen-address=127.0.0.1:{free_port()}")
    assert result.returncode == 2
    assert f"{key}: must be a finite number" in result.stderr


def test_a_custom_table_that_is_not_utf8_stops_the_start_naming_file_and_line(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    table.write_bytes("prices:\n  # Preise f\xfcr on-prem\n  - {instance_type: m5.large, hourly: '0.1'}\n".encode("latin-1"))
    result = exporter(
        f"--pricing.custom-file={table}", "--demo", f"--web.listen-address=127.0.0.1:{free_port()}"
    )
    assert result.returncode == 2, result.stderr
    assert f"pricing.custom.file: {table}: line 2: not UTF-8" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_reload_that_is_not_utf8_fails_the_integration_and_keeps_the_table(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    table.write_text("prices:\n  - {provider: aws, hourly: '0.5'}\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"pricing:\n  custom:\n    file: {table}\n    reload_interval_seconds: 0.2\n")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={config}",
            f"--nodes-file={demo_nodes_path()}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--no-cache",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    body = b""
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and b'nodecost_nodes{source="custom"}' not in body:
            time.sleep(0.1)
            body = scrape(port)
        table.write_bytes("prices:\n  - {provider: aws, hourly: '0.4'} # pr\xe9\n".encode("latin-1"))
        os.utime(table, (1, 1))
        failing = b'nodecost_integration_failure_info{integration="custom_prices",reason="bad_response"} 1.0'
        while time.monotonic() < deadline and failing not in body:
            time.sleep(0.1)
            body = scrape(port)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert failing in body, stderr
    assert b'nodecost_integration_up{integration="custom_prices"} 0.0' in body
    assert re.search(rb'nodecost_node_hourly_cost\{[^}]*source="custom"[^}]*\} 0\.5\n', body)  # last good table
    assert f"{table}: line 2: not UTF-8" in stderr and "keeping the previous table" in stderr
    assert "Traceback" not in stderr


def scrape(port: int) -> bytes:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return bytes(response.read())
    except OSError:
        return b""
