"""Command line: Prometheus-style flags over the YAML config; `node-cost-exporter` serves until stopped."""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from exporter import __version__
from exporter.config import Config, ConfigError, load_config

log = logging.getLogger("exporter")

# How long a shutdown waits for the worker threads to end before closing the cache anyway (a second
# signal stops the wait at once); well under the 5 s a clean exit must take, and Kubernetes' 30 s grace.
SHUTDOWN_GRACE_SECONDS = 3.0

# flag → dotted config key; flags win over environment, which wins over the file.
FLAGS: dict[str, tuple[str, str]] = {
    "--web.listen-address": (
        "web.listen_address",
        "Address to listen on, [host]:port (default :9798; 127.0.0.1:9798 with --demo).",
    ),
    "--web.telemetry-path": ("web.telemetry_path", "Path under which to expose metrics (default /metrics)."),
    "--log.level": ("log.level", "debug, info, warn or error (default info)."),
    "--log.format": ("log.format", "logfmt or json (default logfmt)."),
    "--log.level-sdk": (
        "log.level_sdk",
        "Level of the cloud SDKs' and HTTP libraries' own lines (default warn): their debug lines carry "
        "signed requests; credentials are masked anyway.",
    ),
    "--kubeconfig": ("kubernetes.kubeconfig", "Kubeconfig file (default: in-cluster, then KUBECONFIG)."),
    "--nodes-file": (
        "kubernetes.nodes_file",
        "Read `kubectl get nodes -o json` output instead of a cluster.",
    ),
    "--shard": ("sharding.shard", "This replica's shard, 0-based (default 0)."),
    "--total-shards": ("sharding.total_shards", "Number of shards; 1 serves every node (default 1)."),
    "--pod": (
        "sharding.pod",
        "Automatic sharding: this pod's name (default: the hostname); needs --pod-namespace.",
    ),
    "--pod-namespace": (
        "sharding.pod_namespace",
        "Automatic sharding in a StatefulSet: the shard is this pod's ordinal, the total its replicas.",
    ),
    "--cache.path": ("cache.path", "SQLite cache file."),
    "--pricing.custom-file": ("pricing.custom.file", "Custom price table (YAML or CSV)."),
}

WHOLE_NUMBER_FLAGS = {"--shard", "--total-shards"}

# Shown by --help; each has its own (`node-cost-exporter snapshot --help`).
SUBCOMMANDS = """subcommands (node-cost-exporter <subcommand> --help for their flags):
  snapshot  write an offline price table (CSV) from the live cloud price lists, for air-gapped clusters
  backfill  write reconciled hourly node costs of past days from the bill as OpenMetrics, for promtool"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="node-cost-exporter",
        description="Prometheus exporter of what each Kubernetes node costs, hour by hour.",
        epilog=SUBCOMMANDS
        + "\n\nEnvironment: NODECOST_<SECTION>__<KEY>=value overrides the file (NODECOST_LOG__LEVEL=debug).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config.file", dest="config_file", help="YAML configuration file.")
    for flag, (key, text) in FLAGS.items():
        parser.add_argument(flag, dest=key, help=text, type=int if flag in WHOLE_NUMBER_FLAGS else str)
    parser.add_argument("--no-cache", dest="no_cache", action="store_true", help="Disable the SQLite cache.")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="Built-in nodes of all three clouds priced from the bundled table: no cluster, no cloud. "
        "Listens on 127.0.0.1:9798 unless --web.listen-address (or the config) says otherwise.",
    )
    parser.add_argument("--version", action="version", version=f"node-cost-exporter {__version__}")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {
        key: getattr(args, key) for key, _ in FLAGS.values() if getattr(args, key) not in (None, "")
    }
    if args.no_cache:
        overrides["cache.enabled"] = False
    if args.demo:
        overrides["demo"] = True
    return load_config(args.config_file, overrides=overrides)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["snapshot"]:
        from exporter.snapshot import main as snapshot

        return snapshot(argv[1:])
    if argv[:1] == ["backfill"]:
        from exporter.backfill import main as backfill

        return backfill(argv[1:])
    args = parse_args(argv)
    try:
        config = build_config(args)
    except ConfigError as err:
        print(f"node-cost-exporter: invalid configuration: {err}", file=sys.stderr)
        return 2
    from exporter.logs import setup_logging

    setup_logging(config.log.level, config.log.format, config.log.level_sdk)
    from exporter.allocator import tune_malloc

    tune_malloc()  # before any thread
    from exporter.app import App
    from exporter.http import serve

    try:
        app = App(config)
    except ConfigError as err:
        log.error("invalid configuration: %s", err)
        return 2
    signals = _Signals()
    host, _, port = config.web.listen_address.rpartition(":")
    try:
        server = serve(app, host.strip("[]"), int(port))
    except OSError as err:
        log.error("cannot listen on %s: %s", config.web.listen_address, err)
        return 1
    stop = threading.Event()
    app.start(stop)
    log.info("node-cost-exporter %s started%s", __version__, " in demo mode" if config.demo else "")
    signals.wait(1)
    log.info("shutting down")
    stop.set()
    server.shutdown()
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    while app.running() and signals.received < 2 and (left := deadline - time.monotonic()) > 0:
        signals.wait(2, min(left, 0.1))
    app.close()
    # Exit here, not through the interpreter's shutdown: it joins the price fetch pools' workers, which may
    # sit in a cloud call until its deadline, and restores the default signal handlers, so that a late
    # signal would kill a process that already shut down cleanly. The cache is closed and every log line
    # written: nothing is left to flush.
    logging.shutdown()
    os._exit(0)


class _Signals:
    """SIGTERM and SIGINT, counted for the main thread to act on.

    The handler runs on the main thread between any two bytecodes, possibly while that thread holds a lock
    (an Event's, a logging handler's): so it only counts, and takes no lock. The main thread waits on the
    wakeup pipe the interpreter writes each signal to, not on an Event the handler would have to set.
    """

    def __init__(self) -> None:
        self.received = 0
        self._read, write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)  # full: already readable, wakes the wait
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self.received += 1

    def wait(self, count: int, timeout: float | None = None) -> None:
        """Until `count` signals have been received in all, or `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.received < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            select.select([self._read], [], [], left)
            with suppress(BlockingIOError):
                os.read(self._read, 512)
