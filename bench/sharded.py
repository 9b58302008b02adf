"""The sharded benchmark (report §10): R exporter replicas, each exporting its shard of one big cluster.

One fake API process holds N nodes (65,000 by default: GKE's limit per cluster) and serves HTTPS; R exporter
processes run in-cluster against it as §1's does, replica k with `--shard k --total-shards R`. Two cores
cannot host R replicas each decoding ~650 MB of list JSON at once and still give per-replica figures worth
reading, so the replicas start ONE AFTER ANOTHER: each is measured (ready, memory, /metrics against a static
copy of its body) while the earlier ones idle on their watch. Then the union of every replica's
`nodecost_node_info` is checked against the fake's nodes, one replica is killed (SIGKILL), a node of its
shard is added and one deleted while it is down, and after its restart the union is checked again.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.cluster import node_object
from bench.live import (
    Latency,
    StartRun,
    compare,
    few_scrapes,
    https_fake,
    in_cluster_env,
    memory_of,
    start_exporter,
    static_twin,
)
from bench.procs import BenchError, Child, cpu_seconds, get
from exporter.inventory.sharding import shard_of

SHARDED_NODES = 65_000
REPLICAS = 4
REQUESTS = 30  # timed /metrics rounds per replica (fewer than §3's 50: four replicas to measure)
# The `node` label of a `nodecost_node_info` sample. A label starts after `{` or `,`; inside a value a quote
# is always escaped, so `,node="` cannot occur there.
_INFO_NODE = re.compile(rb'^nodecost_node_info\{(?:[^\n]*?,)?node="([^"\n]*)"', re.MULTILINE)


@dataclass
class Replica:
    shard: int
    start: StartRun  # its `info_lines` are the nodes it exports
    cpu: float  # the exporter's CPU seconds from its start to ready
    fake_cpu: float  # the fake API's CPU seconds meanwhile (serving that list, on the other core)
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)  # checkpoint → (VmRSS, VmHWM)
    scrapes: dict[str, Latency] = field(default_factory=dict)  # "ours plain", "static gzip", …

    @property
    def peak(self) -> int:
        """VmHWM at the last checkpoint: the peak so far."""
        return list(self.memory.values())[-1][1]


@dataclass
class UnionCheck:
    """The replicas' `nodecost_node_info` node names against the fake's: each must appear exactly once."""

    expected: int  # nodes the fake holds
    samples: int  # `nodecost_node_info` samples over all replicas
    duplicates: list[str]  # exported by more than one replica (or twice by one)
    missing: list[str]  # held by the fake, exported by none
    unexpected: list[str]  # exported, not held by the fake (e.g. a deleted node)

    @property
    def exact(self) -> bool:
        return not (self.duplicates or self.missing or self.unexpected)


@dataclass
class Restart:
    replica: Replica  # the restarted replica's figures
    added: str  # a node of its shard added while it was down
    deleted: str  # a node of its shard deleted while it was down
    union: UnionCheck  # once it is ready again, against the fake's nodes (`added` in, `deleted` out)


@dataclass
class ShardedResult:
    n: int
    replicas: list[Replica]
    union: UnionCheck
    restart: Restart
    requests: int
    load_seconds: float  # fake start → READY: building and serializing the N nodes
    seconds: float  # the whole run
    log_lines: list[str]  # warnings and errors the replicas logged, "shard k: line"

    @property
    def all_replicas(self) -> list[Replica]:
        """Every replica measured, the restarted one too: the targets hold for each."""
        return [*self.replicas, self.restart.replica]


def info_nodes(body: bytes) -> Iterator[str]:
    """The `node` label of each `nodecost_node_info` sample of a text exposition body."""
    for match in _INFO_NODE.finditer(body):
        yield match.group(1).decode()


def check_union(bodies: Iterable[bytes], expected: Iterable[str]) -> UnionCheck:
    """Counts names only (one body at a time when `bodies` is lazy), never whole parsed samples."""
    counts: Counter[str] = Counter()
    for body in bodies:
        counts.update(info_nodes(body))
    wanted = set(expected)
    return UnionCheck(
        expected=len(wanted),
        samples=sum(counts.values()),
        duplicates=sorted(name for name, count in counts.items() if count > 1),
        missing=sorted(wanted - counts.keys()),
        unexpected=sorted(counts.keys() - wanted),
    )


def run_sharded(
    n: int = SHARDED_NODES, replicas: int = REPLICAS, *, workdir: Path, requests: int = REQUESTS
) -> ShardedResult:
    started = time.monotonic()
    fake, account = https_fake(n, workdir, "fake.log")
    running: dict[int, tuple[Child, int]] = {}  # shard → (exporter, its port)
    try:
        api_port = int(fake.expect("READY", timeout=600)[0])
        load_seconds = time.monotonic() - started
        env = in_cluster_env(api_port, account)
        measured = []
        for shard in range(replicas):
            replica = _start_replica(fake, env, workdir, running, shard, replicas, f"exporter-{shard}")
            _measure_scrapes(replica, *running[shard], workdir / f"shard-{shard}", requests)
            measured.append(replica)
        union = check_union(_bodies(running), _fake_names(fake, workdir))
        restart = _restart(fake, env, workdir, running, replicas // 2, n)
    finally:
        for exporter, _ in running.values():
            exporter.close()
        fake.close()
    log_lines = [
        f"{log.stem}: {line}"
        for log in sorted(workdir.glob("exporter-*.log"))
        for line in log.read_text().splitlines()
        if "level=info" not in line
    ]
    return ShardedResult(
        n, measured, union, restart, requests, load_seconds, time.monotonic() - started, log_lines
    )


def _start_replica(
    fake: Child,
    env: dict[str, str],
    workdir: Path,
    running: dict[int, tuple[Child, int]],
    shard: int,
    replicas: int,
    name: str,
) -> Replica:
    """Replica `shard` started (into `running`, which the caller closes) and waited for until ready; its
    memory then and after a few scrapes."""
    args = ["--shard", str(shard), "--total-shards", str(replicas)]
    fake_before = cpu_seconds(fake.pid)
    exporter, port, run = start_exporter(fake, args, env, workdir / f"{name}.log", None)
    running[shard] = (exporter, port)
    replica = Replica(shard, run, cpu_seconds(exporter.pid), cpu_seconds(fake.pid) - fake_before)
    replica.memory["ready"] = memory_of(exporter)
    few_scrapes(port, run.info_lines)
    replica.memory["few scrapes"] = memory_of(exporter)
    return replica


def _measure_scrapes(replica: Replica, exporter: Child, port: int, workdir: Path, requests: int) -> None:
    """§3's comparison with a static copy of the replica's bodies; its memory after."""
    workdir.mkdir()
    with static_twin(port, workdir, replica.start.info_lines) as static_port:
        replica.scrapes = compare(port, static_port, requests)
    replica.memory["scrapes"] = memory_of(exporter)


def _bodies(running: dict[int, tuple[Child, int]]) -> Iterator[bytes]:
    """Each replica's plain /metrics body in turn, fetched as needed."""
    for shard, (_, port) in sorted(running.items()):
        status, body = get(port, "/metrics", timeout=60)
        if status != 200:
            raise BenchError(f"shard {shard}: /metrics answered HTTP {status}")
        yield body


def _fake_names(fake: Child, workdir: Path) -> list[str]:
    """The names of the nodes the fake holds now."""
    path = workdir / "names.txt"
    count = int(fake.ask(f"names {path}", "NAMES", timeout=60)[0])
    names = path.read_text().splitlines()
    if len(names) != count:
        raise BenchError(f"the fake wrote {len(names)} names, not {count}")
    return names


def _restart(
    fake: Child,
    env: dict[str, str],
    workdir: Path,
    running: dict[int, tuple[Child, int]],
    shard: int,
    n: int,
) -> Restart:
    """SIGKILL replica `shard`; while it is down the cluster gains and loses a node of its shard; start it
    again and check the union against the fake's nodes once it is ready."""
    total = len(running)
    exporter, _ = running.pop(shard)
    exporter.proc.send_signal(signal.SIGKILL)
    exporter.proc.wait(timeout=10)
    exporter.close()
    added = fake.ask(f"add {_index_in_shard(n, shard, total)}", "ADDED", timeout=30)[0]
    deleted = node_object(_index_in_shard(0, shard, total))["metadata"]["name"]
    fake.ask(f"delete {deleted}", "DELETED", timeout=30)
    replica = _start_replica(fake, env, workdir, running, shard, total, f"exporter-{shard}-restarted")
    names = _fake_names(fake, workdir)
    if added not in names or deleted in names:
        raise BenchError(f"the fake's nodes do not show {added} added and {deleted} deleted")
    return Restart(replica, added, deleted, check_union(_bodies(running), names))


def _index_in_shard(first: int, shard: int, total: int) -> int:
    """The first benchmark node index from `first` on whose node falls in `shard`."""
    i = first
    while shard_of(node_object(i)["metadata"]["uid"], total) != shard:
        i += 1
    return i
