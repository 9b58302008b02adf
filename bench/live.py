"""Measurements of the real exporter process against the fake API in another process (1, 2b, 3 and 5).

Per size, first the way the exporter runs in production, **in-cluster over HTTPS**: one fake API process
holding N nodes behind a self-signed certificate for 127.0.0.1; a service-account directory holding that
certificate as `ca.crt` and the bench token as `token`; the exporter started with KUBERNETES_SERVICE_HOST/PORT
pointing at the fake, NODECOST_KUBERNETES__SERVICE_ACCOUNT_DIR at that directory and no `--kubeconfig`. It
is started `starts` times (start to ready is the noisiest figure, so its median is reported); the last one
then serves a few scrapes, the scrape benchmark against a static baseline server, takes K MODIFIED events
through its watch, and has its memory read from /proc along the way.

Then, for comparison only, one **out-of-cluster (kubeconfig)** start against a plain-HTTP fake: the
laptop/offline way, which loads the kubeconfig through the `kubernetes` package. Only start to ready and
memory (after ready, after the same few scrapes) are measured there. The bench process itself only sleeps,
polls and reads responses meanwhile.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import HOST, BenchError, Child, free_port, get, proc_status, timed_get
from fakes.kube_api import write_kubeconfig
from fakes.server import self_signed_cert

TOKEN = "bench-token"
INFO = b"nodecost_node_info{"
MODIFIED = b'nodecost_kubernetes_watch_events_total{type="MODIFIED"} '
CPU_POLL_INTERVAL = 0.002  # how often the exporter's CPU clock is read while events flow
IDLE_AFTER = 0.03  # its CPU clock still this long: the events are applied (then a scrape confirms)
IDLE_CPU = 0.0002  # CPU seconds a reading may move and still count as still (a timer thread's wake-up)
FEW_SCRAPES = 3  # plain and gzip requests each for the "after a few scrapes" memory checkpoint
_ENCODINGS: dict[str, dict[str, str]] = {"plain": {}, "gzip": {"Accept-Encoding": "gzip"}}
_GZIP = _ENCODINGS["gzip"]


@dataclass
class StartRun:
    to_ready: float  # process start → /readyz 200
    after_api: float  # the fake received the first list request → /readyz 200
    lists: int  # full lists the exporter made before ready (1 unless it had to retry)
    info_lines: int  # nodecost_node_info samples on /metrics right after ready


@dataclass
class Latency:
    median: float
    p90: float
    size: int  # body bytes

    @classmethod
    def of(cls, seconds: list[float], size: int) -> Latency:
        ordered = sorted(seconds)
        return cls(statistics.median(ordered), ordered[max(0, -(-len(ordered) * 9 // 10) - 1)], size)


EVENT_KINDS = ("capacity", "heartbeat")


@dataclass
class EventRun:
    kind: str
    events: int
    seconds: float  # fake starts pushing → the counter on /metrics shows all events
    cpu_seconds: float  # exporter CPU over the same span
    polls: int

    @property
    def per_event(self) -> float:
        return self.seconds / self.events


@dataclass
class Probe:
    ready: bool
    cloud_modules: list[str]  # boto3/botocore/google.cloud/azure modules found in sys.modules
    kubernetes: bool  # the kubernetes package is imported (in-cluster it must not be)
    modules: int  # len(sys.modules)


@dataclass
class KubeconfigRun:
    """One out-of-cluster start (plain HTTP + kubeconfig, which imports `kubernetes`)."""

    start: StartRun
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)  # "ready", "few scrapes"


# The App as the exporter builds it in a pod (its environment carries KUBERNETES_SERVICE_HOST/PORT and
# NODECOST_KUBERNETES__SERVICE_ACCOUNT_DIR, no kubeconfig), against the HTTPS fake API; once ready, prints
# which cloud SDKs and whether the kubernetes package got imported.
PROBE = """
import os, sys, threading, time
from exporter.app import App
from exporter.config import load_config
app = App(load_config(None, env=dict(os.environ), overrides={"cache.enabled": False}))
stop = threading.Event()
app.start(stop)
deadline = time.monotonic() + 120
while not app.ready() and time.monotonic() < deadline:
    time.sleep(0.05)
heavy = sorted({".".join(m.split(".")[:2]) if m.startswith(("google.", "azure.")) else m.split(".")[0]
                for m in sys.modules if m.startswith(("boto3", "botocore", "google.cloud", "azure."))})
print("PROBE", int(app.ready()), ",".join(heavy) or "-", int("kubernetes" in sys.modules), len(sys.modules),
      flush=True)
stop.set()
"""


@dataclass
class LiveResult:
    n: int
    starts: list[StartRun] = field(default_factory=list)
    scrapes: dict[str, Latency] = field(default_factory=dict)  # "ours plain", "static gzip", …
    scrape_requests: int = 0
    # Back-to-back requests without quick ACKs: "ours /readyz", "static gzip", … → median seconds
    back_to_back: dict[str, float] = field(default_factory=dict)
    events: list[EventRun] = field(default_factory=list)  # every push, in the order pushed
    # checkpoint ("ready", "few scrapes", "scrapes", "end") → (VmRSS, VmHWM)
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)  # warnings and errors the exporter logged
    probe: Probe | None = None
    kubeconfig: KubeconfigRun | None = None

    def rounds(self, kind: str) -> list[EventRun]:
        """The pushes of one kind of event, in the order pushed."""
        return [e for e in self.events if e.kind == kind]

    def event_median(self, kind: str) -> EventRun:
        """The push of that kind whose wall time per event is the median (the lower middle of an even count):
        one slow minute of a shared machine moves one push, not the figure."""
        ordered = sorted(self.rounds(kind), key=lambda e: e.per_event)
        return ordered[(len(ordered) - 1) // 2]


def https_fake(n: int, workdir: Path, log: str) -> tuple[Child, Path]:
    """The fake API process over HTTPS with n nodes (still loading), and the service-account directory
    that trusts its certificate: what an in-cluster exporter is given."""
    cert, key = self_signed_cert(workdir)
    account = service_account(workdir / "serviceaccount", cert)
    fake = Child(
        "fake API (HTTPS)",
        ["-m", "bench.fakeapi", "--nodes", str(n), "--token", TOKEN, "--tls", cert, key],
        log=workdir / log,
    )
    return fake, account


def run_live(
    n: int, workdir: Path, *, starts: int, events: int, rounds: int, requests: int, probe: bool
) -> LiveResult:
    result = LiveResult(n)
    fake, account = https_fake(n, workdir, "fake-https.log")
    exporter: Child | None = None
    try:
        api_port = int(fake.expect("READY", timeout=300)[0])
        env = in_cluster_env(api_port, account)
        for k in range(starts):
            if exporter is not None:
                exporter.close()
            exporter, port, run = start_exporter(fake, [], env, workdir / f"exporter-{k}.log", n)
            result.starts.append(run)
        assert exporter is not None
        result.memory["ready"] = memory_of(exporter)
        few_scrapes(port, n)
        result.memory["few scrapes"] = memory_of(exporter)
        result.scrapes, result.back_to_back = _scrapes(exporter, port, workdir, n, requests)
        result.scrape_requests = requests
        result.memory["scrapes"] = memory_of(exporter)
        for _ in range(rounds):
            for kind in EVENT_KINDS:
                result.events.append(_events(fake, exporter, port, kind, events))
        result.memory["end"] = memory_of(exporter)
        exporter.close()
        exporter = None
        if probe:
            result.probe = _probe(env, workdir / "probe.log")
    finally:
        if exporter is not None:
            exporter.close()
        fake.close()
    result.kubeconfig = _kubeconfig_run(n, workdir)
    for log in sorted(workdir.glob("exporter-*.log")):
        result.log_lines += [line for line in log.read_text().splitlines() if "level=info" not in line]
    return result


def service_account(directory: Path, ca: str) -> Path:
    """What the kubelet mounts in a pod: the cluster CA and the pod's bearer token."""
    directory.mkdir()
    (directory / "ca.crt").write_bytes(Path(ca).read_bytes())
    (directory / "token").write_text(TOKEN + "\n")
    return directory


def in_cluster_env(api_port: int, account: Path) -> dict[str, str]:
    """A pod's environment as far as the exporter looks: the API service address and our service-account
    directory (the exporter's `kubernetes.service_account_dir`, set through its environment)."""
    return {
        "KUBERNETES_SERVICE_HOST": HOST,
        "KUBERNETES_SERVICE_PORT": str(api_port),
        "NODECOST_KUBERNETES__SERVICE_ACCOUNT_DIR": str(account),
    }


def _kubeconfig_run(n: int, workdir: Path) -> KubeconfigRun:
    """One start the old way: plain-HTTP fake, `--kubeconfig` (loaded by the kubernetes package)."""
    fake = Child(
        "fake API (HTTP)",
        ["-m", "bench.fakeapi", "--nodes", str(n), "--token", TOKEN],
        log=workdir / "fake-http.log",
    )
    exporter: Child | None = None
    try:
        api_port = int(fake.expect("READY", timeout=300)[0])
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", f"http://{HOST}:{api_port}", TOKEN)
        exporter, port, start = start_exporter(
            fake, ["--kubeconfig", str(kubeconfig)], {}, workdir / "exporter-kubeconfig.log", n
        )
        run = KubeconfigRun(start)
        run.memory["ready"] = memory_of(exporter)
        few_scrapes(port, n)
        run.memory["few scrapes"] = memory_of(exporter)
        return run
    finally:
        if exporter is not None:
            exporter.close()
        fake.close()


def few_scrapes(port: int, n: int) -> None:
    """FEW_SCRAPES plain and gzip scrapes on one kept-alive connection: both cached bodies exist after."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        for _ in range(FEW_SCRAPES):
            for headers in _ENCODINGS.values():
                _, body = timed_get(conn, "/metrics", headers)
                if headers:
                    body = gzip.decompress(body)
                if count_lines(body, INFO) != n:
                    raise BenchError(f"/metrics body has {count_lines(body, INFO)} node info lines, not {n}")
    finally:
        conn.close()


def memory_of(exporter: Child) -> tuple[int, int]:
    status = proc_status(exporter.pid)
    return status["VmRSS"], status["VmHWM"]


def _probe(env: dict[str, str], log: Path) -> Probe:
    child = Child("import probe", ["-c", PROBE], log=log, env=env)
    try:
        ready, heavy, kubernetes, modules = child.expect("PROBE", timeout=180)
    finally:
        child.close()
    return Probe(ready == "1", [] if heavy == "-" else heavy.split(","), kubernetes == "1", int(modules))


def start_exporter(
    fake: Child, mode_args: list[str], env: dict[str, str], log: Path, n: int | None
) -> tuple[Child, int, StartRun]:
    """`python -m exporter [mode_args] --no-cache …` with `env`, waited for until ready and checked to
    show `n` nodes (a shard's count is not known beforehand: None takes what it shows)."""
    lists_before = int(fake.ask("list_started", "LIST_STARTED", 10)[1])
    port = free_port()
    args = ["-m", "exporter", *mode_args, "--no-cache"]
    args += ["--web.listen-address", f"{HOST}:{port}", "--log.level", "warn"]
    exporter = Child("exporter", args, log=log, pipe_stdout=False, env=env)
    try:
        ready = _wait_ready(exporter, port, log, timeout=180)
        listed, lists = fake.ask("list_started", "LIST_STARTED", 10)
        status, body = get(port, "/metrics")
        if status != 200:
            raise BenchError(f"/metrics answered HTTP {status}")
        run = StartRun(
            to_ready=ready - exporter.started,
            after_api=ready - float(listed),
            lists=int(lists) - lists_before,
            info_lines=count_lines(body, INFO),
        )
        if n is not None and run.info_lines != n:
            raise BenchError(f"/metrics has {run.info_lines} nodecost_node_info lines after ready, not {n}")
    except BaseException:
        exporter.close()
        raise
    return exporter, port, run


def _wait_ready(exporter: Child, port: int, log: Path, timeout: float) -> float:
    """time.time() when /readyz first answered 200 (polled every 10 ms).

    On one kept-alive connection, as a kubelet's probe is cheap: a new connection per poll cost the
    exporter ~1 ms of CPU each (accept, set-up, close), ~10 % of a core taken from the list being timed.
    """
    deadline = time.monotonic() + timeout
    conn: http.client.HTTPConnection | None = None
    try:
        while time.monotonic() < deadline:
            if exporter.proc.poll() is not None:
                code, tail = exporter.proc.returncode, log.read_text()[-2000:]
                raise BenchError(f"exporter exited with {code}: {tail}")
            try:
                conn = conn or http.client.HTTPConnection(HOST, port, timeout=5)
                conn.request("GET", "/readyz")
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    return time.time()
            except (OSError, http.client.HTTPException):  # not listening yet, or the connection was closed
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.01)
    finally:
        if conn is not None:
            conn.close()
    raise BenchError(f"exporter not ready within {timeout:.0f} s")


def count_lines(body: bytes, prefix: bytes) -> int:
    return body.count(b"\n" + prefix) + body.startswith(prefix)


def _scrapes(
    exporter: Child, port: int, workdir: Path, n: int, requests: int
) -> tuple[dict[str, Latency], dict[str, float]]:
    """Ours vs the same bytes served statically, plain and gzip; then the back-to-back check."""
    with static_twin(port, workdir, n) as static_port:
        latencies = compare(port, static_port, requests)
        ports = {"ours": port, "static": static_port}
        stalls = {
            f"{server} {what}": _back_to_back(p, path, headers)
            for what, path, headers in (("/readyz", "/readyz", {}), ("gzip", "/metrics", _GZIP))
            for server, p in ports.items()
        }
    return latencies, stalls


@contextlib.contextmanager
def static_twin(port: int, workdir: Path, n: int) -> Iterator[int]:
    """The baseline server, its port: it serves the exact plain and gzip `/metrics` bodies the exporter on
    `port` answered just now (checked to hold `n` nodes), kept in `workdir`."""
    plain_file, gzip_file = workdir / "metrics.txt", workdir / "metrics.txt.gz"
    plain_file.write_bytes(get(port, "/metrics")[1])
    gzip_file.write_bytes(get(port, "/metrics", headers={"Accept-Encoding": "gzip"})[1])
    for body in (plain_file.read_bytes(), gzip.decompress(gzip_file.read_bytes())):
        if count_lines(body, INFO) != n:
            raise BenchError(f"/metrics body has {count_lines(body, INFO)} node info lines, not {n}")
    static = Child("static server", ["-m", "bench.staticserver", str(plain_file), str(gzip_file)])
    try:
        yield int(static.expect("READY", timeout=60)[0])
    finally:
        static.close()


def compare(port: int, static_port: int, requests: int) -> dict[str, Latency]:
    """Interleaved rounds, one request per server and encoding each; the client ACKs promptly."""
    # One kept-alive connection per server and encoding, so each connection's TCP state depends only on
    # its own traffic, the same for ours and the baseline.
    conns = {
        f"{server} {enc}": http.client.HTTPConnection(HOST, p, timeout=60)
        for enc in _ENCODINGS
        for server, p in (("ours", port), ("static", static_port))
    }
    samples: dict[str, list[float]] = {key: [] for key in conns}
    sizes: dict[str, int] = {}
    try:
        for round_ in range(5 + requests):  # 5 warm-up rounds
            for key, conn in conns.items():
                elapsed, body = timed_get(conn, "/metrics", _ENCODINGS[key.split()[1]])
                if round_ >= 5:
                    samples[key].append(elapsed)
                    sizes[key] = len(body)
    finally:
        for conn in conns.values():
            conn.close()
    return {key: Latency.of(values, sizes[key]) for key, values in samples.items()}


def _back_to_back(port: int, path: str, headers: dict[str, str], requests: int = 15) -> float:
    """Median seconds of back-to-back requests on one connection, the client ACKing as the kernel likes."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        times = [timed_get(conn, path, headers, quickack=False)[0] for _ in range(3 + requests)]
    finally:
        conn.close()
    return statistics.median(times[3:])


def _watch_count(conn: http.client.HTTPConnection) -> int:
    """The MODIFIED counter, from a gzipped scrape as Prometheus makes it: a plain one (12 MB at 15,000 nodes)
    cost the exporter ~5 ms of CPU each, a tenth of the events' own time when polled every 25 ms."""
    _, body = timed_get(conn, "/metrics", _GZIP)
    body = gzip.decompress(body)
    at = body.rfind(MODIFIED)
    if at < 0:
        raise BenchError("no MODIFIED watch event counter on /metrics")
    end = body.index(b"\n", at)
    return int(float(body[at + len(MODIFIED) : end]))


def _events(fake: Child, exporter: Child, port: int, kind: str, count: int) -> EventRun:
    """The fake pushes `count` pre-serialized MODIFIED events; the time until the exporter has applied them.

    The end is where the exporter's CPU clock (read from outside, in ns) stops moving for IDLE_AFTER, then
    confirmed by one scrape showing the counter at its target; scraping meanwhile would have cost the
    exporter more than the events (a scrape of 12 MB every 25 ms is ~20 % of a core). If the scrape shows
    fewer events (a pause in the middle), it waits again.
    """
    fake.ask(f"prepare {count} {kind}", "PREPARED", timeout=300)
    clock = _cpu_clock(exporter.pid)
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        target = _watch_count(conn) + count
        cpu_before = time.clock_gettime(clock)
        pushed_at = float(fake.ask("push", "PUSHED", timeout=120)[0])
        polls = 0
        last_cpu, last_busy = time.clock_gettime(clock), time.time()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(CPU_POLL_INTERVAL)
            cpu, now = time.clock_gettime(clock), time.time()
            if cpu - last_cpu > IDLE_CPU:
                last_cpu, last_busy = cpu, now
                continue
            if now - last_busy < IDLE_AFTER:
                continue
            polls += 1
            if _watch_count(conn) >= target:
                return EventRun(kind, count, last_busy - pushed_at, last_cpu - cpu_before, polls)
            last_cpu, last_busy = time.clock_gettime(clock), time.time()
        raise BenchError(f"the exporter did not count {count} {kind} events within 300 s")
    finally:
        conn.close()


def _cpu_clock(pid: int) -> int:
    """The clock id of another process' CPU time (Linux: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED))."""
    return ((~pid) << 3) | 2
