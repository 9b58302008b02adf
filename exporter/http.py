"""HTTP: /metrics (content negotiation, gzip), /healthz, /readyz and a landing page at /.

Requests are served by a fixed pool of WORKERS threads. One loop thread accepts the connections, reads
what they send and hands a worker only a connection whose request headers have all arrived: an idle
keep-alive connection, or one dribbling its headers, costs a file descriptor, not a thread, and is closed
IDLE_TIMEOUT_SECONDS after it was opened or its last response was sent.
"""

from __future__ import annotations

import contextlib
import errno
import html
import http.client
import io
import logging
import os
import queue
import selectors
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from exporter import __version__
from exporter.app import App
from exporter.metrics.exposition import render, wants_gzip, wants_openmetrics

log = logging.getLogger(__name__)

WORKERS = 8  # the most requests served at once; a scrape takes milliseconds, so a few are plenty
IDLE_TIMEOUT_SECONDS = 5.0  # for a kept-alive connection's next request, headers and all, to arrive
MAX_HEADER_BYTES = 65_536  # a request is handed to a worker once this much arrived, ended or not
WRITE_TIMEOUT_SECONDS = 30.0  # one response write to a client that stopped reading
_MAX_HEADER_LINE, _MAX_HEADERS = 65_536, 100  # as http.client's limits
# Buffers one sendmsg takes: 1,024 on Linux and the BSDs; POSIX guarantees 16.
_IOV_MAX = os.sysconf("SC_IOV_MAX") if "SC_IOV_MAX" in getattr(os, "sysconf_names", {}) else 16


class ExporterServer(HTTPServer):
    request_queue_size = 128  # accept backlog: a burst of connections waits here, not refused

    def __init__(
        self,
        address: tuple[str, int],
        app: App,
        *,
        workers: int = WORKERS,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
    ) -> None:
        self.app = app
        self.idle_timeout = idle_timeout
        self._workers = workers
        self._ready: queue.SimpleQueue[_Handler | None] = queue.SimpleQueue()  # connections with a request
        self._parked: queue.SimpleQueue[_Handler] = queue.SimpleQueue()  # back from a worker, kept alive
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        for i in range(self._workers):
            threading.Thread(target=self._work, name=f"http-worker-{i}", daemon=True).start()
        self.socket.setblocking(False)
        self._wake_r.setblocking(False)
        selector = selectors.DefaultSelector()
        selector.register(self.socket, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        idle: dict[_Handler, float] = {}  # watched connection → when it is closed; earliest first
        try:
            while not self._stopping.is_set():
                first = next(iter(idle.values()), time.monotonic() + poll_interval)
                for key, _ in selector.select(max(0.0, min(first - time.monotonic(), poll_interval))):
                    if key.fileobj is self.socket:
                        self._accept(selector, idle)
                    elif key.fileobj is self._wake_r:
                        self._unpark(selector, idle)
                    else:
                        self._receive(selector, idle, key.data)
                now = time.monotonic()
                while idle and next(iter(idle.values())) <= now:
                    self._drop(selector, idle, next(iter(idle)))
        finally:
            for handler in list(idle):
                self._drop(selector, idle, handler)
            for _ in range(self._workers):
                self._ready.put(None)
            selector.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop the loop and its workers; a request being served finishes on its own."""
        self._stopping.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def _accept(self, selector: selectors.BaseSelector, idle: dict[_Handler, float]) -> None:
        while True:
            try:
                conn, address = self.socket.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE) and idle:
                    self._drop(selector, idle, next(iter(idle)))  # make room: the longest-idle goes
                    continue
                log.warning("http: cannot accept a connection: %s", err)
                return
            handler = _Handler(conn, address, self)
            selector.register(conn, selectors.EVENT_READ, handler)
            idle[handler] = time.monotonic() + self.idle_timeout

    def _unpark(self, selector: selectors.BaseSelector, idle: dict[_Handler, float]) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                handler = self._parked.get_nowait()
            except queue.Empty:
                return
            if handler.has_request():  # pipelined behind the last one
                self._ready.put(handler)
            else:
                selector.register(handler.connection, selectors.EVENT_READ, handler)
                idle[handler] = time.monotonic() + self.idle_timeout

    def _receive(
        self, selector: selectors.BaseSelector, idle: dict[_Handler, float], handler: _Handler
    ) -> None:
        try:
            data = handler.connection.recv(MAX_HEADER_BYTES)
        except OSError:
            data = b""
        if not data:  # closed by the client
            self._drop(selector, idle, handler)
            return
        handler.pending += data
        if handler.has_request():  # its deadline is not moved by partial headers
            selector.unregister(handler.connection)
            del idle[handler]
            self._ready.put(handler)

    def _drop(self, selector: selectors.BaseSelector, idle: dict[_Handler, float], handler: _Handler) -> None:
        selector.unregister(handler.connection)
        del idle[handler]
        self._close(handler)

    def _close(self, handler: _Handler) -> None:
        with contextlib.suppress(OSError):
            handler.finish()
        self.shutdown_request(handler.connection)

    def _work(self) -> None:
        while (handler := self._ready.get()) is not None:
            if handler.serve() and not self._stopping.is_set():
                self._parked.put(handler)
                self._wake()
            else:
                self._close(handler)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # the buffer is full of wake-ups already, or the server is closed
            self._wake_w.send(b"\0")


class _Reader(io.RawIOBase):
    """What the server's loop received, as a file: a worker never waits on the socket for a request."""

    def __init__(self) -> None:
        self.pending = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        del self.pending[:n]
        return n


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    # Small responses on a kept-alive connection otherwise wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = f"node-cost-exporter/{__version__}"
    timeout = WRITE_TIMEOUT_SECONDS
    raw_requestline: bytes  # set by handle_one_request

    def __init__(self, request: socket.socket, client_address: Any, server: ExporterServer) -> None:
        # Not the base class's, which serves the connection to its end: here a worker serves one request
        # at a time (`serve`) and the connection waits between requests in the server's loop.
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the base class's reader of the socket, replaced by one of `pending`
        reader = _Reader()
        self.pending = reader.pending
        self._buffered = self.rfile = io.BufferedReader(reader)

    def parse_request(self) -> bool:
        """The base class's request parsing, but with the header block read directly into its HTTPMessage
        instead of through the email package's parser: that took ~0.1 ms a request with cold caches, as much
        as the rest of a gzipped scrape's own work. The request line, Connection and Expect handling, and
        the limits (a line of 64 KiB, 100 headers) are the base class's.
        """
        self.command = ""  # the base class's None: no command read yet
        self.request_version = version = self.default_request_version
        self.close_connection = True
        self.requestline = requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:
            version = words[-1]
            number = version[5:].split(".") if version.startswith("HTTP/") else []
            if len(number) != 2 or not all(part.isdigit() and len(part) <= 10 for part in number):
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            major, minor = int(number[0]), int(number[1])
            if (major, minor) >= (2, 0):
                self.send_error(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({version})")
                return False
            self.close_connection = (major, minor) < (1, 1)
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command = command
        self.path = "/" + path.lstrip("/") if path.startswith("//") else path  # no open redirect (gh-87389)
        headers = self._read_headers()
        if headers is None:
            return False
        self.headers = headers
        connection = headers.get("Connection", "").lower()
        if connection == "close":
            self.close_connection = True
        elif connection == "keep-alive":
            self.close_connection = False
        if headers.get("Expect", "").lower() == "100-continue" and self.request_version >= "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _read_headers(self) -> http.client.HTTPMessage | None:
        """The header block as an HTTPMessage; None (and an error answered) when it is too large or broken."""
        message = http.client.HTTPMessage()
        name = ""
        for _ in range(_MAX_HEADERS + 1):
            line = self.rfile.readline(_MAX_HEADER_LINE + 1)
            if len(line) > _MAX_HEADER_LINE:
                self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long")
                return None
            if line in (b"\r\n", b"\n", b""):
                return message
            text = line.decode("iso-8859-1").rstrip("\r\n")
            if text[:1] in (" ", "\t") and name:  # an obsolete folded continuation of the last header
                value = message[name]
                del message[name]
                message[name] = f"{value} {text.strip()}"
                continue
            name, colon, value = text.partition(":")
            if not colon or not name or name != name.strip():
                self.send_error(HTTPStatus.BAD_REQUEST, "Bad header line")
                return None
            message[name] = value.strip()
        self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers")
        return None

    def has_request(self) -> bool:
        return b"\n\r\n" in self.pending or b"\n\n" in self.pending or len(self.pending) >= MAX_HEADER_BYTES

    def serve(self) -> bool:
        """Serve the request that has arrived; True to keep the connection for another."""
        try:
            self.handle_one_request()
        except OSError as err:  # the client went away or stopped reading
            log.debug("http: connection from %s: %s", self.client_address[0], err)
            return False
        except Exception:
            log.exception("http: serving a request from %s failed", self.client_address[0])
            return False
        self.pending[:] = self._buffered.read()  # bytes of a pipelined next request, back to the loop
        return not self.close_connection

    def do_GET(self) -> None:
        self._started = False
        try:
            self._route()
        except Exception:
            if self._started:  # part of the response went out: all that is left is to cut it short
                self.close_connection = True
                raise
            log.exception("http: %s %s failed", self.command, self.path.split("?", 1)[0])
            self.close_connection = True
            self._send(500, b"internal server error\n")

    do_HEAD = do_GET

    def _route(self) -> None:
        app = self.server.app
        path = self.path.split("?", 1)[0]
        if path == app.config.web.telemetry_path:
            gzipped = wants_gzip(self.headers.get("Accept-Encoding", ""))
            chunks, content_type = render(
                app.store,
                app.registry,
                openmetrics_format=wants_openmetrics(self.headers.get("Accept", "")),
                gzipped=gzipped,
            )
            self._send(200, chunks, content_type, gzipped=gzipped)
        elif path == "/healthz":
            ok = app.alive()
            self._send(200 if ok else 500, b"ok\n" if ok else b"a worker thread died\n")
        elif path == "/readyz":
            ready = app.ready()
            self._send(
                200 if ready else 503, b"ready\n" if ready else b"not ready: waiting for nodes or prices\n"
            )
        elif path == "/":
            self._send(200, _landing(app).encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"not found\n")

    def _send(
        self,
        code: int,
        body: bytes | list[bytes],
        content_type: str = "text/plain; charset=utf-8",
        *,
        gzipped: bool = False,
    ) -> None:
        chunks = [body] if isinstance(body, bytes) else body
        self._started = True
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(chunk) for chunk in chunks)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Vary", "Accept, Accept-Encoding")
        self.end_headers()
        if self.command != "HEAD":
            _write_all(self.connection, chunks)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http: " + format, *args)


def _write_all(sock: socket.socket, chunks: list[bytes]) -> None:
    """Write the chunks in order, gathered into as few system calls as the kernel takes (`sendmsg`): a body
    of a few hundred chunks (the node section block by block) costs no more to send than one of a few."""
    if not hasattr(sock, "sendmsg"):  # Windows
        for chunk in chunks:
            sock.sendall(chunk)
        return
    views = [memoryview(chunk) for chunk in chunks if chunk]
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i : i + _IOV_MAX])  # blocks within the socket's write timeout
        while i < len(views) and sent >= len(views[i]):
            sent -= len(views[i])
            i += 1
        if sent:
            views[i] = views[i][sent:]


def _landing(app: App) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s.name)}</td><td>{'up' if s.up else 'down'}</td>"
        f"<td>{html.escape(s.reason.value if s.reason else '')}</td><td>{html.escape(s.detail)}</td></tr>"
        for s in app.health.integrations()
    )
    counts = ", ".join(f"{html.escape(k)}: {v}" for k, v in sorted(app.store.source_counts().items()))
    path = html.escape(app.config.web.telemetry_path)
    return (
        "<!DOCTYPE html><html><head><title>node-cost-exporter</title></head><body>"
        f"<h1>node-cost-exporter {__version__}</h1>"
        f'<p><a href="{path}">Metrics</a> · <a href="/healthz">healthz</a> · <a href="/readyz">readyz</a></p>'
        f"<p>Nodes by pricing source: {counts or 'none yet'}</p>"
        "<table border=1><tr><th>integration</th><th>state</th><th>reason</th><th>detail</th></tr>"
        f"{rows}</table></body></html>"
    )


def serve(app: App, host: str, port: int) -> ExporterServer:
    """Start serving on a background thread; returns the server (its port is server.server_address[1])."""
    server = ExporterServer((host, port), app)
    # A short poll interval: shutdown (SIGTERM) waits for the loop's next look, 0.5 s by default.
    threading.Thread(target=server.serve_forever, args=(0.05,), name="http", daemon=True).start()
    log.info("listening on %s:%d", host or "0.0.0.0", server.server_address[1])
    return server
