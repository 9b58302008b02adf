"""`python -m bench`: every benchmark, in one run, into docs/performance.md.

Per size: the live measurements first (fake API and exporter in their own processes, this one idle), then
the in-process ones. Defaults take a few minutes on 2 cores; `--sizes` and the other options are for quicker
runs while working on the suite.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.cluster import describe_mix
from bench.inproc import InprocResult, run_inproc
from bench.live import LiveResult, run_live
from bench.procs import REPO
from bench.report import Machine, render_report

DEFAULT_COMMAND = "uv run --frozen --extra dev python -m bench"


def _sizes(text: str) -> list[int]:
    sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("expected positive node counts, e.g. 1000,5000,15000")
    return sizes


def _run(args: list[str]) -> str:
    try:
        return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


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
    commit = _run(["git", "rev-parse", "--short", "HEAD"]) or "unknown commit"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return f"commit {commit}" + (" with uncommitted changes" if dirty else "")


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
        "--starts", type=int, default=3, help="exporter starts per size for start to ready (3)"
    )
    parser.add_argument("--requests", type=int, default=50, help="timed /metrics requests per server (50)")
    args = parser.parse_args(argv)
    if args.events < 1000 or args.starts < 1 or args.requests < 30:
        parser.error("need --events ≥ 1000, --starts ≥ 1 and --requests ≥ 30")

    started = time.monotonic()
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    live: list[LiveResult] = []
    inproc: list[InprocResult] = []
    with tempfile.TemporaryDirectory(prefix="nodecost-bench-") as tmp:
        for k, n in enumerate(args.sizes):
            workdir = Path(tmp) / str(n)
            workdir.mkdir()
            _log(f"{n:,} nodes: exporter and fake API processes")
            result = run_live(
                n, workdir, starts=args.starts, events=args.events, requests=args.requests, probe=k == 0
            )
            live.append(result)
            _log(
                f"{n:,} nodes: ready {result.starts[-1].after_api:.2f} s after the API answered; "
                f"peak RSS {result.memory['end'][1] / 2**20:.1f} MiB"
            )
            _log(f"{n:,} nodes: in-process events and scrape comparison")
            inproc.append(run_inproc(n, workdir, events=args.events))

    command = DEFAULT_COMMAND + "".join(
        f" {flag} {shlex.quote(str(value))}"
        for flag, value, default in (
            ("--sizes", ",".join(map(str, args.sizes)), "1000,5000,15000"),
            ("--events", args.events, 5000),
            ("--starts", args.starts, 3),
            ("--requests", args.requests, 50),
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
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(machine, live, inproc))
    _log(f"wrote {out} in {machine.duration:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
