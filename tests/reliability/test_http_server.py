"""The real exporter process as a Prometheus target under idle connections, HEAD and bad web flags."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.reliability.running import free_port

pytestmark = pytest.mark.slow  # starts the exporter as a process

MAX_THREADS = 64


@pytest.fixture
def exporter() -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", f"--web.listen-address=127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_a_thousand_idle_connections_neither_block_scrapes_nor_grow_threads(
    exporter: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = exporter
    idle = []
    try:
        for i in range(1_000):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 2:  # half send part of a request's headers and stall
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            idle.append(sock)
        for _ in range(10):
            started = time.monotonic()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                assert response.status == 200 and b"nodecost_ready 1.0" in response.read()
            assert time.monotonic() - started < 3
            assert threads(proc.pid) <= MAX_THREADS
        # the idle ones are closed by the server after its idle timeout
        time.sleep(7)
        for sock in idle[:2]:
            sock.settimeout(2)
            assert sock.recv(65536) == b""
    finally:
        for sock in idle:
            sock.close()


def test_head_answers_like_get_without_a_body(exporter: tuple[subprocess.Popen[str], int]) -> None:
    _, port = exporter
    for path in ("/metrics", "/", "/nope"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        get = conn.getresponse()
        get_body = get.read()
        conn.request("HEAD", path, headers={"Accept-Encoding": "gzip"})  # same kept-alive connection
        head = conn.getresponse()
        assert head.read() == b""
        assert head.status == get.status
        for name in ("Content-Type", "Content-Encoding"):
            assert head.getheader(name) == get.getheader(name), name
        # HEAD renders the body afresh to measure it, so the length is the real one, not a placeholder
        assert int(head.getheader("Content-Length") or 0) > 0
        if path == "/nope":  # the others' bodies change between requests (live gauges, integrations)
            assert head.getheader("Content-Length") == get.getheader("Content-Length") == str(len(get_body))
        conn.request("GET", "/healthz")  # the connection is still usable: no stray body was sent
        assert conn.getresponse().read() == b"ok\n"
        conn.close()


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/", "metrics"])
def test_a_telemetry_path_colliding_with_the_servers_own_is_refused(path: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "--demo", "--web.listen-address=127.0.0.1:0", f"--web.telemetry-path={path}"],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 2
    assert "web.telemetry_path" in result.stderr
