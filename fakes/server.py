"""The one HTTP server under every wire-level fake: lifecycle, a request log and fault injection.

A fake subclasses `FakeServer` and says two things: how its API answers a request (`handle`) and how its
cloud spells each generic `Fault` on the wire (`fault_answer`). The base does the rest, the same way for
every fake:

- `start()`/`stop()` or `with fake:`; `url` is http://127.0.0.1:<port>, or https:// with `tls`; a restart
  listens on the same port; `stop()` cuts open keep-alive connections and returns in ~10 ms (a small
  `serve_forever` poll interval), so clients see "connection refused" at once;
- `requests`: every request as received (`Request`: method, path, query, lower-cased headers, body, and the
  status answered);
- `inject(fault, times=N)` fails the next N requests (`times=None`: until `clear_faults()`), so a test can
  fail a source and then watch it recover; `enqueue(answer)` queues any canned answer the same way;
  `delay_seconds` slows every answer. Queued answers are served first come, first served.

Fault.TIMEOUT and Fault.DROPPED are the base's own, the same on every cloud since neither has a wire shape:
TIMEOUT reads the request and holds it unanswered for `hold_seconds` (longer than any client timeout in the
tests), then drops the connection; DROPPED reads the request and closes the connection at once, with no
answer (a load balancer or proxy resetting it, a server dying mid-request). CUT sends the real answer's
status and headers with its full Content-Length, then half its body, and closes (a server dying midway).
BAD_RESPONSE defaults to the real answer cut in half, with status 200 and a Content-Length that matches:
a whole answer whose body is garbled.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

POLL_SECONDS = 0.01  # how often serve_forever looks for a shutdown request: stop() waits at most this


class Fault(Enum):
    """The closed set of failures a fake can be told to produce; each fake answers them in its cloud's
    own wire shape (see its `fault_answer`)."""

    AUTH = "auth"  # the credentials are refused
    PERMISSION = "permission"  # authenticated, but not allowed
    NOT_FOUND = "not_found"  # the table, scope or API asked for is not there
    THROTTLED = "throttled"  # rate limited, with the cloud's retry-after header when one is given
    TIMEOUT = "timeout"  # no answer within the client's timeout
    DROPPED = "dropped"  # the connection closed without an answer
    CUT = "cut"  # the connection closed midway through the answer's body (Content-Length not met)
    UNAVAILABLE = "unavailable"  # a 5xx
    BAD_RESPONSE = "bad_response"  # a 200 whose body is garbled
    NO_DATA = "no_data"  # a valid, empty answer


@dataclass
class Request:
    """One request as the fake received it."""

    method: str
    target: str  # path and query string, as sent
    headers: dict[str, str]  # names lower-cased
    body: bytes = b""
    status: int = 0  # the status answered; 0 while unanswered, or when no answer was sent
    path: str = field(init=False)
    query: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        self.path = parts.path
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))

    @property
    def raw_query(self) -> str:
        return urlsplit(self.target).query

    def json(self) -> Any:
        """The body as JSON; None when empty or not JSON."""
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None


@dataclass(frozen=True)
class Answer:
    """What the fake sends back. `stream`, when set, writes the whole answer itself (a watch stream)."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    stream: Callable[[BaseHTTPRequestHandler], None] | None = None

    @classmethod
    def json(
        cls,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
        *,
        content_type: str = "application/json",
        indent: int | None = None,
    ) -> Answer:
        return cls(status, json.dumps(payload, indent=indent).encode(), dict(headers or {}), content_type)

    def cut(self) -> Answer:
        """This answer with its whole length announced but only half its body sent before the connection
        closes: a server or proxy dying midway (urllib3 reads it as an IncompleteRead)."""
        full = self

        def stream(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(full.status)
            for name, value in full.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", full.content_type)
            handler.send_header("Content-Length", str(len(full.body)))
            handler.end_headers()
            handler.wfile.write(full.body[: len(full.body) // 2])
            handler.wfile.flush()
            handler.close_connection = True

        return Answer(self.status, self.body, self.headers, self.content_type, stream=stream)

    def truncated(self) -> Answer:
        """This answer as a broken server or proxy would send it: status 200, the body cut in half."""
        return Answer(200, self.body[: len(self.body) // 2], self.headers, self.content_type)


Responder = Callable[[Request], Answer | None]  # None: send no answer, drop the connection


@dataclass
class _Queued:
    respond: Responder
    remaining: int | None  # None: until clear_faults()
    when: Callable[[Request], bool] | None


class FakeServer:
    """Base of the fakes. Subclasses implement `handle` and `fault_answer`, may add `answer_headers`."""

    hold_seconds = 10.0  # how long a TIMEOUT fault holds a request
    delay_first = False  # True: `delay_seconds` passes before the request takes effect, not after

    def __init__(
        self, *, tls: tuple[str, str] | None = None, port: int = 0, requests: list[Any] | None = None
    ) -> None:
        self.tls = tls  # (certificate, key) PEM files: serve HTTPS
        self.port = port
        self.requests: list[Any] = requests if requests is not None else []
        self.delay_seconds = 0.0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._queue: list[_Queued] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> Any:  # Any: each fake's `with` gives the fake itself, with its own type
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Any:
        """Listen on 127.0.0.1:`port` (0 picks a free port, kept for a later restart)."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave in two writes: no 40 ms delayed ACK

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                with suppress(OSError):  # the peer, or stop(), already closed it
                    super().finish()

            def do_GET(self) -> None:
                fake._serve(self)

            def do_POST(self) -> None:
                fake._serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read fake.requests
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._stop.clear()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(POLL_SECONDS,), name=type(self).__name__, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut open connections; held and delayed answers end at once."""
        self._stop.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:
            abort(connection)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # -- faults -----------------------------------------------------------------------------------------

    def inject(
        self,
        fault: Fault,
        times: int | None = 1,
        *,
        retry_after: float | None = None,
        when: Callable[[Request], bool] | None = None,
    ) -> None:
        """Answer the next `times` requests (matching `when`) with `fault`; `times=None` until
        `clear_faults()`. `retry_after` (seconds) goes in the cloud's retry-after header of THROTTLED."""
        if fault is Fault.TIMEOUT:
            self.enqueue(self._hold, times, when=when)
        elif fault is Fault.DROPPED:
            self.enqueue(_no_answer, times, when=when)
        elif fault is Fault.CUT:
            self.enqueue(lambda request: self.handle(request).cut(), times, when=when)
        else:
            self.enqueue(lambda request: self.fault_answer(fault, request, retry_after), times, when=when)

    def enqueue(
        self,
        answer: Answer | Responder,
        times: int | None = 1,
        *,
        when: Callable[[Request], bool] | None = None,
    ) -> None:
        """Answer the next `times` requests (matching `when`) with `answer`, or what it returns for each;
        after any answers queued before."""
        respond = answer if callable(answer) else _constant(answer)
        with self._lock:
            self._queue.append(_Queued(respond, times, when))

    def clear_faults(self) -> None:
        with self._lock:
            self._queue.clear()

    # -- what a fake implements -------------------------------------------------------------------------

    def handle(self, request: Request) -> Answer:
        """The API's answer to one request."""
        raise NotImplementedError

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        """`fault` in this cloud's wire shape (TIMEOUT and DROPPED never reach here)."""
        if fault is Fault.BAD_RESPONSE:
            return self.handle(request).truncated()
        raise NotImplementedError(f"{type(self).__name__} does not model {fault}")

    def answer_headers(self, request: Request) -> dict[str, str]:
        """Headers every answer carries (request ids and the like)."""
        return {}

    # -- per request ------------------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in handler.headers.items()}
        request = self._new_request(handler.command, handler.path, headers, body)
        with self._lock:
            self.requests.append(request)
            respond = self._take(request)
        if self.delay_first and self._delay():
            return self._drop(handler)
        answer = respond(request) if respond is not None else self.handle(request)
        if not self.delay_first and self._delay():
            return self._drop(handler)
        if answer is None:
            return self._drop(handler)
        request.status = answer.status
        with suppress(OSError):  # the client may have timed out and gone
            if answer.stream is not None:
                answer.stream(handler)
                return None
            handler.send_response(answer.status)
            if answer.status != 204:
                handler.send_header("Content-Type", answer.content_type)
                handler.send_header("Content-Length", str(len(answer.body)))
            for name, value in {**self.answer_headers(request), **answer.headers}.items():
                handler.send_header(name, value)
            handler.end_headers()
            if answer.status != 204:
                handler.wfile.write(answer.body)
            return None
        handler.close_connection = True
        return None

    def _new_request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Request:
        return Request(method, target, headers, body)

    def _take(self, request: Request) -> Responder | None:
        """The first queued answer meant for this request, counted down (callers hold the lock)."""
        for queued in self._queue:
            if queued.when is None or queued.when(request):
                if queued.remaining is not None:
                    queued.remaining -= 1
                    if queued.remaining <= 0:
                        self._queue.remove(queued)
                return queued.respond
        return None

    def _delay(self) -> bool:
        """Wait `delay_seconds`; True when the fake stopped meanwhile."""
        return bool(self.delay_seconds) and self._stop.wait(self.delay_seconds)

    def _hold(self, request: Request) -> None:
        self._stop.wait(self.hold_seconds)

    def _drop(self, handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        abort(handler.connection)


def header_seconds(value: float) -> str:
    """A retry-after header value: whole seconds as an integer, else the float."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _no_answer(_request: Request) -> None:
    return None


def _constant(answer: Answer) -> Responder:
    return lambda _request: answer


def self_signed_cert(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (its own CA) and its key, made with Debian's openssl, for `tls`."""
    cert, key = directory / "apiserver.crt", directory / "apiserver.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=kube-apiserver",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(cert), str(key)


def abort(connection: socket.socket) -> None:
    """Close a connection abruptly, so the peer sees a broken stream rather than a clean end."""
    with suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        connection.close()
