"""KubeNodeWatcher against a fake API server over real HTTP, configured through the real kubeconfig loader."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3

from exporter.health import Health, IntegrationStatus, Reason
from exporter.inventory.kube import KubeNodeWatcher, _continue_hint, _Failure, _lines
from exporter.inventory.parse import DEFAULT_SPOT_LABELS
from fakes.kube_api import FakeKubeAPI, RecordingSink, make_node, wait_for, write_kubeconfig
from fakes.server import Answer, FakeServer, Request

TOKEN = "s3cr3t-token"


@dataclass
class Harness:
    watcher: KubeNodeWatcher
    sink: RecordingSink
    health: Health
    status: IntegrationStatus
    kubeconfig: Path


@pytest.fixture
def api() -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(token=TOKEN) as fake:
        yield fake


def harness(
    tmp_path: Path, server: str, *, token: str | None = TOKEN, kubeconfig: str | None = None, **kwargs: Any
) -> Harness:
    path = write_kubeconfig(tmp_path / "kubeconfig", server, token)
    sink, health = RecordingSink(), Health()
    status = health.integration("kubernetes")
    options: dict[str, Any] = {
        "page_size": 500,
        "watch_timeout_seconds": 30,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        **kwargs,
    }
    watcher = KubeNodeWatcher(
        sink,
        status,
        health,
        spot_labels=DEFAULT_SPOT_LABELS,
        kubeconfig=kubeconfig or str(path),
        **options,
    )
    return Harness(watcher, sink, health, status, path)


@contextmanager
def running(h: Harness) -> Iterator[threading.Event]:
    stop = threading.Event()
    thread = threading.Thread(target=h.watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive(), "watcher did not stop"


def small(name: str, **kwargs: Any) -> dict[str, Any]:
    return make_node(name, images=2, **kwargs)


def test_paged_initial_list_then_watch_from_its_version(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load(small(f"ip-10-0-{i // 250}-{i % 250}.ec2.internal") for i in range(1234))
    list_rv = api.resource_version
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(10)
        wait_for(lambda: api.watch_requests(), "the first watch")
    lists = api.list_requests()
    assert [(r.query["limit"], "continue" in r.query) for r in lists] == [
        ("500", False),
        ("500", True),
        ("500", True),
    ]
    assert all(r.authorized for r in api.requests)
    assert h.sink.calls[0] == ("replace_all", 1234)
    assert h.sink.count("replace_all") == 1
    assert len(h.sink.names()) == 1234
    watch = api.watch_requests()[0].query
    assert watch["resourceVersion"] == str(list_rv)
    assert watch["allowWatchBookmarks"] == "true"
    assert watch["timeoutSeconds"] == "30"
    assert h.status.up and h.status.reason is None
    assert h.watcher.relists == 0


def test_continue_token_expired_restarts_the_list(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load(small(f"node-{i:04d}") for i in range(12))
    api.expire_next_continue()
    h = harness(tmp_path, api.url, page_size=5)  # three pages, as 1,234 nodes in pages of 500
    with running(h):
        assert h.watcher.synced.wait(10)
    lists = api.list_requests()
    assert [("continue" in r.query, r.status) for r in lists] == [
        (False, 200),
        (True, 410),
        (False, 200),
        (True, 200),
        (True, 200),
    ]
    assert h.sink.calls == [("replace_all", 12)]


def test_watch_events_reach_the_sink(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load([small("node-a"), small("node-b")])
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(5)
        api.add_node(small("node-c", provider="gcp", spot=True))
        wait_for(lambda: "node-c" in h.sink.names(), "ADDED node-c")
        node_c = h.sink.by_name("node-c")
        assert node_c is not None and node_c.provider == "gcp" and node_c.capacity_type.value == "spot"

        def relabel(obj: dict[str, Any]) -> None:
            obj["metadata"]["labels"]["node.kubernetes.io/instance-type"] = "m5.large"

        api.modify_node("node-a", relabel)
        wait_for(lambda: (n := h.sink.by_name("node-a")) is not None and n.instance_type == "m5.large", "MODIFIED")
        api.delete_node("node-b")
        wait_for(lambda: "node-b" not in h.sink.names(), "DELETED node-b")
    assert h.sink.names() == {"node-a", "node-c"}
    assert [c[0] for c in h.sink.calls] == ["replace_all", "upsert", "upsert", "delete"]
    assert dict(h.watcher.events) == {
        "ADDED": 1,
        "MODIFIED": 1,
        "DELETED": 1,
        "BOOKMARK": 0,
        "ERROR": 0,
        "OTHER": 0,
    }


def test_unchanged_modified_does_not_call_upsert(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load([small("node-a")])
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(5)

        def heartbeat(obj: dict[str, Any]) -> None:
            for condition in obj["status"]["conditions"]:
                condition["lastHeartbeatTime"] = "2024-06-01T12:00:10Z"
            obj["status"]["images"].pop()

        def cordon_label(obj: dict[str, Any]) -> None:
            obj["metadata"]["labels"]["example.com/drain"] = "true"

        api.modify_node("node-a", heartbeat)
        api.modify_node("node-a")  # same object, new resourceVersion only
        api.modify_node("node-a", cordon_label)
        wait_for(lambda: h.watcher.events["MODIFIED"] == 3, "three MODIFIED events")
        wait_for(lambda: h.sink.count("upsert") == 1, "the one real change")
    assert h.sink.calls == [("replace_all", 1), ("upsert", "node-a")]
    node = h.sink.by_name("node-a")
    assert node is not None and node.labels["example.com/drain"] == "true"


def test_bookmark_advances_the_resume_version(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load([small("node-a")])
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(5)
        wait_for(lambda: api.active_watches() == 1, "an open watch")
        first_rv = api.watch_requests()[0].query["resourceVersion"]
        rv = api.advance_rv(37)  # other resources changed: node watchers only learn it from a bookmark
        api.bookmark()
        wait_for(lambda: h.watcher.events["BOOKMARK"] == 1, "the bookmark")
        api.drop_watches()
        wait_for(lambda: len(api.watch_requests()) == 2, "the resumed watch")
    resumed = api.watch_requests()[1].query["resourceVersion"]
    assert (int(first_rv), resumed) == (rv - 37, str(rv))
    assert len(api.list_requests()) == 1 and h.watcher.relists == 0
    assert h.sink.calls == [("replace_all", 1)]  # a bookmark carries no node


def test_expired_version_on_resume_relists_and_drops_nodes_deleted_in_the_gap(
    tmp_path: Path, api: FakeKubeAPI
) -> None:
    api.load([small("node-a"), small("node-b"), small("node-c")])
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(5)
        wait_for(lambda: api.active_watches() == 1, "an open watch")
        api.fail(503)
        api.drop_watches()
        wait_for(lambda: any(r.status == 503 for r in api.watch_requests()), "a failed reconnect")
        wait_for(lambda: h.status.reason is Reason.UNAVAILABLE, "status unavailable")
        api.delete_node("node-b")
        api.compact()  # the watcher's version is gone from history
        api.recover()
        wait_for(lambda: h.sink.names() == {"node-a", "node-c"}, "the relist")
        wait_for(lambda: h.status.up, "status up")
    assert h.watcher.events["ERROR"] == 1
    assert h.watcher.relists == 1
    assert h.sink.count("replace_all") == 2 and h.sink.count("delete") == 0
    assert len(api.list_requests()) == 2


def test_dropped_watch_resumes_without_relist(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load([small("node-a")])
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(5)
        api.add_node(small("node-b"))
        wait_for(lambda: "node-b" in h.sink.names(), "node-b")
        seen_rv = str(api.resource_version)
        wait_for(lambda: api.active_watches() == 1, "an open watch")
        api.drop_watches()
        api.add_node(small("node-c"))  # while disconnected
        wait_for(lambda: "node-c" in h.sink.names(), "node-c after the reconnect")
    watches = api.watch_requests()
    assert len(watches) == 2 and watches[1].query["resourceVersion"] == seen_rv
    assert len(api.list_requests()) == 1 and h.watcher.relists == 0
    assert h.status.up


def test_server_timeout_ends_watch_and_it_is_renewed(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load([small("node-a")])
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(5)
        wait_for(lambda: api.active_watches() == 1, "an open watch")
        api.time_out_watches()
        wait_for(lambda: len(api.watch_requests()) >= 2, "a renewed watch")
    first, second = api.watch_requests()[:2]
    assert first.query["resourceVersion"] == second.query["resourceVersion"]
    assert len(api.list_requests()) == 1
    assert h.status.errors == {}


def test_unreachable_at_start_then_comes_up(tmp_path: Path) -> None:
    api = FakeKubeAPI(token=TOKEN)
    api.start()
    api.stop()  # the port is now closed: connection refused
    api.load([small("node-a"), small("node-b")])
    h = harness(tmp_path, api.url)
    try:
        with running(h):
            wait_for(lambda: h.status.errors[Reason.UNAVAILABLE] >= 3, "repeated connection failures")
            assert not h.watcher.synced.is_set()
            assert (h.status.up, h.status.reason) == (False, Reason.UNAVAILABLE)
            assert "cannot connect" in h.status.detail
            api.start()
            assert h.watcher.synced.wait(5)
            assert h.sink.names() == {"node-a", "node-b"}
            assert h.status.up
    finally:
        api.stop()


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_unauthorized_is_auth_and_recovers_when_the_kubeconfig_is_fixed(
    tmp_path: Path, api: FakeKubeAPI, token: str | None
) -> None:
    api.load([small("node-a")])
    h = harness(tmp_path, api.url, token=token)
    with running(h):
        wait_for(lambda: h.status.errors[Reason.AUTH] >= 2, "auth failures")
        assert not h.watcher.synced.is_set()
        assert (h.status.up, h.status.reason) == (False, Reason.AUTH)
        assert "Unauthorized" in h.status.detail
        write_kubeconfig(h.kubeconfig, api.url, TOKEN)  # rotated credentials are picked up
        assert h.watcher.synced.wait(5)
    assert not api.requests[0].authorized


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (403, Reason.PERMISSION),
        (404, Reason.NOT_FOUND),
        (429, Reason.THROTTLED),
        (500, Reason.UNAVAILABLE),
        (503, Reason.UNAVAILABLE),
        (504, Reason.TIMEOUT),
    ],
)
def test_http_errors_map_to_reasons(tmp_path: Path, api: FakeKubeAPI, code: int, reason: Reason) -> None:
    api.load([small("node-a")])
    api.fail(code, times=2)
    h = harness(tmp_path, api.url)
    with running(h):
        wait_for(lambda: h.status.errors[reason] >= 1, f"{reason} reported")
        assert h.watcher.synced.wait(5)
    assert h.status.errors == {reason: 2}
    assert h.status.up


def test_missing_kubeconfig_is_config_and_retried(tmp_path: Path) -> None:
    h = harness(tmp_path, "http://127.0.0.1:9", kubeconfig=str(tmp_path / "absent"))
    with running(h):
        wait_for(lambda: h.status.errors[Reason.CONFIG] >= 2, "config failures")
    assert not h.watcher.synced.is_set()
    assert h.status.reason is Reason.CONFIG and "absent" in h.status.detail


def test_recreated_node_with_same_name_ends_with_new_uid(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load([small("node-a", uid="uid-old"), small("node-b")])
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(5)
        api.delete_node("node-a")
        api.add_node(small("node-a", uid="uid-new"))
        wait_for(lambda: "uid-new" in h.sink.nodes, "the new node-a")
    assert sorted((n.name, n.uid) for n in h.sink.nodes.values() if n.name == "node-a") == [("node-a", "uid-new")]
    assert ("delete", "uid-old") in h.sink.calls


def test_malformed_nodes_are_counted_and_skipped(tmp_path: Path, api: FakeKubeAPI) -> None:
    broken = small("node-broken")
    del broken["metadata"]["uid"]
    api.load([small("node-a"), broken, small("node-b")])
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(5)
        assert h.sink.names() == {"node-a", "node-b"}
        assert h.health.invalid_counts() == {"node": 1}
        bad_event = small("node-bad")
        bad_event["metadata"]["uid"] = 12345
        api.add_node(bad_event)
        api.add_node(small("node-c"))
        wait_for(lambda: "node-c" in h.sink.names(), "the node after the bad one")
    assert h.health.invalid_counts() == {"node": 2}
    assert h.status.up


def test_garbage_in_the_stream_is_bad_response_and_the_watch_resumes(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load([small("node-a")])
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(5)
        wait_for(lambda: api.active_watches() == 1, "an open watch")
        api.send_raw_event(b"<html>502 Bad Gateway</html>")
        wait_for(lambda: h.status.errors[Reason.BAD_RESPONSE] == 1, "bad response")
        api.add_node(small("node-b"))
        wait_for(lambda: "node-b" in h.sink.names(), "node-b after reconnecting")
    assert len(api.list_requests()) == 1


def test_long_label_values_delivered_intact(tmp_path: Path, api: FakeKubeAPI) -> None:
    long_labels = {f"example.com/blob-{i}": chr(ord("a") + i) * 10_000 for i in range(3)}
    api.load([small("node-a", labels=long_labels)])
    h = harness(tmp_path, api.url)
    with running(h):
        assert h.watcher.synced.wait(5)
        api.add_node(small("node-b", labels=long_labels))
        wait_for(lambda: "node-b" in h.sink.names(), "node-b")
    for name in ("node-a", "node-b"):
        node = h.sink.by_name(name)
        assert node is not None
        assert {k: node.labels[k] for k in long_labels} == long_labels


def test_stop_interrupts_a_quiet_watch_promptly(tmp_path: Path, api: FakeKubeAPI) -> None:
    api.load([small("node-a")])
    h = harness(tmp_path, api.url, watch_timeout_seconds=300)
    stop = threading.Event()
    thread = threading.Thread(target=h.watcher.run, args=(stop,), daemon=True)
    thread.start()
    assert h.watcher.synced.wait(5)
    wait_for(lambda: api.active_watches() == 1, "an open watch")
    started = time.monotonic()
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 1.0


@dataclass
class _FailingSink(RecordingSink):
    """A sink with a bug in its first `failures` lists: what the watcher must survive."""

    failures: int = 3
    attempts: int = 0

    def replace_all(self, nodes: Any) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise RuntimeError("a bug downstream")
        super().replace_all(nodes)


def test_an_unexpected_error_relists_and_is_logged_once_per_cause(
    tmp_path: Path, api: FakeKubeAPI, caplog: pytest.LogCaptureFixture
) -> None:
    api.load([small("node-a")])
    h = harness(tmp_path, api.url)
    sink = _FailingSink()
    h.watcher = KubeNodeWatcher(
        sink,
        h.status,
        h.health,
        spot_labels=DEFAULT_SPOT_LABELS,
        kubeconfig=str(h.kubeconfig),
        backoff_initial=0.01,
        backoff_max=0.05,
    )
    with running(h):
        assert h.watcher.synced.wait(5)
    assert sink.names() == {"node-a"} and sink.attempts == 4
    assert h.status.errors[Reason.BAD_RESPONSE] == 3
    assert [r.getMessage() for r in caplog.records if "unexpectedly" in r.getMessage()] == [
        "node watch failed unexpectedly; relisting"
    ]


def test_an_edit_of_a_label_nothing_reads_is_no_change(tmp_path: Path, api: FakeKubeAPI) -> None:
    """Only the labels later stages read are kept (`keep_labels`): editing another is an unchanged Node."""
    api.load([small("node-a", labels={"example.com/team": "web"})])
    h = harness(tmp_path, api.url, keep_labels=("example.com/team", "example.com/absent"))
    with running(h):
        assert h.watcher.synced.wait(5)

        def label(key: str, value: str) -> Callable[[dict[str, Any]], None]:
            return lambda obj: obj["metadata"]["labels"].__setitem__(key, value)

        api.modify_node("node-a", label("example.com/drain", "true"))
        api.modify_node("node-a", label("example.com/team", "db"))
        wait_for(lambda: h.watcher.events["MODIFIED"] == 2, "two MODIFIED events")
        wait_for(lambda: h.sink.count("upsert") == 1, "the one change of a kept label")
    node = h.sink.by_name("node-a")
    assert node is not None and node.labels == {"example.com/team": "db"}
    assert node.instance_type == "m5.xlarge"  # the facts are still read from every label


def _chunked_response(chunks: list[bytes]) -> urllib3.BaseHTTPResponse:
    """A real HTTP/1.1 chunked response, cut into exactly these chunks, from a one-shot local server."""
    server = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            for chunk in chunks:
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.sendall(b"0\r\n\r\n")
        server.close()

    threading.Thread(target=answer, daemon=True).start()
    port = server.getsockname()[1]
    return urllib3.PoolManager().request("GET", f"http://127.0.0.1:{port}/", preload_content=False, timeout=5)


def test_watch_lines_split_over_chunks_or_sharing_one_are_read_whole() -> None:
    events = [b'{"type":"MODIFIED","object":{"n":%d}}' % i for i in range(4)]
    chunks = [events[0][:7], events[0][7:20], events[0][20:] + b"\n" + events[1][:5], events[1][5:] + b"\n"]
    chunks += [events[2] + b"\n" + events[3] + b"\n", b"\n"]  # two in one chunk; an empty line (keep-alive)
    assert list(_lines(_chunked_response(chunks))) == [*events, b""]
    assert list(_lines(_chunked_response([b"no newline at the end"]))) == [b"no newline at the end"]


def test_an_endless_watch_line_fails_the_stream_instead_of_filling_memory() -> None:
    with pytest.raises(_Failure, match="watch line longer than"):
        for _ in _lines(_chunked_response([b"x" * (1 << 20)] * 65)):
            pass


@pytest.mark.parametrize(
    ("page", "hint"),
    [
        # the API server's layout: ListMeta before Items
        (b'{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"7","continue":"eyJ2IjoibWV0YS"'
         b',"remainingItemCount":3},"items":[{"metadata":{"name":"a","labels":{"x":",\\"items\\":"}}}]}',
         "eyJ2IjoibWV0YS"),
        (b'{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"7"},"items":[]}', ""),  # last page
        (b'{"items":[],"metadata":{"continue":"late"}}', ""),  # items first: no guess, read after the decode
        (b'{"kind":"NodeList","metadata":{"continue":1},"items":[]}', ""),  # not a string: no guess
        (b"<html>502</html>", ""),
    ],
)
def test_the_next_page_is_guessed_from_the_head_of_a_page_only(page: bytes, hint: str) -> None:
    assert _continue_hint(page) == hint


def test_a_list_whose_pages_put_items_first_is_read_whole_page_by_page(tmp_path: Path) -> None:
    """No continue token in a page's head: nothing is fetched ahead, and the token decoded from the page
    drives the next request as before."""
    items = [small(f"node-{i:02d}") for i in range(7)]
    pages: list[bytes] = []
    for start in range(0, 7, 3):
        token = f"page-{start + 3}" if start + 3 < 7 else ""
        body = {"items": items[start : start + 3], "metadata": {"resourceVersion": "9", "continue": token}}
        pages.append(json.dumps(body).encode())
    requests: list[str] = []

    class Server(FakeServer):
        def handle(self, request: Request) -> Answer:
            if request.query.get("watch"):
                return Answer(503, b"{}")
            requests.append(request.query.get("continue", ""))
            return Answer(200, pages[{"": 0, "page-3": 1, "page-6": 2}[requests[-1]]])

    with Server() as server:
        h = harness(tmp_path, server.url, page_size=3)
        with running(h):
            assert h.watcher.synced.wait(10)
    assert requests[:3] == ["", "page-3", "page-6"]
    assert h.sink.names() == {f"node-{i:02d}" for i in range(7)}
