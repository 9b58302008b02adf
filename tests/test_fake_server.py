"""The base every wire-level fake runs on: lifecycle, request log, queued faults and how long they last."""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from fakes.server import Answer, FakeServer, Fault, Request


class Echo(FakeServer):
    """The smallest fake: answers the path back; faults as plain statuses."""

    def handle(self, request: Request) -> Answer:
        return Answer.json(200, {"path": request.path, "query": request.query})

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        if fault is Fault.THROTTLED:
            return Answer(429, b"{}", {"Retry-After": f"{retry_after:g}"})
        if fault is Fault.AUTH:
            return Answer(401, b"{}")
        return super().fault_answer(fault, request, retry_after)


@pytest.fixture
def echo() -> Iterator[Echo]:
    with Echo() as fake:
        yield fake


def get(fake: FakeServer, target: str = "/x?a=1", *, timeout: float = 2.0, body: bytes = b"") -> tuple[int, bytes, str]:
    connection = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=timeout)
    try:
        connection.request("POST" if body else "GET", target, body=body or None, headers={"X-Trace": "t-1"})
        response = connection.getresponse()
        return response.status, response.read(), response.getheader("Retry-After") or ""
    finally:
        connection.close()


def test_requests_are_logged_with_what_the_fakes_need(echo: Echo) -> None:
    assert get(echo, "/x?a=1&b=")[0] == 200
    assert get(echo, "/y", body=b'{"q": 1}')[0] == 200
    first, second = echo.requests
    assert (first.method, first.path, first.query, first.status) == ("GET", "/x", {"a": "1", "b": ""}, 200)
    assert first.raw_query == "a=1&b=" and first.headers["x-trace"] == "t-1"  # names lower-cased
    assert (second.method, second.json()) == ("POST", {"q": 1})


def test_faults_last_the_given_times_in_order_and_until_cleared(echo: Echo) -> None:
    echo.inject(Fault.AUTH, 2)
    echo.inject(Fault.THROTTLED, retry_after=0.5)
    assert [get(echo)[0] for _ in range(4)] == [401, 401, 429, 200]
    assert get(echo)[2] == ""  # the throttle carried its Retry-After only while it lasted
    echo.inject(Fault.THROTTLED, None, retry_after=2)
    assert {get(echo)[2] for _ in range(3)} == {"2"}
    echo.clear_faults()
    assert get(echo)[0] == 200


def test_a_fault_can_be_aimed_at_some_requests(echo: Echo) -> None:
    echo.inject(Fault.AUTH, None, when=lambda request: request.path == "/private")
    assert [get(echo, path)[0] for path in ("/public", "/private", "/public")] == [200, 401, 200]


def test_bad_response_is_the_real_answer_cut_short(echo: Echo) -> None:
    echo.inject(Fault.BAD_RESPONSE)
    status, body, _ = get(echo, "/abc")
    assert status == 200 and body == Answer.json(200, {"path": "/abc", "query": {}}).body[: len(body)]
    assert 0 < len(body) < len(Answer.json(200, {"path": "/abc", "query": {}}).body)


def test_timeout_holds_the_request_past_the_client(echo: Echo) -> None:
    echo.inject(Fault.TIMEOUT)
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        get(echo, timeout=0.2)
    assert time.monotonic() - began < 1.0
    assert echo.requests[-1].status == 0  # never answered
    assert get(echo)[0] == 200


def _raised(call: Callable[[], object]) -> list[BaseException]:
    try:
        call()
    except Exception as err:
        return [err]
    return []


def test_stop_is_quick_cuts_open_connections_and_a_restart_keeps_the_port() -> None:
    fake = Echo().start()
    port = fake.port
    idle = socket.create_connection(("127.0.0.1", port))  # a keep-alive client that never speaks
    fake.inject(Fault.TIMEOUT)
    failures: list[BaseException] = []
    held = threading.Thread(target=lambda: failures.extend(_raised(lambda: get(fake, timeout=5))))
    held.start()
    while not fake.requests:
        time.sleep(0.005)
    began = time.monotonic()
    fake.stop()
    assert time.monotonic() - began < 0.2  # no 0.5 s serve_forever poll, no wait for the held request
    held.join(timeout=1)
    assert not held.is_alive() and failures  # its client saw the connection end
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert idle.recv(1) == b""  # cut
    idle.close()
    fake.start()
    try:
        assert fake.port == port and get(fake)[0] == 200
    finally:
        fake.stop()
