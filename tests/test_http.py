"""The whole exporter in demo mode, served over real HTTP and read as Prometheus would."""

from __future__ import annotations

import gzip
import logging
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from exporter.app import App
from exporter.config import load_config
from exporter.http import ExporterServer, _write_all, serve
from exporter.logs import _Formatter

PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@dataclass
class Running:
    app: App
    server: ExporterServer
    url: str


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def demo() -> Iterator[Running]:
    app = App(load_config(None, env={}, overrides={"demo": True}))
    server = serve(app, "127.0.0.1", 0)
    stop = threading.Event()
    running = Running(app, server, f"http://127.0.0.1:{server.server_address[1]}")
    app.start(stop)
    wait_until(app.ready)
    yield running
    stop.set()
    server.shutdown()


def test_not_ready_until_nodes_are_listed_and_priced() -> None:
    app = App(load_config(None, env={}, overrides={"demo": True}))
    server = serve(app, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        status, _, body = get(url + "/readyz")
        assert (status, body) == (503, b"not ready: waiting for nodes or prices\n")
        _, _, metrics = get(url + "/metrics")
        assert b"nodecost_ready 0.0" in metrics
        stop = threading.Event()
        app.start(stop)
        wait_until(lambda: get(url + "/readyz")[0] == 200)
        assert get(url + "/healthz")[0] == 200
        stop.set()
    finally:
        server.shutdown()


def test_demo_prices_nodes_of_all_three_clouds_from_the_bundled_table(demo: Running) -> None:
    status, headers, body = get(demo.url + "/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()
    for provider in ("aws", "gcp", "azure"):
        assert f'provider="{provider}"' in text
    m5 = 'nodecost_node_hourly_cost{node="ip-10-0-12-87.ec2.internal",source="offline",price_basis="on_demand",currency="USD"}'
    assert m5 in text
    # the on-prem node has no providerID and no table prices it: unpriced, not zero
    assert 'nodecost_node_unpriced{node="rack3-worker-07",reason="no_provider_id"} 1.0' in text
    assert 'nodecost_node_hourly_cost{node="rack3-worker-07"' not in text
    assert 'nodecost_nodes{source="unpriced"} 1.0' in text
    assert 'nodecost_integration_up{integration="nodes_file"} 1.0' in text
    assert "nodecost_ready 1.0" in text
    assert 'nodecost_build_info{version="0.1.0",python_version="' in text


def test_openmetrics_is_negotiated(demo: Running) -> None:
    status, headers, body = get(demo.url + "/metrics", {"Accept": PROMETHEUS_ACCEPT})
    assert status == 200
    assert headers["Content-Type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1
    assert b"# TYPE nodecost_node info\n" in body
    assert b"# TYPE nodecost_build info\n" in body


def test_gzip_is_one_stream_equal_to_the_plain_body(demo: Running) -> None:
    _, plain_headers, plain = get(demo.url + "/metrics")
    status, headers, body = get(demo.url + "/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain_headers
    unzipped = gzip.decompress(body)
    node_section = plain[: plain.index(b"# HELP nodecost_integration_up")]
    assert unzipped.startswith(node_section)
    assert b"nodecost_integration_up" in unzipped[len(node_section) :]


def test_promtool_finds_nothing_to_lint(demo: Running, promtool: str) -> None:
    _, _, body = get(demo.url + "/metrics")
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b"" and result.stderr.strip() == b""


def test_landing_page_and_unknown_paths(demo: Running) -> None:
    status, headers, body = get(demo.url + "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<a href="/metrics">Metrics</a>' in body and b"nodes_file" in body
    assert get(demo.url + "/nope")[0] == 404


def test_a_node_change_is_served_on_the_next_scrape(demo: Running) -> None:
    first = get(demo.url + "/metrics")[2]
    node = next(n for n in demo.app.nodes() if n.name == "rack3-worker-07")
    demo.app.delete(node.uid)
    second = get(demo.url + "/metrics")[2]
    assert b"rack3-worker-07" in first and b"rack3-worker-07" not in second
    assert b'nodecost_nodes{source="unpriced"} 0.0' in second


def test_a_zero_weight_for_gzip_is_honoured(demo: Running) -> None:
    for refused in ("gzip;q=0", "*;q=0", "gzip;q=0, deflate"):
        status, headers, body = get(demo.url + "/metrics", {"Accept-Encoding": refused})
        assert status == 200 and "Content-Encoding" not in headers and body.startswith(b"# HELP")
    _, headers, body = get(demo.url + "/metrics", {"Accept-Encoding": "gzip;q=0.5"})
    assert headers["Content-Encoding"] == "gzip" and gzip.decompress(body).startswith(b"# HELP")
    assert get(demo.url + "/metrics", {"Accept-Encoding": "identity;q=0"})[0] == 200


def test_a_handler_error_is_one_log_line_and_a_500(
    demo: Running, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    def broken(**_: object) -> list[bytes]:
        raise RuntimeError("store broke")

    monkeypatch.setattr(demo.app.store, "body", broken)
    with caplog.at_level(logging.ERROR, logger="exporter.http"):
        status, _, body = get(demo.url + "/metrics")
    assert (status, body) == (500, b"internal server error\n")
    [record] = [r for r in caplog.records if r.name == "exporter.http"]
    line = _Formatter(as_json=False).format(record)
    assert "\n" not in line and "store broke" in line
    assert "Traceback" not in capfd.readouterr().err  # not socketserver's handle_error on stderr
    monkeypatch.undo()
    assert get(demo.url + "/metrics")[0] == 200


def test_idle_and_slow_connections_are_closed_and_do_not_hold_the_workers() -> None:
    app = App(load_config(None, env={}, overrides={"demo": True}))
    server = ExporterServer(("127.0.0.1", 0), app, workers=2, idle_timeout=0.5)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    port = server.server_address[1]
    try:
        idle = socket.create_connection(("127.0.0.1", port), timeout=5)
        # a client dribbling its headers slower than the timeout allows, byte by byte
        slow = socket.create_connection(("127.0.0.1", port), timeout=5)
        started = time.monotonic()
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        assert time.monotonic() - started < 3
        stalled = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(10)]
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200  # two workers, twelve idle connections
        assert idle.recv(1) == b""
        assert slow.recv(1) == b""
        for sock in (idle, slow, *stalled):
            sock.close()
    finally:
        server.shutdown()
        server.server_close()


def test_pipelined_requests_are_answered_in_order(demo: Running) -> None:
    with socket.create_connection(("127.0.0.1", demo.server.server_address[1]), timeout=5) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert re.findall(rb"HTTP/1\.1 [^\r]*", data) == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 200 OK",
    ]
    assert data.count(b"ok\n") == 2 and b"not found" not in data


def test_many_chunks_reach_a_slow_reader_whole_and_in_order() -> None:
    """`_write_all` gathers chunks into sendmsg calls; a full socket buffer cuts a call anywhere, even in
    the middle of a chunk, and the rest must follow in order."""
    chunks = [bytes([i % 251]) * (1 + i * 37 % 20_000) for i in range(3_000)]  # ~30 MB, many more than IOV_MAX
    writer, reader = socket.socketpair()
    writer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    writer.settimeout(10)
    received = bytearray()

    def read_slowly() -> None:
        while data := reader.recv(7_000):
            received.extend(data)

    thread = threading.Thread(target=read_slowly)
    thread.start()
    try:
        _write_all(writer, chunks)
    finally:
        writer.close()
        thread.join(timeout=30)
        reader.close()
    assert bytes(received) == b"".join(chunks)


def _exchange(port: int, request: bytes) -> bytes:
    """Send a raw request, read until the server closes the connection or 2 s of quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return data


class _Reference(BaseHTTPRequestHandler):
    """http.server as it parses requests, answering every GET with 200."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _answer(port: int, request: bytes) -> tuple[bytes, bool]:
    """The response's status code (b"" when the server wrote none, as to an HTTP/0.9-style request line)
    and whether the server closed the connection within 1.5 s."""
    started = time.monotonic()
    data = _exchange(port, request)
    status = data.split(b" ", 2)[1] if data.startswith(b"HTTP/") else b""
    return status, time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # kept alive
        b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n",  # HTTP/1.0: closed after the answer
        b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nAccept-Encoding: identity,\r\n gzip\r\nConnection: close\r\n\r\n",  # folded
        b"GET //healthz HTTP/1.1\r\nConnection: close\r\n\r\n",  # reduced to one slash (gh-87389)
        b"GET /healthz HTTP/2.0\r\n\r\n",
        b"GET /healthz HTTP/1.x\r\n\r\n",
        b"GET /healthz HTTP/1.1 extra\r\n\r\n",
        b"POST /healthz\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n",
    ],
)
def test_request_lines_and_headers_are_answered_as_http_server_answers_them(
    demo: Running, request_bytes: bytes
) -> None:
    """Our header parsing (`_Handler.parse_request`, without the email parser) keeps http.server's answers:
    the same status (or none) for each odd request, and the same keep-alive decision."""
    reference = ThreadingHTTPServer(("127.0.0.1", 0), _Reference)
    threading.Thread(target=reference.serve_forever, daemon=True).start()
    try:
        expected = _answer(reference.server_address[1], request_bytes)
    finally:
        reference.shutdown()
        reference.server_close()
    assert _answer(demo.server.server_address[1], request_bytes) == expected


def test_a_header_line_without_a_colon_is_a_bad_request(demo: Running) -> None:
    """http.server's email parser would take it and what follows as a body; refusing it is plainer."""
    status, closed = _answer(demo.server.server_address[1], b"GET /healthz HTTP/1.1\r\nno colon\r\n\r\n")
    assert (status, closed) == (b"400", True)
