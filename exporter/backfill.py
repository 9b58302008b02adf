"""`node-cost-exporter backfill`: reconciled hourly costs of past days as OpenMetrics, for
`promtool tsdb create-blocks-from openmetrics`, so the estimates Prometheus recorded can be corrected.

For each settled billing day in the range, every hour in which the exporter saw a node gets one sample
of `nodecost_node_reconciled_hourly_cost`: that day's billed cost of the node's resource divided by its
billed hours, where those cover the hours the resource's nodes were seen (the first and last hour seen
may be partial); a day still being filled in for a node is skipped for it.
`sum_over_time(nodecost_node_reconciled_hourly_cost[1d])` is then the node's billed cost of the day.
Node names come from the hours the exporter observed (kept in its SQLite cache for
`presence_retention_days`): run it with the exporter's configuration and cache.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any, TextIO

from exporter.config import ConfigError, load_config
from exporter.metrics.families import escape
from exporter.pricing.sources.billing import BillingSource, midnight

METRIC = "nodecost_node_reconciled_hourly_cost"
HELP = "Billed cost of the node per hour, from the bill of each usable day (backfilled)."


def write_backfill(
    sources: Sequence[BillingSource[Any]], first: date, last: date, out: TextIO, *, now: float | None = None
) -> dict[str, int]:
    """Write the OpenMetrics text for days first..last (inclusive); counts of what was written/skipped."""
    now = time.time() if now is None else now
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    series: dict[tuple[str, str, str], list[tuple[int, float]]] = {}
    counts = {"samples": 0, "incomplete_days": 0, "unbilled_node_days": 0, "unfilled_node_days": 0}
    for source in sources:
        seen = {day: source.presence(day) for day in days}
        resources = sorted({r for names in seen.values() for name, (_, r) in names.items() if name and r})
        if not resources:
            continue
        start = midnight(first)
        bill = source.bill(resources, start, start + timedelta(days=len(days)))
        for day in days:
            if not source.settled(day, now):
                counts["incomplete_days"] += 1
                continue
            day_start = int(midnight(day).timestamp())
            members: dict[str, list[tuple[str, int]]] = {}
            for name, (mask, resource) in seen[day].items():
                if name:
                    members.setdefault(resource, []).append((name, mask))
            for resource, nodes in members.items():
                totals = bill.totals(resource, day)
                if totals is None:
                    counts["unbilled_node_days"] += len(nodes)
                    continue
                # hours seen are whole hours: the first and the last may have been partly lived
                alive = [max(0, mask.bit_count() - 1) for _, mask in nodes]
                for (name, mask), own in zip(nodes, alive, strict=True):
                    share = source.node_day(resource, day, totals, alive, own)
                    if share is None or not share.hours:
                        counts["unfilled_node_days"] += 1
                        continue
                    samples = series.setdefault((name, source.name, source.currency), [])
                    samples += [
                        (day_start + 3600 * h, share.cost / share.hours) for h in range(24) if mask >> h & 1
                    ]
    out.write(f"# HELP {METRIC} {HELP}\n# TYPE {METRIC} gauge\n")
    for (name, source_name, currency), samples in sorted(series.items()):
        labels = f'node="{escape(name)}",source="{source_name}",currency="{currency}"'
        for stamp, value in sorted(samples):
            out.write(f"{METRIC}{{{labels}}} {value!r} {stamp}\n")
            counts["samples"] += 1
    out.write("# EOF\n")
    return counts


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="node-cost-exporter backfill",
        description="Write reconciled hourly node costs of past days as OpenMetrics for promtool.",
    )
    parser.add_argument("--config.file", dest="config_file", help="The exporter's YAML configuration.")
    parser.add_argument("--cache.path", dest="cache_path", help="The exporter's SQLite cache.")
    parser.add_argument("--from", dest="first", required=True, type=_day, help="First UTC day, YYYY-MM-DD.")
    parser.add_argument("--to", dest="last", required=True, type=_day, help="Last UTC day (inclusive).")
    parser.add_argument("--out", required=True, help="Output file ('-' for stdout).")
    args = parser.parse_args(argv)
    if args.last < args.first:
        parser.error("--to is before --from")
    try:
        config = load_config(
            args.config_file, overrides={"cache.path": args.cache_path} if args.cache_path else {}
        )
        if not config.cache.enabled:
            raise ConfigError("cache.enabled", "backfill reads the hours each node was seen from the cache")
        from exporter.app import build_sources
        from exporter.cache import PriceCache
        from exporter.health import Health
        from exporter.pricing.sources.context import SourceContext

        health = Health()
        cache = PriceCache(config.cache.path, health.integration("cache"))
        context = SourceContext(
            health, cache, config.pricing.currency, ca_file=config.tls.ca_file, clouds=config.clouds
        )
        sources = [s for s in build_sources(config, context) if isinstance(s, BillingSource)]
        if not sources:
            raise ConfigError("billing", "enable aws.cur, gcp.bigquery or azure.cost_management to backfill")
    except ConfigError as err:
        print(f"node-cost-exporter backfill: invalid configuration: {err}", file=sys.stderr)
        return 2
    from exporter.pricing.sources.fetch import FetchError

    try:
        if args.out == "-":
            counts = write_backfill(sources, args.first, args.last, sys.stdout)
        else:
            with open(args.out, "w", encoding="utf-8") as out:
                counts = write_backfill(sources, args.first, args.last, out)
    except FetchError as err:
        print(f"node-cost-exporter backfill: {err.reason.value}: {err.detail}", file=sys.stderr)
        return 1
    print(
        f"wrote {counts['samples']} samples; skipped {counts['incomplete_days']} days not settled yet, "
        f"{counts['unbilled_node_days']} node-days not on the bill and {counts['unfilled_node_days']} "
        "node-days the bill has not filled in yet",
        file=sys.stderr,
    )
    return 0


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a YYYY-MM-DD day") from err
