"""`python -m bench`: every benchmark, in one run, into docs/performance.md.

Per size: the live measurements first (fake API and exporter in their own processes, this one idle), then
the in-process ones. Defaults take a few minutes on 2 cores; `--sizes` and the other options are for quicker
runs while working on the suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.billing import run_billing
from bench.cluster import describe_mix
from bench.decode import run_decode
from bench.inproc import InprocResult, run_inproc
from bench.live import LiveResult, run_live
from bench.prices import run_prices
from bench.procs import REPO
from bench.report import Machine, disturbed, render_report
from bench.sharded import REPLICAS, SHARDED_NODES, ShardedResult, run_sharded

DEFAULT_COMMAND = "python3 scripts/uv.py run --frozen --all-extras python -m bench"


def _sizes(text: str) -> list[int]:
    sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("expected positive node counts, e.g. 1000,5000,15000")
    return sizes


def _run(args: list[str], *, strip: bool = True) -> str:
    try:
        out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.strip() if strip else out


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _memory_total() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    return "unknown"


def _commit() -> str:
    """The commit, and which files outside bench/ and docs/ differ from it (they change what is measured)."""
    commit = _run(["git", "rev-parse", "--short", "HEAD"]) or "unknown commit"
    status = _run(["git", "status", "--porcelain", "-z"], strip=False)  # "XY path\0" entries
    entries = iter(status.split("\0"))
    dirty = []
    for entry in entries:
        if len(entry) > 3:
            dirty.append(entry[3:])
            if entry[0] in "RC":  # a rename or copy: the next entry is the original path
                next(entries, None)
    if not dirty:
        return f"commit {commit}"
    code = [path for path in dirty if not path.startswith(("bench/", "docs/"))]
    if not code:
        return f"commit {commit} (uncommitted changes to bench/ and docs/ only)"
    shown = ", ".join(f"`{path}`" for path in code[:8]) + (
        f" and {len(code) - 8} more" if len(code) > 8 else ""
    )
    return f"commit {commit} with uncommitted changes to {shown}"


def _cpu_clock() -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and its reaped children).

    Every child of a size is reaped before the size ends, so the difference of the two over a size is the
    CPU time other processes took meanwhile: work that competed with the measurements.
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    own = os.times()
    return (
        (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"),
        own.user + own.system + own.children_user + own.children_system,
    )


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=_sizes, default=[1000, 5000, 15000], help="node counts (1000,5000,15000)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md", help="report file")
    parser.add_argument("--events", type=int, default=5000, help="MODIFIED events per measurement (5000)")
    parser.add_argument(
        "--event-rounds",
        type=int,
        default=3,
        help="pushes of each kind of MODIFIED event per size; the median one is reported (3)",
    )
    parser.add_argument(
        "--starts", type=int, default=3, help="exporter starts per size for start to ready (3)"
    )
    parser.add_argument("--requests", type=int, default=50, help="timed /metrics requests per server (50)")
    parser.add_argument(
        "--sharded-nodes",
        type=int,
        default=SHARDED_NODES,
        help=f"nodes of the sharded benchmark, after the sizes ({SHARDED_NODES}; 0 skips it)",
    )
    parser.add_argument(
        "--replicas", type=int, default=REPLICAS, help=f"replicas of the sharded benchmark ({REPLICAS})"
    )
    args = parser.parse_args(argv)
    if args.events < 1000 or args.event_rounds < 1 or args.starts < 1 or args.requests < 30:
        parser.error("need --events ≥ 1000, --event-rounds ≥ 1, --starts ≥ 1 and --requests ≥ 30")
    if args.sharded_nodes < 0 or args.replicas < 2:
        parser.error("need --sharded-nodes ≥ 0 and --replicas ≥ 2")

    started = time.monotonic()
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    live: list[LiveResult] = []
    inproc: list[InprocResult] = []
    others: list[tuple[int, float, float]] = []  # (size, CPU s other processes used, wall s of the size)
    with tempfile.TemporaryDirectory(prefix="nodecost-bench-") as tmp:
        for k, n in enumerate(args.sizes):
            workdir = Path(tmp) / str(n)
            workdir.mkdir()
            busy_before, own_before = _cpu_clock()
            wall_before = time.monotonic()
            _log(f"{n:,} nodes: exporter and fake API processes")
            result = run_live(
                n,
                workdir,
                starts=args.starts,
                events=args.events,
                rounds=args.event_rounds,
                requests=args.requests,
                probe=k == 0,
            )
            live.append(result)
            _log(
                f"{n:,} nodes: ready {result.starts[-1].after_api:.2f} s after the API answered; "
                f"peak RSS {result.memory['end'][1] / 2**20:.1f} MiB (in-cluster)"
            )
            kube = result.kubeconfig
            if kube is not None:
                _log(
                    f"{n:,} nodes: kubeconfig mode ready {kube.start.to_ready:.2f} s after start;"
                    f" VmHWM {kube.memory['few scrapes'][1] / 2**20:.1f} MiB after a few scrapes"
                )
            _log(f"{n:,} nodes: in-process events and scrape comparison")
            inproc.append(run_inproc(n, events=args.events))
            busy, own = _cpu_clock()
            foreign = max(0.0, (busy - busy_before) - (own - own_before))
            others.append((n, foreign, time.monotonic() - wall_before))
            if disturbed(foreign, others[-1][2]):
                _log(f"{n:,} nodes: other processes used {foreign:.1f} CPU s meanwhile: figures may be off")
        sharded: ShardedResult | None = None
        if args.sharded_nodes:
            _log(f"{args.sharded_nodes:,} nodes over {args.replicas} replicas, started one after another")
            workdir = Path(tmp) / "sharded"
            workdir.mkdir()
            sharded = run_sharded(args.sharded_nodes, args.replicas, workdir=workdir)
            worst = max(sharded.all_replicas, key=lambda r: r.start.after_api)
            _log(
                f"sharded: worst ready {worst.start.after_api:.2f} s after its list began"
                f" (shard {worst.shard}); union exact: {sharded.union.exact},"
                f" after a restart: {sharded.restart.union.exact}"
            )

    _log("cloud price sources: cold start and warm restart against the fakes")
    prices = run_prices()
    _log("billing refresh at 15,000 nodes against the Athena fake")
    billing = run_billing()
    _log(f"list decode at {max(args.sizes):,} nodes: json, orjson, msgspec")
    decode = run_decode(max(args.sizes))

    command = DEFAULT_COMMAND + "".join(
        f" {flag} {shlex.quote(str(value))}"
        for flag, value, default in (
            ("--sizes", ",".join(map(str, args.sizes)), "1000,5000,15000"),
            ("--events", args.events, 5000),
            ("--event-rounds", args.event_rounds, 3),
            ("--starts", args.starts, 3),
            ("--requests", args.requests, 50),
            ("--sharded-nodes", args.sharded_nodes, SHARDED_NODES),
            ("--replicas", args.replicas, REPLICAS),
        )
        if str(value) != str(default)
    )
    out: Path = args.out
    if out.resolve() != (REPO / "docs" / "performance.md").resolve():
        command += f" --out {shlex.quote(str(args.out))}"
    machine = Machine(
        command=command,
        date=date,
        nproc=_run(["nproc"]) or "?",
        cpu=_cpu_model(),
        memory=_memory_total(),
        python=f"{platform.python_implementation()} {platform.python_version()}",
        kernel=platform.release(),
        commit=_commit(),
        mix=describe_mix(max(args.sizes)),
        duration=time.monotonic() - started,
        others=others,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(machine, live, inproc, prices, billing, decode, sharded))
    _log(f"wrote {out} in {machine.duration:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
