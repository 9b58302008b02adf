"""The baseline for /metrics: the same stdlib stack serving a pre-built body, in a process of its own.

`python -m bench.staticserver PLAIN_FILE GZIP_FILE` prints `READY <port>` and serves, on any path but
/readyz (which answers `ready`), the bytes of PLAIN_FILE, or those of GZIP_FILE when the client accepts
gzip: a ThreadingHTTPServer speaking HTTP/1.1 with a handler written like exporter/http.py's (same headers,
headers then body as separate writes, TCP_NODELAY on accepted sockets via `disable_nagle_algorithm`), but
with nothing to render. It exits when stdin closes.
"""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from exporter.metrics.exposition import TEXT_TYPE, wants_gzip


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    plain = b""
    gzipped = b""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # As exporter/http.py: otherwise a small body waits ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        if self.path == "/readyz":
            gzipped, body = False, b"ready\n"
        else:
            gzipped = wants_gzip(self.headers.get("Accept-Encoding", ""))
            body = self.server.gzipped if gzipped else self.server.plain
        self.send_response(200)
        self.send_header("Content-Type", TEXT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Vary", "Accept, Accept-Encoding")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> int:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.plain, server.gzipped = Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]).read_bytes()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("READY", server.server_address[1], flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin (or dies)
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
