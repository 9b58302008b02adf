"""One scrape body: the store's cached node section, then the small live section, in either format."""

from __future__ import annotations

from prometheus_client import exposition, openmetrics
from prometheus_client.registry import CollectorRegistry

from exporter.metrics.store import NodeMetricsStore

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def wants_openmetrics(accept: str) -> bool:
    return "application/openmetrics-text" in accept


def wants_gzip(accept_encoding: str) -> bool:
    return any(part.split(";")[0].strip() == "gzip" for part in accept_encoding.split(","))


def render(
    store: NodeMetricsStore, registry: CollectorRegistry, *, openmetrics_format: bool, gzipped: bool
) -> tuple[bytes, str]:
    """The body and its content type."""
    if openmetrics_format:
        live = openmetrics.exposition.generate_latest(registry)  # type: ignore[no-untyped-call]
    else:
        live = exposition.generate_latest(registry)
    if gzipped:
        body = store.gzip_body(openmetrics=openmetrics_format, tail=live)
    else:
        body = store.body(openmetrics=openmetrics_format) + live
    return body, OPENMETRICS_TYPE if openmetrics_format else TEXT_TYPE
