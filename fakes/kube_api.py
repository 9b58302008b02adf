"""A local fake Kubernetes API server for `/api/v1/nodes`, speaking the real list/watch protocol over HTTP.

What it models, because the watcher depends on each of these:
- bearer-token auth (401 `Status` body otherwise);
- paged lists: `limit`/`continue`, `metadata.resourceVersion`, `metadata.continue`, `remainingItemCount`,
  and 410 `Expired` for a continue token older than the retained history;
- watches: `Transfer-Encoding: chunked`, newline-delimited `{"type","object"}` events replayed from the
  requested resourceVersion out of an event log with increasing versions, `BOOKMARK` events when asked for,
  an `ERROR` event with a 410 `Expired` Status for a version older than the log, `timeoutSeconds`;
- automatic sharding's two reads: `GET /api/v1/namespaces/NS/pods/NAME` (a StatefulSet's Pod, its
  `metadata.ownerReferences` naming the set) and `GET /apis/apps/v1/namespaces/NS/statefulsets/NAME`
  (`spec.replicas`, `status`), shaped as the Pod and StatefulSet v1 API reference shows them, with the
  API server's `NotFound` and `Forbidden` Status answers;
- discovery (`/api`, `/api/v1`, `/apis`), so that `kubectl get nodes` finds the resource: the legacy
  unaggregated documents (APIVersions, APIResourceList, APIGroupList) of the API concepts page
  (kubernetes.io/docs/reference/using-api/api-concepts/, "Discovery API"), as a server without aggregated
  discovery answers a client asking for either form;
- test controls: add/modify/delete nodes, bookmarks, versions bumped by "other resources", history
  compaction, dropping open watches mid-stream, ending them early as at `timeoutSeconds`, 5xx replies, going down (refused connections) and back up;
  it is a `FakeServer`, so generic faults (`inject`) come as the API server's `Status` answers.

Nodes are kept pre-serialized (each re-encoded only when it changes) so a 15,000-node list costs a join;
`load(…, bytes_only=True)` keeps nothing else of a bulk-loaded node, for clusters of 65,000.
"""

from __future__ import annotations

import base64
import bisect
import copy
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from exporter.inventory.node import Node
from fakes.server import Answer, FakeServer, Fault, Request, abort
from fakes.server import self_signed_cert as self_signed_cert  # where callers have long found it

NODES_PATH = "/api/v1/nodes"


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A `metav1.Status` failure object, as the API server writes it."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


@dataclass
class RecordedRequest(Request):
    authorized: bool = True

    @property
    def is_watch(self) -> bool:
        return self.query.get("watch") in ("true", "1")


@dataclass
class _Event:
    rv: int
    type: str
    line: bytes  # the full newline-terminated event


@dataclass
class _Stored:
    obj: dict[str, Any] | None  # None: bulk-loaded bytes only, decoded on the rare paths that need a dict
    raw: bytes

    def private_copy(self) -> dict[str, Any]:
        """A copy the caller may change: of the dict, or a fresh decode of the bytes when only those are kept."""
        return json.loads(self.raw) if self.obj is None else copy.deepcopy(self.obj)


@dataclass
class _Watch:
    dropped: bool = False
    timed_out: bool = False


class FakeKubeAPI(FakeServer):
    """Context manager: `with FakeKubeAPI(token="t") as api: api.url …`. `tls` = (certificate, key) PEM
    files serves HTTPS, as a real API server does; `requests` may be a list of the caller's own."""

    def __init__(
        self,
        token: str | None = "test-token",
        *,
        port: int = 0,
        tls: tuple[str, str] | None = None,
        requests: list[RecordedRequest] | None = None,
    ) -> None:
        super().__init__(tls=tls, port=port, requests=requests)
        self.token = token
        self._cond = threading.Condition()
        self._rv = 1000
        self._oldest_rv = self._rv  # watching from an older version gets 410
        self._nodes: dict[str, _Stored] = {}
        self._names: list[str] = []
        self._log: list[_Event] = []
        self._log_base = 0  # absolute index of _log[0]
        self._expire_next_continue = False
        self._watches: list[_Watch] = []
        self._objects: dict[str, dict[str, Any]] = {}  # pod and statefulset paths → object
        self.forbidden: set[str] = set()  # resources ("pods", "statefulsets") the caller may not get

    def stop(self) -> None:
        """Stop listening and cut every open connection, watches mid-stream: clients now get 'connection
        refused'."""
        self.drop_watches()
        super().stop()

    # -- state -----------------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def load(self, objs: Iterable[dict[str, Any]], *, bytes_only: bool = False) -> None:
        """Bulk initial state (no events): for big clusters that exist before the watcher starts.

        `bytes_only` keeps each node's JSON and drops the dict: 65,000 ~10 kB nodes are ~650 MB as bytes but
        several GB as dicts too. Lists and watches serve the bytes either way; `node()`, `modify_node` and
        `delete_node` decode a node's bytes when they need it."""
        with self._cond:
            for obj in objs:
                self._rv += 1
                obj["metadata"]["resourceVersion"] = str(self._rv)
                name = obj["metadata"]["name"]
                if name not in self._nodes:
                    bisect.insort(self._names, name)
                self._nodes[name] = _Stored(None if bytes_only else obj, _dumps(obj))
            self._oldest_rv = self._rv
            self._log_base += len(self._log)
            self._log.clear()

    def add_node(self, obj: dict[str, Any]) -> int:
        with self._cond:
            name = obj["metadata"]["name"]
            if name in self._nodes:
                raise ValueError(f"node {name} exists")
            bisect.insort(self._names, name)
            return self._store("ADDED", obj)

    def modify_node(self, name: str, change: Callable[[dict[str, Any]], None] | None = None) -> int:
        """Apply `change` to a copy of the node and emit MODIFIED; no `change` is a heartbeat-like no-op."""
        with self._cond:
            obj = self._nodes[name].private_copy()
            if change is not None:
                change(obj)
            return self._store("MODIFIED", obj)

    def delete_node(self, name: str) -> int:
        with self._cond:
            stored = self._nodes.pop(name)
            self._names.remove(name)
            self._rv += 1
            obj = stored.private_copy()
            obj["metadata"]["resourceVersion"] = str(self._rv)
            self._append("DELETED", b'{"type":"DELETED","object":' + _dumps(obj) + b"}\n")
            return self._rv

    def node(self, name: str) -> dict[str, Any]:
        with self._cond:
            return self._nodes[name].private_copy()

    def node_names(self) -> list[str]:
        with self._cond:
            return list(self._names)

    def advance_rv(self, n: int = 1) -> int:
        """Writes to other resources: the global resourceVersion moves, no node event."""
        with self._cond:
            self._rv += n
            return self._rv

    def bookmark(self) -> int:
        """Send a BOOKMARK at the current resourceVersion to watches that asked for bookmarks."""
        with self._cond:
            obj = {"kind": "Node", "apiVersion": "v1", "metadata": {"resourceVersion": str(self._rv)}}
            self._append("BOOKMARK", b'{"type":"BOOKMARK","object":' + _dumps(obj) + b"}\n")
            return self._rv

    def add_statefulset(self, namespace: str, name: str, replicas: int) -> None:
        """A StatefulSet with `replicas` ready pods, each `<name>-<ordinal>` owned by it."""
        uid = _uuid(f"statefulset/{namespace}/{name}")
        labels = {"app.kubernetes.io/name": name}
        with self._cond:
            self._objects[_statefulset_path(namespace, name)] = {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": uid,
                    "generation": 1,
                    "resourceVersion": str(self._rv),
                    "creationTimestamp": "2026-11-02T09:14:07Z",
                    "labels": labels,
                },
                "spec": {
                    "replicas": replicas,
                    "serviceName": name,
                    "podManagementPolicy": "Parallel",
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name}]}},
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                    "revisionHistoryLimit": 10,
                },
                "status": {
                    "observedGeneration": 1,
                    "replicas": replicas,
                    "readyReplicas": replicas,
                    "currentReplicas": replicas,
                    "updatedReplicas": replicas,
                    "availableReplicas": replicas,
                    "currentRevision": f"{name}-6c8f9d7b5",
                    "updateRevision": f"{name}-6c8f9d7b5",
                    "collisionCount": 0,
                },
            }
        for ordinal in range(replicas):
            self.add_pod(namespace, f"{name}-{ordinal}", owner=("StatefulSet", name, uid))

    def scale_statefulset(self, namespace: str, name: str, replicas: int) -> None:
        """`kubectl scale`: spec.replicas changes (and, as the controller catches up, the status and pods)."""
        with self._cond:
            statefulset = self._objects[_statefulset_path(namespace, name)]
            old = statefulset["spec"]["replicas"]
            statefulset["metadata"]["generation"] += 1
            statefulset["spec"]["replicas"] = replicas
            for key in ("replicas", "readyReplicas", "currentReplicas", "updatedReplicas", "availableReplicas"):
                statefulset["status"][key] = replicas
            statefulset["status"]["observedGeneration"] = statefulset["metadata"]["generation"]
            uid = statefulset["metadata"]["uid"]
        for ordinal in range(old, replicas):
            self.add_pod(namespace, f"{name}-{ordinal}", owner=("StatefulSet", name, uid))

    def add_pod(self, namespace: str, name: str, owner: tuple[str, str, str] | None = None) -> None:
        """A running Pod; `owner` = (kind, name, uid) of its controller."""
        metadata: dict[str, Any] = {
            "name": name,
            "namespace": namespace,
            "uid": _uuid(f"pod/{namespace}/{name}"),
            "resourceVersion": str(self._rv),
            "creationTimestamp": "2026-11-02T09:14:09Z",
            "labels": {"statefulset.kubernetes.io/pod-name": name},
        }
        if owner is not None:
            kind, owner_name, owner_uid = owner
            metadata["ownerReferences"] = [
                {
                    "apiVersion": "apps/v1",
                    "kind": kind,
                    "name": owner_name,
                    "uid": owner_uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
            if kind == "StatefulSet":
                metadata["labels"]["apps.kubernetes.io/pod-index"] = name.rsplit("-", 1)[1]
        with self._cond:
            self._objects[_pod_path(namespace, name)] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": metadata,
                "spec": {
                    "hostname": name,
                    "containers": [{"name": "node-cost-exporter", "image": "node-cost-exporter:0.1.0"}],
                    "serviceAccountName": "node-cost-exporter",
                    "nodeName": "ip-10-0-1-23.ec2.internal",
                },
                "status": {"phase": "Running", "podIP": "10.0.1.77", "startTime": "2026-11-02T09:14:09Z"},
            }

    def send_raw_event(self, line: bytes) -> None:
        """Put arbitrary bytes (one line) into the watch stream, e.g. a malformed event."""
        with self._cond:
            self._append("RAW", line if line.endswith(b"\n") else line + b"\n")

    def compact(self) -> None:
        """Forget the event history: watches and continue tokens from older versions now get 410."""
        with self._cond:
            self._oldest_rv = self._rv
            self._log_base += len(self._log)
            self._log.clear()

    def drop_watches(self) -> None:
        """Cut every open watch mid-stream (no terminating chunk), like a restarting API server."""
        with self._cond:
            for w in self._watches:
                w.dropped = True
            self._cond.notify_all()

    def time_out_watches(self) -> None:
        """End every open watch cleanly (the terminating chunk), as the server does once a watch's
        `timeoutSeconds` is up: a test need not wait that long."""
        with self._cond:
            for w in self._watches:
                w.timed_out = True
            self._cond.notify_all()

    def active_watches(self) -> int:
        with self._cond:
            return len(self._watches)

    def fail(self, status: int = 503, times: int | None = None) -> None:
        """Answer the next authorized node requests (`times`, or all until `recover()` when None) with this
        HTTP error, instead of any failure set before."""
        self.clear_faults()
        self.enqueue(
            lambda request: _status(status, f"injected failure {status}"),
            times,
            when=lambda request: request.authorized and request.path == NODES_PATH,
        )

    def recover(self) -> None:
        self.clear_faults()

    def expire_next_continue(self) -> None:
        """The next request with a continue token gets 410 Expired (as after etcd compaction)."""
        with self._cond:
            self._expire_next_continue = True

    def list_requests(self) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if not r.is_watch]

    def watch_requests(self) -> list[RecordedRequest]:
        return [r for r in list(self.requests) if r.is_watch]

    # -- internals (callers hold self._cond) ---------------------------------------------------------------

    def _store(self, etype: str, obj: dict[str, Any]) -> int:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        raw = _dumps(obj)
        self._nodes[obj["metadata"]["name"]] = _Stored(obj, raw)
        self._append(etype, b'{"type":"' + etype.encode() + b'","object":' + raw + b"}\n")
        return self._rv

    def _append(self, etype: str, line: bytes) -> None:
        self._log.append(_Event(self._rv, etype, line))
        self._cond.notify_all()

    # -- requests ------------------------------------------------------------------------------------------

    def _new_request(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Request:
        authorized = self.token is None or headers.get("authorization") == f"Bearer {self.token}"
        return RecordedRequest(method, target, headers, body, authorized=authorized)

    def handle(self, request: Request) -> Answer:
        assert isinstance(request, RecordedRequest)
        if not request.authorized:
            return _status(401, "Unauthorized")
        if request.path in _DISCOVERY:
            return Answer(200, _dumps(_DISCOVERY[request.path]))
        if request.path.startswith(("/api/v1/namespaces/", "/apis/apps/v1/namespaces/")):
            return self._get_object(request.path)
        if request.path != NODES_PATH:
            return _status(404, "the server could not find the requested resource")
        if request.is_watch:
            return self._watch(request.query)
        return self._list(request.query)

    def _get_object(self, path: str) -> Answer:
        """A namespaced Pod or StatefulSet, or the API server's NotFound / Forbidden Status for it."""
        parts = path.strip("/").split("/")  # …, namespaces, NS, pods|statefulsets, NAME
        namespace, resource, name = parts[-3], parts[-2], parts[-1]
        group = "apps" if resource == "statefulsets" else ""
        if resource in self.forbidden:
            return _status(
                403,
                f'{resource} "{name}" is forbidden: User "system:serviceaccount:{namespace}:node-cost-exporter" '
                f'cannot get resource "{resource}" in API group "{group}" in the namespace "{namespace}"',
            )
        with self._cond:
            obj = self._objects.get(path)
            raw = None if obj is None else _dumps(obj)
        if raw is None:
            prefix = f"{resource}.{group}" if group else resource
            return _status(404, f'{prefix} "{name}" not found')
        return Answer(200, raw)

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        """A `metav1.Status` failure with the reason the API server gives each code (see `_REASONS`);
        a throttled request gets Retry-After, as the API server's priority and fairness sends it."""
        if fault is Fault.NO_DATA:
            return Answer(200, b'{"kind":"NodeList","apiVersion":"v1","metadata":{"resourceVersion":"%d"},'
                          b'"items":[]}' % self.resource_version)
        code, message = {
            Fault.AUTH: (401, "Unauthorized"),
            Fault.PERMISSION: (
                403,
                'nodes is forbidden: User "system:serviceaccount:monitoring:node-cost-exporter" cannot list '
                'resource "nodes" in API group "" at the cluster scope',
            ),
            Fault.NOT_FOUND: (404, "the server could not find the requested resource"),
            Fault.THROTTLED: (429, "storage is (re)initializing"),
            Fault.UNAVAILABLE: (503, "the server is currently unable to handle the request"),
        }.get(fault, (0, ""))
        if not code:
            return super().fault_answer(fault, request, retry_after)
        seconds = 1.0 if retry_after is None else retry_after
        return _status(code, message, retry_after=seconds if code == 429 else None)

    def _list(self, query: dict[str, str]) -> Answer:
        limit = int(query.get("limit") or 0)
        token = query.get("continue")
        with self._cond:
            if token:
                decoded = _decode_continue(token)
                if decoded is None:
                    return _status(400, "continue key is not valid")
                snapshot_rv, last_name = decoded
                if self._expire_next_continue or snapshot_rv < self._oldest_rv:
                    self._expire_next_continue = False
                    return _status(
                        410,
                        "The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter.",
                    )
                start = bisect.bisect_right(self._names, last_name)
            else:
                snapshot_rv, start = self._rv, 0
            end = len(self._names) if limit <= 0 else min(len(self._names), start + limit)
            names = self._names[start:end]
            items = [self._nodes[n].raw for n in names]
            metadata: dict[str, Any] = {"resourceVersion": str(snapshot_rv)}
            if end < len(self._names):
                metadata["continue"] = _encode_continue(snapshot_rv, names[-1])
                metadata["remainingItemCount"] = len(self._names) - end
        body = b"".join(
            (
                b'{"kind":"NodeList","apiVersion":"v1","metadata":',
                _dumps(metadata),
                b',"items":[',
                b",".join(items),
                b"]}",
            )
        )
        return Answer(200, body)

    def _watch(self, query: dict[str, str]) -> Answer:
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        rv_param = query.get("resourceVersion", "")
        initial: list[bytes] = []
        with self._cond:
            if rv_param in ("", "0"):
                # "Start at most recent": synthetic ADDED events for the current state first.
                initial = [b'{"type":"ADDED","object":' + self._nodes[n].raw + b"}\n" for n in self._names]
                cursor = self._log_base + len(self._log)
            else:
                try:
                    from_rv = int(rv_param)
                except ValueError:
                    return _status(400, f"invalid resourceVersion {rv_param!r}")
                if from_rv < self._oldest_rv:
                    expired = status_body(
                        410, "Expired", f"too old resource version: {from_rv} ({self._oldest_rv})"
                    )
                    initial = [b'{"type":"ERROR","object":' + _dumps(expired) + b"}\n"]
                    cursor = -1
                else:
                    cursor = self._log_base + len(self._log)
                    while cursor > self._log_base and self._log[cursor - 1 - self._log_base].rv > from_rv:
                        cursor -= 1

        def stream(handler: BaseHTTPRequestHandler) -> None:
            watch = _Watch()
            with self._cond:
                self._watches.append(watch)
            try:
                handler.send_response(200)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Transfer-Encoding", "chunked")
                handler.end_headers()
                for line in initial:
                    _chunk(handler, line)
                if cursor >= 0:
                    self._stream(handler, watch, cursor, deadline, bookmarks)
                if not watch.dropped:
                    handler.wfile.write(b"0\r\n\r\n")
                    handler.wfile.flush()
            except OSError:
                handler.close_connection = True
            finally:
                with self._cond:
                    self._watches.remove(watch)
            if watch.dropped:
                handler.close_connection = True
                abort(handler.connection)

        return Answer(200, stream=stream)

    def _stream(
        self, handler: BaseHTTPRequestHandler, watch: _Watch, cursor: int, deadline: float, bookmarks: bool
    ) -> None:
        while True:
            with self._cond:
                while True:
                    if watch.dropped or watch.timed_out:
                        return
                    cursor = max(cursor, self._log_base)  # compacted under us: skip what is gone
                    pending = self._log[cursor - self._log_base :]
                    if pending:
                        cursor += len(pending)
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._cond.wait(remaining)
            for event in pending:
                if event.type == "BOOKMARK" and not bookmarks:
                    continue
                _chunk(handler, event.line)


_DISCOVERY: dict[str, dict[str, Any]] = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.0.0.1:443"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList", "groupVersion": "v1",
        "resources": [{"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
                       "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                       "shortNames": ["no"], "storageVersionHash": "XwShjMxG9Fs="}],
    },
}


def _status(code: int, message: str, *, retry_after: float | None = None) -> Answer:
    """A Status answer; a 429 carries Retry-After."""
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    if code == 429 and not headers:
        headers = {"Retry-After": "1"}
    return Answer(code, _dumps(status_body(code, _REASONS.get(code, "Unknown"), message)), headers)


def _pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


def _statefulset_path(namespace: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"


def _chunk(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
    handler.wfile.flush()


def _encode_continue(rv: int, last_name: str) -> str:
    return base64.urlsafe_b64encode(_dumps({"rv": rv, "start": last_name})).decode()


def _decode_continue(token: str) -> tuple[int, str] | None:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError):
        return None


# -- driving a watcher ----------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Poll until `condition()` holds; no fixed sleeps, so tests run as fast as the code under test."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@dataclass
class RecordingSink:
    """An InventorySink that keeps the current set and every call, for assertions."""

    nodes: dict[str, Node] = field(default_factory=dict)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def replace_all(self, nodes: Iterable[Node]) -> None:
        with self.lock:
            self.nodes = {n.uid: n for n in nodes}
            self.calls.append(("replace_all", len(self.nodes)))

    def upsert(self, node: Node) -> None:
        with self.lock:
            self.nodes[node.uid] = node
            self.calls.append(("upsert", node.name))

    def delete(self, uid: str) -> None:
        with self.lock:
            self.nodes.pop(uid, None)
            self.calls.append(("delete", uid))

    def names(self) -> set[str]:
        with self.lock:
            return {n.name for n in self.nodes.values()}

    def by_name(self, name: str) -> Node | None:
        with self.lock:
            return next((n for n in self.nodes.values() if n.name == name), None)

    def count(self, kind: str) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c[0] == kind)


# -- realistic node objects ----------------------------------------------------------------------------------

# instance type → (vCPU, memory GiB, arch, GPUs)
_SHAPES: dict[str, tuple[int, float, str, int]] = {
    "m5.large": (2, 8, "amd64", 0),
    "m5.xlarge": (4, 16, "amd64", 0),
    "m6gd.2xlarge": (8, 32, "arm64", 0),
    "c5.2xlarge": (8, 16, "amd64", 0),
    "g4dn.xlarge": (4, 16, "amd64", 1),
    "e2-standard-2": (2, 8, "amd64", 0),
    "e2-standard-4": (4, 16, "amd64", 0),
    "n2-standard-8": (8, 32, "amd64", 0),
    "n1-standard-4": (4, 15, "amd64", 0),
    "Standard_D2s_v3": (2, 8, "amd64", 0),
    "Standard_D4s_v3": (4, 16, "amd64", 0),
    "Standard_DS1_v2": (1, 3.5, "amd64", 0),
    "Standard_NC6s_v3": (6, 112, "amd64", 1),
}
_DEFAULTS = {
    "aws": ("m5.xlarge", "us-east-1a"),
    "gcp": ("e2-standard-4", "europe-north1-c"),
    "azure": ("Standard_D4s_v3", "eastus-1"),
}
_GPU_MODELS = {"aws": "NVIDIA-T4", "gcp": "nvidia-tesla-t4", "azure": "NVIDIA-Tesla-V100"}
_IMAGE_REPOS = [
    "602401143452.dkr.ecr.us-east-1.amazonaws.com/amazon-k8s-cni",
    "602401143452.dkr.ecr.us-east-1.amazonaws.com/eks/kube-proxy",
    "registry.k8s.io/ingress-nginx/controller",
    "quay.io/prometheus/node-exporter",
    "docker.io/grafana/promtail",
    "gcr.io/gke-release/gke-metrics-agent",
    "mcr.microsoft.com/oss/kubernetes/azure-cloud-node-manager",
    "ghcr.io/example-org/payments-api",
    "ghcr.io/example-org/checkout-web",
    "docker.io/library/redis",
]


def _hex(seed: str, n: int) -> str:
    out = ""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}/{i}".encode()).hexdigest()
        i += 1
    return out[:n]


def _uuid(seed: str) -> str:
    h = _hex(seed, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def make_node(
    name: str,
    *,
    provider: str = "aws",
    instance_type: str | None = None,
    zone: str | None = None,
    spot: bool = False,
    images: int = 30,
    uid: str | None = None,
    gpus: int | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Node object shaped like a real EKS / GKE / AKS node (≈10 KB of JSON with 30 images).

    Deterministic for a given name; pass `uid` to model a node re-created under the same name.
    """
    default_type, default_zone = _DEFAULTS[provider]
    itype = instance_type or default_type
    zone = zone or default_zone
    cpus, mem_gib, arch, shape_gpus = _SHAPES.get(itype, (4, 16, "amd64", 0))
    gpu_count = shape_gpus if gpus is None else gpus
    ip = "10.{}.{}.{}".format(*(int(_hex(name + "ip", 6)[i : i + 2], 16) for i in (0, 2, 4)))
    common = {
        "beta.kubernetes.io/arch": arch,
        "beta.kubernetes.io/instance-type": itype,
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "node.kubernetes.io/instance-type": itype,
    }
    annotations = {
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true",
    }
    if provider == "aws":
        region = zone[:-1]
        provider_id = f"aws:///{zone}/i-{_hex(name + 'i', 17)}"
        cloud_labels = {
            "eks.amazonaws.com/capacityType": "SPOT" if spot else "ON_DEMAND",
            "eks.amazonaws.com/nodegroup": "spot-workers" if spot else "general",
            "eks.amazonaws.com/nodegroup-image": f"ami-{_hex(itype, 17)}",
            "eks.amazonaws.com/sourceLaunchTemplateId": f"lt-{_hex(itype + 'lt', 17)}",
            "eks.amazonaws.com/sourceLaunchTemplateVersion": "1",
            "failure-domain.beta.kubernetes.io/region": region,
            "failure-domain.beta.kubernetes.io/zone": zone,
            "k8s.io/cloud-provider-aws": _hex("cluster", 32),
            "topology.ebs.csi.aws.com/zone": zone,
            "topology.k8s.aws/zone-id": f"use1-az{int(_hex(zone, 1), 16) % 6 + 1}",
            "topology.kubernetes.io/region": region,
            "topology.kubernetes.io/zone": zone,
        }
        if gpu_count:
            cloud_labels["k8s.amazonaws.com/accelerator"] = _GPU_MODELS["aws"]
        addresses = [
            {"type": "InternalIP", "address": ip},
            {"type": "InternalDNS", "address": f"ip-{ip.replace('.', '-')}.ec2.internal"},
            {"type": "Hostname", "address": f"ip-{ip.replace('.', '-')}.ec2.internal"},
        ]
        os_image, kernel, runtime = "Amazon Linux 2", "5.10.219-208.866.amzn2.x86_64", "containerd://1.7.11"
        allocatable_cpu = f"{cpus * 1000 - 90}m"
    elif provider == "gcp":
        region = zone.rsplit("-", 1)[0]
        project = "example-prod"
        provider_id = f"gce://{project}/{zone}/{name}"
        cloud_labels = {
            "cloud.google.com/gke-boot-disk": "pd-balanced",
            "cloud.google.com/gke-container-runtime": "containerd",
            "cloud.google.com/gke-cpu-scaling-level": str(cpus),
            "cloud.google.com/gke-logging-variant": "DEFAULT",
            "cloud.google.com/gke-max-pods-per-node": "110",
            "cloud.google.com/gke-nodepool": "spot-pool" if spot else "default-pool",
            "cloud.google.com/gke-os-distribution": "cos",
            "cloud.google.com/gke-provisioning": "spot" if spot else "standard",
            "cloud.google.com/gke-stack-type": "IPV4",
            "cloud.google.com/machine-family": itype.split("-")[0],
            "cloud.google.com/private-node": "false",
            "failure-domain.beta.kubernetes.io/region": region,
            "failure-domain.beta.kubernetes.io/zone": zone,
            "topology.gke.io/zone": zone,
            "topology.kubernetes.io/region": region,
            "topology.kubernetes.io/zone": zone,
        }
        if spot:
            cloud_labels["cloud.google.com/gke-spot"] = "true"
        if gpu_count:
            cloud_labels["cloud.google.com/gke-accelerator"] = _GPU_MODELS["gcp"]
            cloud_labels["cloud.google.com/gke-gpu"] = "true"
        annotations["container.googleapis.com/instance_id"] = str(int(_hex(name + "gid", 15), 16))
        addresses = [
            {"type": "InternalIP", "address": ip},
            {"type": "InternalDNS", "address": f"{name}.{zone}.c.{project}.internal"},
            {"type": "Hostname", "address": f"{name}.{zone}.c.{project}.internal"},
        ]
        os_image, kernel, runtime = "Container-Optimized OS from Google", "6.1.85+", "containerd://1.7.13"
        allocatable_cpu = f"{cpus * 1000 - 60}m"
    elif provider == "azure":
        region = zone.rsplit("-", 1)[0] if "-" in zone else "eastus"
        cluster_rg = f"MC_rg-prod_aks-prod_{region}"
        if "vmss" in name and len(name) > 6:
            scale_set, index = name[:-6], int(name[-6:], 36)
        else:
            scale_set, index = "aks-nodepool1-12345678-vmss", int(_hex(name, 4), 16) % 100
        provider_id = (
            "azure:///subscriptions/8c2a6c1e-3f7e-4a53-9d0b-6c2f3e1d5a7b/resourceGroups/"
            f"{cluster_rg.lower()}/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}"
            f"/virtualMachines/{index}"
        )
        pool = scale_set.split("-")[1] if scale_set.count("-") >= 2 else "nodepool1"
        cloud_labels = {
            "agentpool": pool,
            "failure-domain.beta.kubernetes.io/region": region,
            "failure-domain.beta.kubernetes.io/zone": zone,
            "kubernetes.azure.com/agentpool": pool,
            "kubernetes.azure.com/cluster": cluster_rg,
            "kubernetes.azure.com/kubelet-identity-client-id": _uuid("kubelet"),
            "kubernetes.azure.com/mode": "user" if spot else "system",
            "kubernetes.azure.com/node-image-version": "AKSUbuntu-2204gen2containerd-202405.03.0",
            "kubernetes.azure.com/nodepool-type": "VirtualMachineScaleSets",
            "kubernetes.azure.com/os-sku": "Ubuntu",
            "kubernetes.azure.com/role": "agent",
            "kubernetes.azure.com/storageprofile": "managed",
            "kubernetes.azure.com/storagetier": "Premium_LRS",
            "kubernetes.io/role": "agent",
            "node-role.kubernetes.io/agent": "",
            "storageprofile": "managed",
            "storagetier": "Premium_LRS",
            "topology.disk.csi.azure.com/zone": zone,
            "topology.kubernetes.io/region": region,
            "topology.kubernetes.io/zone": zone,
        }
        if spot:
            cloud_labels["kubernetes.azure.com/scalesetpriority"] = "spot"
        if gpu_count:
            cloud_labels["nvidia.com/gpu.product"] = _GPU_MODELS["azure"]
        addresses = [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]
        os_image, kernel, runtime = "Ubuntu 22.04.4 LTS", "5.15.0-1064-azure", "containerd://1.7.15-1"
        allocatable_cpu = f"{cpus * 1000 - 140}m"
    else:
        raise ValueError(f"unknown provider {provider!r}")

    mem_ki = int(mem_gib * 1024 * 1024 * 0.97)
    capacity = {
        "cpu": str(cpus),
        "ephemeral-storage": "104845292Ki",
        "hugepages-1Gi": "0",
        "hugepages-2Mi": "0",
        "memory": f"{mem_ki}Ki",
        "pods": "110",
    }
    allocatable = {
        **capacity,
        "cpu": allocatable_cpu,
        "ephemeral-storage": "95551679124",
        "memory": f"{mem_ki - 1_600_000}Ki",
    }
    if gpu_count:
        capacity["nvidia.com/gpu"] = allocatable["nvidia.com/gpu"] = str(gpu_count)
    heartbeat = "2024-06-01T12:00:00Z"
    conditions = [
        {
            "type": t,
            "status": "False",
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": "2024-05-20T08:00:00Z",
            "reason": reason,
            "message": message,
        }
        for t, reason, message in (
            ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        )
    ]
    conditions.append(
        {
            "type": "Ready",
            "status": "True",
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": "2024-05-20T08:00:30Z",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
        }
    )
    image_list = []
    for i in range(images):
        repo = _IMAGE_REPOS[i % len(_IMAGE_REPOS)]
        digest = _hex(f"{repo}:{i}", 64)
        image_list.append(
            {
                "names": [f"{repo}@sha256:{digest}", f"{repo}:v1.{i}.{i % 7}"],
                "sizeBytes": 10_000_000 + int(digest[:6], 16) * 10,
            }
        )
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": uid or _uuid(name),
            "resourceVersion": "1",
            "creationTimestamp": "2024-05-20T08:00:00Z",
            "labels": {**common, **cloud_labels, **(labels or {})},
            "annotations": annotations,
            "managedFields": _managed_fields(cloud_labels),
        },
        "spec": {"providerID": provider_id, "podCIDR": f"10.244.{int(_hex(name, 2), 16)}.0/24"},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": conditions,
            "addresses": addresses,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _hex(name + "machine", 32),
                "systemUUID": _uuid(name + "system"),
                "bootID": _uuid(name + "boot"),
                "kernelVersion": kernel,
                "osImage": os_image,
                "containerRuntimeVersion": runtime,
                "kubeletVersion": "v1.29.4",
                "kubeProxyVersion": "v1.29.4",
                "operatingSystem": "linux",
                "architecture": arch,
            },
            "images": image_list,
        },
    }


def _managed_fields(cloud_labels: dict[str, str]) -> list[dict[str, Any]]:
    """The server-side-apply bookkeeping real nodes carry (a good part of their size)."""
    status_fields = {
        f"f:{k}": {}
        for k in ("allocatable", "capacity", "conditions", "daemonEndpoints", "images", "nodeInfo")
    }
    return [
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2024-05-20T08:00:30Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {
                    "f:annotations": {
                        ".": {},
                        "f:volumes.kubernetes.io/controller-managed-attach-detach": {},
                    },
                    "f:labels": {".": {}, **{f"f:{k}": {} for k in cloud_labels}},
                },
                "f:spec": {"f:providerID": {}},
            },
        },
        {
            "manager": "kubelet",
            "operation": "Update",
            "apiVersion": "v1",
            "time": "2024-06-01T12:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": status_fields},
            "subresource": "status",
        },
    ]


def write_kubeconfig(path: Path, server: str, token: str | None, ca_file: str | None = None) -> Path:
    """A kubeconfig for `server` with a static bearer token (none when `token` is None), trusting `ca_file`
    for an HTTPS server (kubectl sends a token over HTTPS only)."""
    user: dict[str, Any] = {"token": token} if token is not None else {}
    cluster: dict[str, Any] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = ca_file
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": cluster}],
        "users": [{"name": "fake-user", "user": user}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake-user"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML: the real loader reads it as is
    return path
