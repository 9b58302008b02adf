"""The node metric families, in the manner of kube-state-metrics' family generators.

A family is one entry of `NODE_FAMILIES`: its header (name, type, help, label names) and a small pure
function from (node, price) to its samples, as (label values, value) pairs in label order. Adding a
metric is one entry here plus its row in docs/metrics.md (tests/test_metrics_docs.py checks both agree).
The list's order is the exposition's order. Rendering runs on every watch event that changes a node, so a
family turns samples into text with one format string prepared when it is declared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from exporter.config import tag_label
from exporter.inventory.node import Node
from exporter.inventory.parse import utf8_safe
from exporter.pricing.quote import NodePrice

# Longer label values (label garbage) are cut, so a scrape-side limit never rejects the whole target.
MAX_LABEL_VALUE = 512

Sample = tuple[tuple[str, ...], float | Decimal]
"""One series of a family for one node: its label values (in the family's label order) and its value, a
float or a price as the engine computed it (a Decimal, written as the float nearest it)."""
ValueFunction = Callable[..., Sequence[Sample]]
"""(node, price) → samples; with `Family.with_reason`, (node, price, why it is unpriced: "" if priced)."""


def escape(value: str) -> str:
    """A label value as the text formats require, cut to MAX_LABEL_VALUE characters first; a lone surrogate
    (from a price list or bill, say) becomes U+FFFD, as the body must be UTF-8."""
    if len(value) > MAX_LABEL_VALUE:
        value = value[:MAX_LABEL_VALUE]
    value = utf8_safe(value)
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _escaped(values: tuple[str, ...]) -> Sequence[str]:
    """A sample's label values escaped; checked all at once, as nearly every sample needs no change."""
    joined = "".join(values)
    if (
        len(joined) <= MAX_LABEL_VALUE
        and joined.isascii()
        and not ("\\" in joined or "\n" in joined or '"' in joined)
    ):
        return values
    return [escape(value) for value in values]


def _value_text(value: float | Decimal) -> str:
    """A sample value as written: Python's shortest repr of the float (of the float nearest a Decimal).

    Prices repeat across the nodes of a type and from event to event, and converting and writing one took
    ~1.3 µs, so a Decimal's text is remembered (up to _MAX_REMEMBERED values, then forgotten at once).
    Zero is not: 0 and -0 are equal Decimals but different floats.
    """
    if not isinstance(value, Decimal):
        return repr(value)
    text = _TEXT_OF.get(value) if value else None
    if text is None:
        text = repr(float(value))
        if value:
            if len(_TEXT_OF) >= _MAX_REMEMBERED:
                _TEXT_OF.clear()
            _TEXT_OF[value] = text
    return text


_TEXT_OF: dict[Decimal, str] = {}
_MAX_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class Family:
    """One node metric family: what its header says and the pure function that gives its samples."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...]
    samples: ValueFunction  # pure: → this family's samples, () when it has none
    with_reason: bool = False  # samples also takes why the node is unpriced
    # 'name{label="%s",…} %s\n', built once: a line is then one %-format of the escaped values.
    _line: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        labels = ",".join(f'{label}="%s"' for label in self.labels)
        object.__setattr__(self, "_line", f"{self.name}{{{labels}}} %s\n")

    def render(self, node: Node, price: NodePrice | None, why: str = "") -> bytes:
        """This family's lines for one node; b"" when the node has no sample in it."""
        samples = self.samples(node, price, why) if self.with_reason else self.samples(node, price)
        if not samples:
            return b""
        line = self._line
        if len(samples) == 1:  # nearly every family: no list to build and join
            values, value = samples[0]
            return (line % (*_escaped(values), _value_text(value))).encode()
        return "".join([line % (*_escaped(values), _value_text(value)) for values, value in samples]).encode()

    def header(self, *, openmetrics: bool) -> bytes:
        """HELP and TYPE lines; OpenMetrics names a `_info` gauge as an info family without the suffix."""
        name, kind = self.name, self.type
        if openmetrics and name.endswith("_info"):
            name, kind = name[: -len("_info")], "info"
        return f"# HELP {name} {self.help}\n# TYPE {name} {kind}\n".encode()


# The value functions of NODE_FAMILIES, in its order: pure, () where the node has no sample in the family.


def _info(node: Node, price: NodePrice | None) -> Sequence[Sample]:
    facts = (
        node.name,
        node.provider,
        node.instance_type,
        node.capacity_type.value,
        node.region,
        node.zone,
        node.provider_id,
        node.os,
        node.arch,
        node.gpu_model,
    )
    return ((facts, 1.0),)


def _hourly(node: Node, price: NodePrice | None) -> Sequence[Sample]:
    if price is None:
        return ()
    return (((node.name, price.source, price.basis.value, price.currency), price.hourly),)


def _list_hourly(node: Node, price: NodePrice | None) -> Sequence[Sample]:
    if price is None or price.list_hourly is None:
        return ()
    return (((node.name, price.list_source, price.currency), price.list_hourly),)


def _cpu_core(node: Node, price: NodePrice | None) -> Sequence[Sample]:
    if price is None or price.cpu_core_hourly is None:
        return ()
    return (((node.name, price.source, price.currency), price.cpu_core_hourly),)


def _memory_gib(node: Node, price: NodePrice | None) -> Sequence[Sample]:
    if price is None or price.memory_gib_hourly is None:
        return ()
    return (((node.name, price.source, price.currency), price.memory_gib_hourly),)


def _gpu(node: Node, price: NodePrice | None) -> Sequence[Sample]:
    if price is None or price.gpu_hourly is None:
        return ()
    return (((node.name, price.source, price.currency), price.gpu_hourly),)


def _unpriced(node: Node, price: NodePrice | None, why: str = "") -> Sequence[Sample]:
    return (((node.name, why), 1.0),) if price is None else ()


def _billed_daily(node: Node, price: NodePrice | None) -> Sequence[Sample]:
    if price is None or price.billed is None:
        return ()
    billed = price.billed
    return [
        ((node.name, day, billed.source, price.currency), cost)
        for day, cost in zip(billed.day_names, billed.day_costs, strict=True)
    ]


def _network(node: Node, price: NodePrice | None) -> Sequence[Sample]:
    billed = price.billed if price is not None else None
    if price is None or billed is None or billed.network_hourly is None:
        return ()
    return (((node.name, billed.source, price.currency), billed.network_hourly),)


def _coverage(node: Node, price: NodePrice | None) -> Sequence[Sample]:
    billed = price.billed if price is not None else None
    if billed is None or billed.coverage is None:
        return ()
    return (((node.name,), billed.coverage),)


NODE_FAMILIES: tuple[Family, ...] = (
    Family(
        "nodecost_node_info",
        "gauge",
        "Node facts used for pricing; value is always 1.",
        (
            "node",
            "provider",
            "instance_type",
            "capacity_type",
            "topology_region",
            "topology_zone",
            "provider_id",
            "os",
            "arch",
            "gpu_model",
        ),
        _info,
    ),
    Family(
        "nodecost_node_hourly_cost",
        "gauge",
        "Hourly cost of the node in the currency label, after any configured discount.",
        ("node", "source", "price_basis", "currency"),
        _hourly,
    ),
    Family(
        "nodecost_node_list_hourly_cost",
        "gauge",
        "On-demand list price of the node's type per hour, before discount; what spot or billed prices "
        "save on.",
        ("node", "source", "currency"),
        _list_hourly,
    ),
    Family(
        "nodecost_node_cpu_core_hourly_cost",
        "gauge",
        "Hourly cost of one CPU core of the node.",
        ("node", "source", "currency"),
        _cpu_core,
    ),
    Family(
        "nodecost_node_memory_gibibyte_hourly_cost",
        "gauge",
        "Hourly cost of one GiB of the node's memory.",
        ("node", "source", "currency"),
        _memory_gib,
    ),
    Family(
        "nodecost_node_gpu_hourly_cost",
        "gauge",
        "Hourly cost of one GPU of the node (GPU nodes only).",
        ("node", "source", "currency"),
        _gpu,
    ),
    Family(
        "nodecost_node_unpriced",
        "gauge",
        "1 for a node no price source could price (no cost series for it).",
        ("node", "reason"),
        _unpriced,
        with_reason=True,
    ),
    Family(
        "nodecost_node_billed_daily_cost",
        "gauge",
        "Billed cost of the node on each complete UTC day its billed rate averages: final, reconciled "
        "figures.",
        ("node", "day", "source", "currency"),
        _billed_daily,
    ),
    Family(
        "nodecost_node_network_hourly_cost",
        "gauge",
        "Network (data transfer) cost the bill attributes to the node, per billed hour.",
        ("node", "source", "currency"),
        _network,
    ),
    Family(
        "nodecost_node_commitment_coverage_ratio",
        "gauge",
        "Share (0-1) of the node's billed usage over its billed days that a commitment covered: a reserved "
        "instance, savings plan, committed use discount or reservation.",
        ("node",),
        _coverage,
    ),
)


def billing_tags_family(keys: tuple[str, ...]) -> Family:
    """The billing tags info family for the configured allowlist: one `tag_<key>` label per key.

    Built at start from the configuration, so it is not in NODE_FAMILIES; the store puts it last.
    """

    def tags(node: Node, price: NodePrice | None) -> Sequence[Sample]:
        billed = price.billed.tags if price is not None and price.billed is not None else ()
        values = tuple(node.labels.get(key) or _tag(billed, key) for key in keys)
        return (((node.name, *values), 1.0),) if any(values) else ()

    return Family(
        "nodecost_node_billing_tags_info",
        "gauge",
        "Allowlisted billing tags of the node's cloud resource, one tag_<key> label each; a Kubernetes "
        "node label of the same key wins. Value is always 1.",
        ("node", *(tag_label(key) for key in keys)),
        tags,
    )


def _tag(tags: tuple[tuple[str, str], ...], key: str) -> str:
    """The value of `key` among a bill's few (key, value) tags, "" if absent: no dict built per call."""
    for name, value in tags:
        if name == key:
            return value
    return ""
