"""HTTP: /metrics (content negotiation, gzip), /healthz, /readyz and a landing page at /."""

from __future__ import annotations

import html
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from exporter import __version__
from exporter.app import App
from exporter.metrics.exposition import render, wants_gzip, wants_openmetrics

log = logging.getLogger(__name__)


class ExporterServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: ExporterServer
    protocol_version = "HTTP/1.1"
    # Small responses on a kept-alive connection otherwise wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    server_version = f"node-cost-exporter/{__version__}"

    def do_GET(self) -> None:
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
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(sum(len(chunk) for chunk in chunks)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Vary", "Accept, Accept-Encoding")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("http: " + format, *args)


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
