"""`node-cost-exporter snapshot`: write the offline price table from the live shelf sources.

Air-gapped clusters cannot reach the clouds' price lists, so their operators run this where there is
internet, for the regions and types they use, and ship the CSV as `pricing.offline.file`.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter.config import Config, ConfigError, load_config
from exporter.health import Health
from exporter.inventory.node import CapacityType, Node, ProviderRef
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.offline import COLUMNS
from exporter.pricing.sources.registry import registered
from exporter.pricing.sources.shelf import ShelfSource

log = logging.getLogger(__name__)

# Where each provider's rows come from, as written in the table's `source` column.
ORIGINS = {
    "aws": "AWS Price List Query API (pricing:GetProducts)",
    "gcp": "Google Cloud Billing Catalog API (services/6F81-5844-456A/skus)",
    "azure": "Azure Retail Prices API (api/retail/prices)",
}
LIST_PRICES = {"aws": "aws.pricing", "gcp": "gcp.catalog", "azure": "azure.retail"}  # provider → source


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="node-cost-exporter snapshot",
        description="Write on-demand list prices for the given regions and types as an offline price table.",
    )
    parser.add_argument(
        "--config.file", dest="config_file", help="YAML config (endpoints, credentials, currency)."
    )
    parser.add_argument("--provider", required=True, choices=sorted(ORIGINS))
    parser.add_argument("--regions", required=True, help="Comma-separated regions, e.g. us-east-1,eu-west-1.")
    parser.add_argument(
        "--types", required=True, help="Comma-separated instance types, e.g. m5.large,m6i.xlarge."
    )
    parser.add_argument("--os", default="linux", choices=["linux", "windows"])
    parser.add_argument("--out", required=True, help="CSV to write; existing rows for other keys are kept.")
    return parser


def shelf_source(config: Config, provider: str, health: Health) -> ShelfSource[Any]:
    """The provider's on-demand list-price source, enabled whatever the config says, with no cache."""
    key = LIST_PRICES[provider]
    settings = dataclasses.replace(config.sources[key], enabled=True)
    context = SourceContext(
        health, None, config.pricing.currency, ca_file=config.tls.ca_file, clouds=config.clouds
    )
    source = registered(key).build(settings, context)
    assert isinstance(source, ShelfSource)
    return source


def template_node(provider: str, region: str, instance_type: str, os: str) -> Node:
    """A node of that shape, as the shelf sources key it (on-demand, no GPUs beyond the type's own)."""
    name = f"snapshot-{provider}-{region}-{instance_type}"
    return Node(
        name=name,
        uid=name,
        provider_id="",
        ref=ProviderRef(provider),
        instance_type=instance_type,
        region=region,
        zone="",
        capacity_type=CapacityType.ON_DEMAND,
        os=os,
        arch="",
        cpu_cores=0.0,
        memory_bytes=0,
        gpu_count=0,
        gpu_model="",
    )


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        config = load_config(args.config_file)
        source = shelf_source(config, args.provider, Health())
    except ConfigError as err:
        print(f"node-cost-exporter snapshot: invalid configuration: {err}", file=sys.stderr)
        return 2
    if args.provider == "aws" and config.pricing.currency != "USD":
        print(
            f"node-cost-exporter snapshot: invalid configuration: pricing.currency: AWS publishes prices "
            f"in USD only (got {config.pricing.currency})",
            file=sys.stderr,
        )
        return 2
    regions = [r.strip() for r in args.regions.split(",") if r.strip()]
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    nodes = [template_node(args.provider, region, t, args.os) for region in regions for t in types]
    source.wanted(nodes)
    source.refresh()
    if not source.status.up:
        print(f"node-cost-exporter snapshot: {source.name} failed: {source.status.detail}", file=sys.stderr)
        return 1
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    rows: dict[tuple[str, str, str, str], dict[str, str]] = _existing(Path(args.out))
    missing = []
    for node in nodes:
        quote = source.quote(node)
        if quote is None:
            missing.append(f"{node.region}/{node.instance_type}")
            continue
        rows[(args.provider, node.region, node.instance_type, args.os)] = {
            "provider": args.provider,
            "region": node.region,
            "instance_type": node.instance_type,
            "os": args.os,
            "hourly": format(quote.hourly.normalize(), "f"),
            "currency": quote.currency,
            "as_of": today,
            "source": ORIGINS[args.provider],
            "notes": "node-cost-exporter snapshot",
        }
    with open(args.out, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*COLUMNS, "notes"])
        writer.writeheader()
        writer.writerows(rows[key] for key in sorted(rows))
    for item in missing:
        print(f"node-cost-exporter snapshot: no {args.os} on-demand price for {item}", file=sys.stderr)
    print(f"wrote {len(nodes) - len(missing)} prices to {args.out}", file=sys.stderr)
    return 0


def _existing(path: Path) -> dict[tuple[str, str, str, str], dict[str, str]]:
    if not path.exists():
        return {}
    with path.open(encoding="utf-8", newline="") as handle:
        return {(r["provider"], r["region"], r["instance_type"], r["os"]): r for r in csv.DictReader(handle)}
