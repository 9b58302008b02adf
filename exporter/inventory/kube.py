"""List+watch of Kubernetes Nodes over raw JSON, feeding an `InventorySink`.

The `kubernetes` package is used only to load kubeconfig files (exec plugins, token files, client certs);
in a pod the service account is read directly (`incluster.py`), sparing the ~30 MiB that package's import
costs. Its API objects cost ~10x the CPU of `json.loads` on a large cluster, so the data path is a plain
urllib3 pool built from the configuration, and each response is decoded by msgspec into Structs of only the
fields read (`wire.py`), then built straight into `Node` values. A page or watch line those Structs refuse,
or with a node that cannot be keyed, is decoded again into dicts and parsed node by node, as before msgspec.

Protocol, as client-go's reflector does it: a paged list (`limit`/`continue`, restarted when a continue token
expires) handed to `sink.replace_all`, then a watch from the list's resourceVersion, resumed from the last
seen version (events and bookmarks advance it) after a server timeout or a dropped stream, and replaced by a
fresh list when the server says the version is gone (410). Failures never escape `run`: they become the
integration's status and a jittered exponential backoff.

Sharded (`sharding.total_shards` > 1), every replica streams the whole list and watch, but an object of
another shard is dropped as soon as it is decoded, before it is parsed: no `Node` is built for it and the
sink never hears of it. With automatic sharding the shard comes from this pod's StatefulSet, read before the
first list and again at least every `RESHARD_CHECK_SECONDS` while watching (between events, so within a
bookmark's interval on a quiet cluster); a change of its replicas relists with the new shard.
"""

from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import msgspec
import orjson
import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, SSLError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from exporter.health import Health, IntegrationStatus, Reason
from exporter.inventory.incluster import SERVICE_ACCOUNT_DIR, InClusterConfig
from exporter.inventory.node import Node
from exporter.inventory.parse import (
    InvalidNode,
    SpotLabel,
    describe_node,
    parse_node,
    parse_wire_node,
    with_capacity,
)
from exporter.inventory.sharding import UNSHARDED, Shard, pod_ordinal
from exporter.inventory.sink import InventorySink
from exporter.inventory.wire import EVENT, LABELS, LIST_HEAD, NODE_LIST, WireNode
from exporter.tls import ssl_context

log = logging.getLogger(__name__)

_NODES_PATH = "/api/v1/nodes"
_CONNECT_TIMEOUT = 10.0
# Automatic sharding: how often the StatefulSet's replicas are read again.
RESHARD_CHECK_SECONDS = 60.0
# A watch is silent for at most timeoutSeconds (the server then ends it); beyond that plus this slack, the
# connection is dead even if TCP has not noticed.
_WATCH_READ_SLACK = 15.0
_STREAM_READ = 1 << 20  # bytes asked of the watch stream at a time (it answers with each chunk as it comes)
# etcd stores objects of at most 1.5 MiB; a watch line many times that is a broken or hostile stream.
_MAX_LINE_BYTES = 64 << 20
# A list page read: its nodes (this shard's, parsed), its resourceVersion and its continue token.
_Page = tuple[list[Node], str, str]
_EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR", "OTHER")
_STATUS_REASONS = {
    401: Reason.AUTH,
    403: Reason.PERMISSION,
    404: Reason.NOT_FOUND,
    408: Reason.TIMEOUT,
    429: Reason.THROTTLED,
    504: Reason.TIMEOUT,
}


class _Failure(Exception):
    """A request failed; becomes `status.failed(reason, detail)` and a backoff."""

    def __init__(self, reason: Reason, detail: str, *, retry_after: float = 0.0) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


class _Expired(Exception):
    """410 Gone: the resourceVersion (or continue token) is older than the server keeps."""


class _StreamEnded(Exception):
    """The watch connection broke after it was established: resume from the last resourceVersion."""


class _Resharded(Exception):
    """The StatefulSet's replicas changed: list again with the new shard."""


@dataclass(frozen=True)
class AutoSharding:
    """Where this pod is (`sharding.pod_namespace`, `sharding.pod`): its shard is its ordinal in its
    StatefulSet, the total that set's `spec.replicas`, as kube-state-metrics' `--auto-sharding`."""

    namespace: str
    pod: str = ""  # empty: the hostname, which is a StatefulSet pod's name

    @property
    def pod_name(self) -> str:
        return self.pod or socket.gethostname()


class KubeNodeWatcher:
    """Keeps an `InventorySink` in step with the cluster's Nodes until `stop` is set.

    `synced` is set once the first complete list reached the sink. `events` counts watch events by type and
    `relists` counts full lists after the first one (each means the watch fell too far behind), for metrics.
    """

    def __init__(
        self,
        sink: InventorySink,
        status: IntegrationStatus,
        health: Health,
        *,
        spot_labels: Sequence[SpotLabel],
        keep_labels: Collection[str] | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        page_size: int = 500,
        watch_timeout_seconds: int = 300,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        request_timeout: float = 60.0,
        service_account_dir: str = SERVICE_ACCOUNT_DIR,
        ca_file: str = "",
        shard: Shard = UNSHARDED,
        auto_sharding: AutoSharding | None = None,
        reshard_check_seconds: float = RESHARD_CHECK_SECONDS,
    ) -> None:
        """`shard`: the nodes served; with `auto_sharding`, replaced by the StatefulSet's before the first
        list (`shard` is read by the metrics and the billing sources: the current one)."""
        self.synced = threading.Event()
        self.shard = shard
        self._auto = auto_sharding
        self._reshard_check_seconds = reshard_check_seconds
        self._shard_checked = 0.0  # monotonic time the StatefulSet was last read
        # Every key exists from the start: the metrics thread iterates this while the watch thread counts,
        # and only inserting a key could break that iteration.
        self.events: Counter[str] = Counter(dict.fromkeys(_EVENT_TYPES, 0))
        self.relists = 0
        self._sink = sink
        self._status = status
        self._health = health
        self._spot_labels = tuple(spot_labels)
        self._keep_labels = None if keep_labels is None else frozenset(keep_labels)  # see parse_node
        self._kubeconfig = kubeconfig
        self._context = context
        self._page_size = page_size
        self._watch_timeout = watch_timeout_seconds
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._request_timeout = request_timeout
        self._service_account_dir = service_account_dir
        # tls.ca_file, trusted beside a kubeconfig cluster's CA (a proxy in front of a remote API server);
        # never in-cluster, where the service account's CA is the one that may sign the API server.
        self._ca_file = ca_file
        self._attempt = 0
        self._last_error = ""  # the unexpected error last logged
        self._cfg: Any = None  # Configuration or InClusterConfig: credentials, refreshed per request
        self._pool: urllib3.PoolManager | None = None
        self._host = ""
        self._rv = ""
        self._seen: dict[str, Node] = {}  # uid → last Node given to the sink
        # uid → hashes of what the node's last watch event held besides its capacity, and of its capacity
        # (`_parse_event_node`); only for nodes whose `_seen` Node was parsed from that event.
        self._prints: dict[str, tuple[int, int]] = {}
        self._active: urllib3.BaseHTTPResponse | None = None
        self._active_lock = threading.Lock()

    # -- loop ----------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """List, then watch, until `stop` is set. Never raises."""
        threading.Thread(target=self._abort_on_stop, args=(stop,), name="kube-abort", daemon=True).start()
        need_list = True
        while not stop.is_set():
            try:
                if self._pool is None:
                    self._connect()
                if self._auto is not None and need_list:
                    self._read_shard()  # a failure here retries with backoff: no list without a shard
                if need_list:
                    need_list = not self._list(stop)
                    continue
                self._watch(stop)
            except _Resharded:
                need_list = True
            except _Expired as e:
                log.info("resourceVersion %s expired (%s); relisting nodes", self._rv, e)
                need_list = True
            except _StreamEnded as e:
                log.info("node watch dropped (%s); resuming from resourceVersion %s", e, self._rv)
                self._sleep_backoff(stop)
            except _Failure as e:
                if stop.is_set():
                    break
                self._status.failed(e.reason, e.detail)
                if e.reason in (Reason.AUTH, Reason.CONFIG):
                    self._disconnect()  # reload credentials next time: tokens and kubeconfigs get rotated
                self._sleep_backoff(stop, e.retry_after)
            except Exception as e:  # a bug here must not end inventory for the process' lifetime
                if repr(e) != self._last_error:  # each cause logged once in a row, not on every retry
                    log.exception("node watch failed unexpectedly; relisting")
                self._last_error = repr(e)
                self._status.failed(Reason.BAD_RESPONSE, f"unexpected error: {e!r}")
                need_list = True
                self._sleep_backoff(stop)
        self._disconnect()

    def _abort_on_stop(self, stop: threading.Event) -> None:
        """Unblock a watch read as soon as `stop` is set instead of waiting for the next event."""
        stop.wait()
        with self._active_lock:
            resp = self._active
        if resp is not None:
            with suppress(ValueError, RuntimeError, OSError):  # already released: nothing blocks on it
                resp.shutdown()

    def _sleep_backoff(self, stop: threading.Event, at_least: float = 0.0) -> None:
        ceiling = min(self._backoff_max, self._backoff_initial * 2**self._attempt)
        self._attempt = min(self._attempt + 1, 30)
        delay = max(random.uniform(ceiling / 2, ceiling), min(at_least, self._backoff_max))
        stop.wait(delay)

    # -- connection ----------------------------------------------------------------------------------------

    def _connect(self) -> None:
        try:
            cfg = self._load_config()
        except Exception as e:  # ConfigException, OSError, YAML errors, exec plugin failures…
            source = self._config_source()
            raise _Failure(Reason.CONFIG, f"loading Kubernetes configuration ({source}): {e}") from e
        self._cfg = cfg
        self._host = str(cfg.host).rstrip("/")
        self._pool = _pool_manager(cfg, "" if self._in_cluster() else self._ca_file)

    def _in_cluster(self) -> bool:
        return self._kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))

    def _config_source(self) -> str:
        if self._in_cluster():
            return "in-cluster service account"
        return self._kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"

    def _load_config(self) -> Any:
        if self._in_cluster():
            return InClusterConfig(self._service_account_dir)
        from kubernetes import config
        from kubernetes.client import Configuration

        cfg = Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=self._kubeconfig, context=self._context, client_configuration=cfg
        )
        return cfg

    def _disconnect(self) -> None:
        if self._pool is not None:
            self._pool.clear()
        self._pool = None

    def _get(
        self, query: dict[str, str], read_timeout: float, path: str = _NODES_PATH
    ) -> urllib3.BaseHTTPResponse:
        """GET path?query; a 200 response with its body unread, or `_Failure`/`_Expired`."""
        assert self._pool is not None
        try:
            # Calls the configuration's refresh hook: exec-plugin and in-cluster tokens expire.
            auth = self._cfg.auth_settings().get("BearerToken")
        except Exception as e:
            raise _Failure(Reason.CONFIG, f"obtaining Kubernetes credentials: {e}") from e
        headers = {"Accept": "application/json", "User-Agent": "node-cost-exporter"}
        if auth and auth.get("value"):
            headers["Authorization"] = auth["value"]
        url = f"{self._host}{path}?{urlencode(query)}" if query else f"{self._host}{path}"
        with _transport_errors(url):
            resp = self._pool.request(
                "GET",
                url,
                headers=headers,
                preload_content=False,
                redirect=False,
                retries=False,
                timeout=urllib3.Timeout(connect=_CONNECT_TIMEOUT, read=read_timeout),
            )
        if resp.status == 200:
            return resp
        try:
            with _transport_errors(url):
                body = resp.read(65536)
        finally:
            _finish(resp, clean=False)
        message = _status_message(body)
        if resp.status == 410:
            raise _Expired(message)
        raise _Failure(
            _http_reason(resp.status),
            f"GET {url}: HTTP {resp.status}: {message}",
            retry_after=_retry_after(resp.headers.get("Retry-After")),
        )

    # -- list ----------------------------------------------------------------------------------------------

    def _list(self, stop: threading.Event) -> bool:
        """One complete (paged) list into the sink; False when interrupted by `stop`.

        Each next page is requested as soon as its continue token is read off the head of the page before
        (`_continue_hint`), on a thread of its own: the API server produces it, and TLS decrypts it, while
        this page is decoded. At most two pages are held at once.
        """
        started = time.monotonic()
        nodes: dict[str, Node] = {}
        prints: dict[str, tuple[int, int]] = {}  # of the nodes read from Structs (`_parse_event_node`)
        rv = ""
        token = ""
        fetch = self._fetch_page(token)
        while True:
            try:
                data = fetch.result()
            except _Expired:
                if not token:
                    raise _Failure(Reason.BAD_RESPONSE, "a list without continue token got 410") from None
                log.info("node list continue token expired after %d nodes; restarting the list", len(nodes))
                nodes.clear()
                prints.clear()
                token = ""
                fetch = self._fetch_page(token)
                continue
            hint = _continue_hint(data)
            prefetch = self._fetch_page(hint) if hint else None
            page_prints: dict[str, tuple[int, int]] = {}
            page = self._read_wire_page(data, page_prints)
            if page is None:
                page = self._read_page(data)
            del data  # a page of 500 large nodes is megabytes; keep only the parsed Nodes
            page_nodes, page_rv, token = page
            nodes.update((node.uid, node) for node in page_nodes)
            for node in page_nodes:  # a node listed twice keeps the fingerprint of the entry kept, or none
                prints.pop(node.uid, None)
            prints.update(page_prints)
            rv = page_rv or rv
            if not token:
                break
            if stop.is_set():
                return False
            # The hint is the token, unless the server wrote its list otherwise: then it is fetched now.
            fetch = prefetch if prefetch is not None and hint == token else self._fetch_page(token)
        self._sink.replace_all(list(nodes.values()))
        self._seen = nodes
        self._prints = prints
        self._rv = rv
        if self.synced.is_set():
            self.relists += 1
        self._attempt = 0
        self._status.succeeded(duration=time.monotonic() - started, data_timestamp=time.time())
        self.synced.set()
        return True

    def _fetch_page(self, token: str) -> _PageFetch:
        query = {"limit": str(self._page_size)}
        if token:
            query["continue"] = token
        return _PageFetch(lambda: self._get_body(_NODES_PATH, query))

    def _read_wire_page(self, data: bytes, prints: dict[str, tuple[int, int]]) -> _Page | None:
        """A list page decoded into Structs (`wire.py`); None when msgspec refuses it or one of its nodes is
        invalid, so that `_read_page` reads it again and reports each bad node as it always did. The
        nodes' fingerprints (`_parse_event_node`) go into `prints`."""
        try:
            page = NODE_LIST.decode(data)
            owns = self.shard.owns_uid if self.shard.sharded else None  # unsharded: no hashing at all
            items = [item for item in page.items or () if owns is None or owns(item.uid)]
            nodes = [parse_wire_node(item, self._spot_labels, self._keep_labels) for item in items]
        except Exception:  # msgspec.DecodeError, InvalidNode, or a bug of this path: the general one decides
            return None
        for node, item in zip(nodes, items, strict=True):
            if (fingerprint := _fingerprint(item)) is not None:
                prints[node.uid] = fingerprint
        meta = page.metadata
        return nodes, (meta and meta.resourceVersion) or "", (meta and meta.continue_) or ""

    def _read_page(self, data: bytes) -> _Page:
        """A list page decoded into dicts, each node parsed on its own: a bad one is skipped and counted."""
        page = _decode_object(data, "node list")
        items = page.get("items")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise _Failure(Reason.BAD_RESPONSE, "node list has no items array")
        owns = self.shard.owns if self.shard.sharded else None  # unsharded: no hashing at all
        nodes = [
            node
            for item in items
            if owns is None or owns(item)
            for node in (self._parse(item),)
            if node is not None
        ]
        meta = page.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        return nodes, _str(meta.get("resourceVersion")), _str(meta.get("continue"))

    def _get_object(self, path: str, query: dict[str, str], what: str) -> dict[str, Any]:
        return _decode_object(self._get_body(path, query), what)

    def _get_body(self, path: str, query: dict[str, str]) -> bytes:
        resp = self._get(query, self._request_timeout, path)
        clean = False
        try:
            with _transport_errors(path):
                data = resp.read()
            clean = True
        finally:
            _finish(resp, clean=clean)
        return data

    # -- automatic sharding --------------------------------------------------------------------------------

    def _reshard_due(self) -> bool:
        return time.monotonic() - self._shard_checked >= self._reshard_check_seconds

    def _recheck_shard(self) -> bool:
        """`_read_shard` while watching: a failure keeps the current shard and the watch, and is tried
        again a check interval later."""
        try:
            return self._read_shard()
        except _Failure as e:
            shard = self.shard
            log.warning("automatic sharding: keeping shard %s of %s: %s", shard.index, shard.total, e)
            self._shard_checked = time.monotonic()
            return False

    def _read_shard(self) -> bool:
        """Read this pod and its StatefulSet into `shard`; True when the shard changed."""
        assert self._auto is not None
        namespace, pod_name = self._auto.namespace, self._auto.pod_name
        ordinal = pod_ordinal(pod_name)
        if ordinal is None:
            raise _Failure(
                Reason.CONFIG, f"automatic sharding: pod name {pod_name!r} ends in no StatefulSet ordinal"
            )
        pod_path = f"/api/v1/namespaces/{namespace}/pods/{pod_name}"
        pod = self._get_object(pod_path, {}, f"pod {namespace}/{pod_name}")
        owner = _statefulset_owner(pod)
        if owner is None:
            raise _Failure(
                Reason.CONFIG, f"automatic sharding: pod {namespace}/{pod_name} is owned by no StatefulSet"
            )
        set_path = f"/apis/apps/v1/namespaces/{namespace}/statefulsets/{owner}"
        statefulset = self._get_object(set_path, {}, f"statefulset {namespace}/{owner}")
        spec = statefulset.get("spec")
        replicas = spec.get("replicas", 1) if isinstance(spec, dict) else None  # defaulted to 1 by the API
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            raise _Failure(Reason.BAD_RESPONSE, f"statefulset {namespace}/{owner}: no spec.replicas >= 1")
        if ordinal >= replicas:  # being scaled down: this pod is on its way out
            raise _Failure(
                Reason.CONFIG,
                f"automatic sharding: pod ordinal {ordinal} is not below statefulset {namespace}/{owner}'s "
                f"{replicas} replicas",
            )
        self._shard_checked = time.monotonic()
        shard = Shard(ordinal, replicas)
        if shard == self.shard:
            return False
        log.info("serving shard %d of %d (statefulset %s/%s)", ordinal, replicas, namespace, owner)
        self.shard = shard
        return True

    # -- watch ---------------------------------------------------------------------------------------------

    def _watch(self, stop: threading.Event) -> None:
        """One watch request, streamed until the server ends it; raises on errors, expiry and drops."""
        query = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._watch_timeout),
        }
        if self._rv:
            query["resourceVersion"] = self._rv
        resp = self._get(query, self._watch_timeout + _WATCH_READ_SLACK)
        self._attempt = 0
        self._status.succeeded()
        with self._active_lock:
            self._active = resp
        clean = False
        try:
            if stop.is_set():  # set before _active was visible to _abort_on_stop
                return
            for line in _lines(resp):
                if stop.is_set():
                    return
                if line.strip():
                    self._handle_event(line)
                if self._auto is not None and self._reshard_due() and self._recheck_shard():
                    raise _Resharded
            clean = True
        except HTTPError as e:  # ProtocolError (connection lost mid-stream), ReadTimeoutError
            if not stop.is_set():
                raise _StreamEnded(str(e)) from e
        finally:
            with self._active_lock:
                self._active = None
            _finish(resp, clean=clean)

    def _handle_event(self, line: bytes) -> None:
        """One watch line: decoded into Structs (`wire.py`) when it fits them and its node is valid, else
        by `_handle_raw_event` (ERROR events, odd or invalid nodes), which reports it as it always did."""
        try:
            event = EVENT.decode(line)
        except msgspec.DecodeError:
            self._handle_raw_event(line)
            return
        etype, obj = event.type, event.object
        node = None
        if etype in ("ADDED", "MODIFIED") and self.shard.owns_uid(obj.uid):
            try:
                node = self._parse_event_node(obj)
            except Exception:  # InvalidNode, or a bug of this path: the general one decides and reports
                self._handle_raw_event(line)
                return
        elif etype == "ERROR":
            self._handle_raw_event(line)
            return
        self.events[etype if etype in self.events else "OTHER"] += 1
        self._apply(etype, node, obj.uid)
        rv = obj.metadata.resourceVersion if obj.metadata is not None else None
        if rv:
            self._rv = rv

    def _parse_event_node(self, obj: WireNode) -> Node:
        """`parse_wire_node`, except for a node whose last event (or list entry) held the same labels,
        name, creation time, providerID and OS: what was read from those is kept, and only its capacity is
        read again, or nothing at all when that is the same too. Most MODIFIED events are kubelet status
        updates that change none of it: parsing was most of their cost. What the last one held is kept as
        two 64-bit hashes a node (`_fingerprint`, not its ~1 KB of labels): a change is missed only if its
        hash collides."""
        uid = obj.uid
        fingerprint = _fingerprint(obj)
        previous = self._seen.get(uid) if uid is not None else None
        last = self._prints.get(uid) if uid is not None and previous is not None else None
        if previous is None or fingerprint is None or last is None or last[0] != fingerprint[0]:
            node = parse_wire_node(obj, self._spot_labels, self._keep_labels)
        elif last[1] == fingerprint[1]:
            node = previous
        else:
            assert obj.status is not None  # a fingerprint is taken of a node with a status only
            node = with_capacity(previous, LABELS.decode(obj.status.capacity))
        if uid is not None and fingerprint is not None:
            self._prints[uid] = fingerprint
        return node

    def _handle_raw_event(self, line: bytes) -> None:
        try:
            event = _loads(line)
        except ValueError as e:
            raise _Failure(Reason.BAD_RESPONSE, f"watch event is not JSON: {e}") from e
        etype = event.get("type") if isinstance(event, dict) else None
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(etype, str) or not isinstance(obj, dict):
            raise _Failure(Reason.BAD_RESPONSE, f"watch event without type/object: {line[:200]!r}")
        self.events[etype if etype in self.events else "OTHER"] += 1
        if etype == "ERROR":
            code = obj.get("code")
            message = _str(obj.get("message")) or _str(obj.get("reason"))
            if code == 410:
                raise _Expired(message)
            reason = _http_reason(code) if isinstance(code, int) else Reason.BAD_RESPONSE
            raise _Failure(reason, f"watch error {code}: {message}")
        meta = obj.get("metadata")
        meta = meta if isinstance(meta, dict) else {}
        node = None
        uid = meta.get("uid")
        if isinstance(uid, str):
            self._prints.pop(uid, None)  # its Node, if any, is not from the Structs path
        if etype in ("ADDED", "MODIFIED") and (not self.shard.sharded or self.shard.owns(obj)):
            node = self._parse(obj)
        self._apply(etype, node, uid if isinstance(uid, str) else None)
        rv = meta.get("resourceVersion")
        if isinstance(rv, str) and rv:
            self._rv = rv

    def _apply(self, etype: str, node: Node | None, uid: str | None) -> None:
        """An event's effect on the sink: a new or changed node upserted, a known deleted one deleted."""
        if node is not None and self._seen.get(node.uid) != node:
            self._seen[node.uid] = node
            self._sink.upsert(node)
        elif etype == "DELETED" and uid is not None and self._seen.pop(uid, None) is not None:
            self._prints.pop(uid, None)
            self._sink.delete(uid)

    def _parse(self, obj: Any) -> Node | None:
        try:
            return parse_node(obj, self._spot_labels, self._keep_labels)
        except Exception as e:  # InvalidNode, or a bug: either way only this node is skipped, never relisted
            problem = str(e) if isinstance(e, InvalidNode) else repr(e)
            self._health.invalid("node", describe_node(obj), problem)
            return None


def _statefulset_owner(pod: dict[str, Any]) -> str | None:
    """The name of the StatefulSet in a Pod's `metadata.ownerReferences`, if one owns it."""
    meta = pod.get("metadata")
    owners = meta.get("ownerReferences") if isinstance(meta, dict) else None
    for owner in owners if isinstance(owners, list) else ():
        if isinstance(owner, dict) and owner.get("kind") == "StatefulSet":
            name = owner.get("name")
            if isinstance(name, str) and name:
                return name
    return None


def _decode_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = _loads(data)
    except ValueError as e:
        raise _Failure(Reason.BAD_RESPONSE, f"{what} is not JSON: {e}") from e
    if not isinstance(obj, dict):
        raise _Failure(Reason.BAD_RESPONSE, f"{what} is a JSON {type(obj).__name__}, not an object")
    return obj


def _loads(data: bytes) -> Any:
    """JSON, with orjson (~2x faster than json on 10 KB nodes: the hot path of a list) where it can.

    orjson refuses a lone surrogate escape ("\\udc80") and invalid UTF-8, both of which a Node's strings can
    carry; json reads them (the bytes decoded with U+FFFD for invalid UTF-8), so that one node is parsed
    like any other instead of failing its whole page or event, again on every retry.
    """
    try:
        return orjson.loads(data)
    except ValueError:
        return json.loads(data.decode("utf-8", "replace"))


class _PageFetch:
    """One list page requested on a thread of its own; `result` waits for it (bounded by the request's
    timeout) and returns its body or raises what the request raised."""

    def __init__(self, get: Callable[[], bytes]) -> None:
        self._get = get
        self._done = threading.Event()
        self._data = b""
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="kube-list-page", daemon=True).start()

    def _run(self) -> None:
        try:
            self._data = self._get()
        except BaseException as e:  # handed to the list, which reports it as a synchronous request would
            self._error = e
        finally:
            self._done.set()

    def result(self) -> bytes:
        self._done.wait()
        if self._error is not None:
            raise self._error
        data, self._data = self._data, b""
        return data


def _fingerprint(obj: WireNode) -> tuple[int, int] | None:
    """Hashes of what a node's parse reads besides its capacity, and of its capacity, as sent; None for a
    node without metadata, uid or status (always parsed whole)."""
    metadata, spec, status = obj.metadata, obj.spec, obj.status
    if metadata is None or metadata.uid is None or status is None:
        return None
    info = status.nodeInfo
    facts = (
        bytes(metadata.labels),
        metadata.name,
        metadata.creationTimestamp,
        spec.providerID if spec is not None else None,
        (info.operatingSystem, info.architecture) if info is not None else None,
    )
    return hash(facts), hash(bytes(status.capacity))


def _continue_hint(data: bytes) -> str:
    """The continue token of a list page, read from the head of the page only.

    The API server writes a list's metadata before its items (ListMeta precedes Items in every List type),
    so the token can be read without decoding megabytes of nodes, and the next page requested meanwhile.
    A guess: "" when the head holds none, and `_list` checks it against the decoded page.
    """
    end = data.find(b',"items":')
    if end < 0:
        return ""
    try:
        head = LIST_HEAD.decode(data[:end] + b"}")
    except msgspec.DecodeError:
        return ""
    return (head.metadata and head.metadata.continue_) or ""


def _lines(resp: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    """The body's lines as they arrive, without their newline (msgspec needs none, and `strip` then copies
    nothing): one copy of each 10 KB event where urllib3's own line iteration makes three (~7 µs an event).
    Newlines are found with `find` (memchr): `bytes.split` scans byte by byte, ~4.5 µs a 10 KB event.
    A line longer than _MAX_LINE_BYTES is a broken stream, not a node, and fails the watch."""
    pending: list[bytes] = []  # the start of a line split over chunks
    pending_size = 0
    for chunk in resp.stream(_STREAM_READ):  # the API server sends each event as one HTTP chunk of its own
        end = chunk.find(b"\n")
        if end < 0:
            pending.append(chunk)
            pending_size += len(chunk)
            if pending_size > _MAX_LINE_BYTES:
                raise _Failure(Reason.BAD_RESPONSE, f"watch line longer than {_MAX_LINE_BYTES} bytes")
            continue
        if pending:
            pending.append(chunk[:end])
            yield b"".join(pending)
        else:
            yield chunk[:end]
        start = end + 1
        while (end := chunk.find(b"\n", start)) >= 0:
            yield chunk[start:end]
            start = end + 1
        pending, pending_size = ([chunk[start:]], len(chunk) - start) if start < len(chunk) else ([], 0)
    if pending:
        yield b"".join(pending)


def _finish(resp: urllib3.BaseHTTPResponse, *, clean: bool) -> None:
    """Return the connection to the pool; close it first unless the body was read to its end."""
    if not clean:
        resp.close()
    resp.release_conn()


def _pool_manager(cfg: Any, ca_file: str = "") -> urllib3.PoolManager:
    """A connection pool with the TLS, client certificate and proxy settings of a kubernetes Configuration;
    `ca_file` is trusted besides the cluster's own CA (or the system roots when it names none)."""
    kwargs: dict[str, Any] = {
        "num_pools": 2,
        "maxsize": 2,
        "cert_reqs": "CERT_REQUIRED" if cfg.verify_ssl else "CERT_NONE",
        "ca_certs": cfg.ssl_ca_cert,
        "cert_file": cfg.cert_file,
        "key_file": cfg.key_file,
    }
    if ca_file and cfg.verify_ssl:
        kwargs["ssl_context"] = ssl_context(ca_file, cfg.ssl_ca_cert)
        kwargs["ca_certs"] = None  # already in the context
    if cfg.assert_hostname is not None:
        kwargs["assert_hostname"] = cfg.assert_hostname
    if getattr(cfg, "tls_server_name", None):
        kwargs["server_hostname"] = cfg.tls_server_name
    if cfg.proxy:
        return urllib3.ProxyManager(cfg.proxy, proxy_headers=cfg.proxy_headers, **kwargs)
    return urllib3.PoolManager(**kwargs)


@contextmanager
def _transport_errors(what: str) -> Iterator[None]:
    """urllib3 exceptions → `_Failure` with the reason an operator would act on."""
    try:
        yield
    except NewConnectionError as e:  # before TimeoutError: it subclasses ConnectTimeoutError
        raise _Failure(Reason.UNAVAILABLE, f"{what}: cannot connect: {e}") from e
    except Urllib3Timeout as e:
        raise _Failure(Reason.TIMEOUT, f"{what}: timed out: {e}") from e
    except SSLError as e:  # wrong CA, hostname mismatch: does not heal by retrying
        raise _Failure(Reason.CONFIG, f"{what}: TLS error: {e}") from e
    except (HTTPError, OSError) as e:
        raise _Failure(Reason.UNAVAILABLE, f"{what}: {e}") from e


def _http_reason(code: int) -> Reason:
    reason = _STATUS_REASONS.get(code)
    if reason is not None:
        return reason
    return Reason.UNAVAILABLE if code >= 500 else Reason.BAD_RESPONSE


def _status_message(body: bytes) -> str:
    """The message of a `Status` error body, or the start of whatever else the server sent."""
    try:
        status = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(status, dict) and isinstance(status.get("message"), str):
        return str(status["message"])[:500]
    return body[:200].decode("utf-8", "replace")


def _retry_after(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:  # an HTTP date: rare from the API server, fall back to our own backoff
        return 0.0


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""
