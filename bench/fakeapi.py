"""The fake Kubernetes API in a process of its own, so the exporter's CPU and RSS are measured alone.

`python -m bench.fakeapi --nodes N --token T [--tls CERT KEY]` loads the benchmark cluster, listens on
127.0.0.1 (HTTPS with that certificate and key when `--tls` is given, as a real API server; plain HTTP
otherwise) and prints `READY <port>`. It then obeys one command per stdin line and answers one stdout
line each:

- `list_started`           → `LIST_STARTED <unix time> <count>`: when the latest full list began (its first
  page request, one without `continue`, arrived; -1 if none yet) and how many full lists began so far
- `prepare <K> <kind>`     → `PREPARED <K>`: pre-serialize K MODIFIED events (`capacity` or `heartbeat`), so
  the push measures the exporter rather than the fake's deepcopy + json.dumps (~350 µs a 10 KB node)
- `push`                   → `PUSHED <start> <end>`: write the prepared events into the open watch stream
- `add <i>`                → `ADDED <name>`: add the cluster's node i (one beyond N), an ADDED event
- `delete <name>`          → `DELETED <name>`: delete that node, a DELETED event
- `names <file>`           → `NAMES <count>`: write the names of the nodes it holds now to a file, one a line
- `quit` (or end of stdin) → exit

The nodes are held as their JSON bytes only (`FakeKubeAPI.load(…, bytes_only=True)`): 65,000 of them are
~650 MB that way, several GB more with their dicts. Building them costs ~130 µs a node (~8.5 s at 65,000).
Prepared events carry the resource versions the fake gives them at push time, so the fake's history stays
consistent for a watch that resumes. The fake's stored objects are not updated by a push; nothing relists.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from bench.cluster import event_line, node_object, touch_capacity, touch_heartbeat
from fakes.kube_api import NODES_PATH, FakeKubeAPI, RecordedRequest


class _TimedRequests(list[RecordedRequest]):
    """The fake's request log, also noting when the latest full list began (time.time() on arrival)."""

    list_started: float = -1.0
    lists: int = 0

    def append(self, record: RecordedRequest) -> None:
        if record.path == NODES_PATH and not record.is_watch and "continue" not in record.query:
            self.list_started = time.time()
            self.lists += 1
        super().append(record)


def _prepare(api: FakeKubeAPI, count: int, kind: str, current: dict[str, dict[str, Any]]) -> list[bytes]:
    """Event lines editing each node's latest pushed state (`current`, updated here), so a heartbeat after
    a capacity change keeps the capacity and really is an unchanged Node to the watcher."""
    touch = {"capacity": touch_capacity, "heartbeat": touch_heartbeat}[kind]
    names = api.node_names()
    base = api.resource_version
    lines = []
    for j in range(count):
        name = names[j % len(names)]
        obj = current.get(name)
        if obj is None:
            obj = current[name] = api.node(name)
        touch(obj, base + j + 1)
        obj["metadata"]["resourceVersion"] = str(base + j + 1)
        lines.append(event_line("MODIFIED", obj))
    return lines


def _push(api: FakeKubeAPI, lines: list[bytes]) -> None:
    for line in lines:
        api.advance_rv(1)  # the version this event carries (see _prepare)
        api.send_raw_event(line)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fakeapi")
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS with these PEM files")
    args = parser.parse_args()
    requests = _TimedRequests()
    tls = (args.tls[0], args.tls[1]) if args.tls else None
    api = FakeKubeAPI(token=args.token, requests=requests, tls=tls)
    api.load((node_object(i) for i in range(args.nodes)), bytes_only=True)
    api.start()
    print(f"READY {api.port}", flush=True)
    prepared: list[bytes] = []
    current: dict[str, dict[str, Any]] = {}  # name → the object as last pushed (the fake's copy is not)
    try:
        for command in sys.stdin:
            words = command.split()
            if not words or words[0] == "quit":
                break
            if words[0] == "list_started":
                print(f"LIST_STARTED {requests.list_started!r} {requests.lists}", flush=True)
            elif words[0] == "prepare":
                prepared = _prepare(api, int(words[1]), words[2], current)
                print(f"PREPARED {len(prepared)}", flush=True)
            elif words[0] == "push":
                start = time.time()
                _push(api, prepared)
                print(f"PUSHED {start!r} {time.time()!r}", flush=True)
                prepared = []
            elif words[0] == "add":
                obj = node_object(int(words[1]))
                api.add_node(obj)
                print(f"ADDED {obj['metadata']['name']}", flush=True)
            elif words[0] == "delete":
                api.delete_node(words[1])
                print(f"DELETED {words[1]}", flush=True)
            elif words[0] == "names":
                names = api.node_names()
                Path(words[1]).write_text("".join(f"{name}\n" for name in names))
                print(f"NAMES {len(names)}", flush=True)
            else:
                print(f"ERROR unknown command {words[0]!r}", flush=True)
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
