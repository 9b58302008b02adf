"""One scrape body: the store's cached node section, then the small live section, in either format."""

from __future__ import annotations

import functools
import math

from prometheus_client.registry import CollectorRegistry

from exporter.inventory.parse import utf8_safe
from exporter.metrics.live import SAMPLE_SUFFIX, Labels, LiveCollector, LiveRegistry
from exporter.metrics.store import NodeMetricsStore

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def wants_openmetrics(accept: str) -> bool:
    return "application/openmetrics-text" in accept


def wants_gzip(accept_encoding: str) -> bool:
    """gzip when the client lists it with a weight above 0 (`gzip;q=0` refuses it); a bare `*` does not
    count, so a client that never named gzip keeps getting plain text."""
    for part in accept_encoding.split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        if coding.lower() == "gzip":
            return all(_weight(param) > 0 for param in params)
    return False


def _weight(param: str) -> float:
    """A parameter's q value; 1 for other parameters, 0 for an unreadable q (the client meant to limit)."""
    name, _, value = param.partition("=")
    if name.strip().lower() != "q":
        return 1.0
    try:
        return float(value)
    except ValueError:
        return 0.0


def render(
    store: NodeMetricsStore, registry: CollectorRegistry, *, openmetrics_format: bool, gzipped: bool
) -> tuple[list[bytes], str]:
    """The body as chunks to write in order, and its content type."""
    live = format_registry(registry, openmetrics=openmetrics_format)
    if gzipped:
        chunks = store.gzip_body(openmetrics=openmetrics_format, tail=live)
    else:
        chunks = [*store.body(openmetrics=openmetrics_format), live]
    return chunks, OPENMETRICS_TYPE if openmetrics_format else TEXT_TYPE


def format_registry(registry: CollectorRegistry, *, openmetrics: bool) -> bytes:
    """The live section: a few dozen gauges, counters and infos, written out directly.

    prometheus_client's generate_latest spends ~0.2 ms on validation and name handling for these few
    samples: more than serving the whole cached node section, so it would dominate a scrape. The families
    of a `LiveCollector` are written from their plain values; any other collector's from its Metrics.
    """
    out: list[str] = []
    collectors = registry.collectors() if isinstance(registry, LiveRegistry) else [registry]
    for collector in collectors:
        if isinstance(collector, LiveCollector):
            for family in collector.families():
                out.append(_header(family.name, family.kind, family.help, openmetrics))
                name = family.name + SAMPLE_SUFFIX[family.kind]
                for labels, value in family.samples:
                    _sample(out, name, labels, value)
        else:
            for metric in collector.collect():
                out.append(_header(metric.name, metric.type, metric.documentation, openmetrics))
                for sample in metric.samples:
                    _sample(out, sample.name, tuple(sample.labels.items()), sample.value)
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode()


def _sample(out: list[str], name: str, labels: Labels, value: float) -> None:
    number = repr(float(value)) if math.isfinite(value) else _special(value)
    if labels:
        text = ",".join([f'{k}="{_escape(v)}"' for k, v in labels])
        out.append(f"{name}{{{text}}} {number}\n")
    else:
        out.append(f"{name} {number}\n")


@functools.lru_cache(maxsize=256)
def _header(name: str, kind: str, documentation: str, openmetrics: bool) -> str:
    """HELP and TYPE lines; the same few dozen on every scrape, so made once."""
    if not openmetrics and kind in ("counter", "info"):
        name, kind = (f"{name}_total", kind) if kind == "counter" else (f"{name}_info", "gauge")
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


def _escape(value: str) -> str:
    """A label value as the text formats require; a lone surrogate becomes U+FFFD, as the body is UTF-8."""
    return utf8_safe(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _special(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"
