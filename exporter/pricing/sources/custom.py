"""The user's own price table (YAML or CSV): negotiated rates, on-prem hardware, anything a cloud won't say.

Rules are tried in file order and the first match wins, like a routing table: put specific rules first.
A rule matches on any of instance_type, region, provider, capacity_type and a label selector (all given
conditions must hold), and prices either the whole node (`hourly`) or per unit (`cpu_core_hourly`,
`memory_gib_hourly`, `gpu_hourly`, multiplied by the node's capacity) — the per-unit form is how on-prem
nodes are priced. The file is re-read when it changes; a broken edit keeps the last good table in use.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from exporter.clock import SYSTEM_CLOCK, Clock
from exporter.health import IntegrationStatus, Reason
from exporter.inventory.node import Node
from exporter.pricing.money import parse_money
from exporter.pricing.quote import Basis, Quote

_MATCH_FIELDS = ("instance_type", "region", "provider", "capacity_type")
_PRICE_FIELDS = ("hourly", "cpu_core_hourly", "memory_gib_hourly", "gpu_hourly")


class CustomTableError(ValueError):
    """A rule the table cannot use; the message names the file and the rule."""


@dataclass(frozen=True, slots=True)
class Rule:
    match: tuple[tuple[str, str], ...]  # (field, value) pairs on Node attributes
    selector: tuple[tuple[str, str], ...]  # (label, value) pairs
    hourly: Decimal | None
    cpu_core_hourly: Decimal | None
    memory_gib_hourly: Decimal | None
    gpu_hourly: Decimal | None

    def matches(self, node: Node) -> bool:
        return all(str(getattr(node, f)) == v for f, v in self.match) and all(
            node.labels.get(k) == v for k, v in self.selector
        )

    def quote(self, node: Node, currency: str) -> Quote:
        if self.hourly is not None:
            return Quote(
                self.hourly,
                currency,
                Basis.CUSTOM,
                self.cpu_core_hourly,
                self.memory_gib_hourly,
                self.gpu_hourly,
            )
        cpu = self.cpu_core_hourly or Decimal(0)
        mem = self.memory_gib_hourly or Decimal(0)
        gpu = self.gpu_hourly or Decimal(0)
        total = (
            cpu * Decimal(str(node.cpu_cores))
            + mem * Decimal(node.memory_bytes) / Decimal(2**30)
            + gpu * node.gpu_count
        )
        return Quote(total, currency, Basis.CUSTOM, cpu, mem, gpu if node.gpu_count else None)


class CustomPrices:
    name = "custom"
    kind = "custom"

    def __init__(
        self,
        path: str,
        status: IntegrationStatus,
        currency: str,
        reload_interval: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        """`reload_interval`: how often the scheduler checks the file; `clock`: what the status is stamped
        with."""
        self.refresh_interval_seconds: float | None = reload_interval
        self._clock = clock
        self._path = path
        self._status = status
        self._currency = currency
        self._stamp = _stamp(path)
        self._rules = read_rules(path)
        status.succeeded(now=clock.time())

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def quote(self, node: Node) -> Quote | None:
        for rule in self._rules:
            if rule.matches(node):
                return rule.quote(node, self._currency)
        return None

    def wanted(self, nodes: Iterable[Node]) -> None:
        """The table is local: nothing to fetch."""

    def pending(self) -> bool:
        return False

    def refresh(self) -> bool:
        """Re-read the file when its mtime or size changed; keep the last good rules on a bad edit."""
        now = self._clock.time()
        try:
            stamp = _stamp(self._path)
        except OSError as err:
            self._status.failed(Reason.NOT_FOUND, f"{self._path}: {err.strerror}", now=now)
            return False
        if stamp == self._stamp and self._status.up:
            self._status.succeeded(now=now)
            return False
        try:
            rules = read_rules(self._path)
        except (OSError, CustomTableError) as err:
            self._status.failed(Reason.BAD_RESPONSE, f"{err}; keeping the previous table", now=now)
            self._stamp = stamp
            return False
        self._stamp = stamp
        changed = rules != self._rules
        self._rules = rules
        self._status.succeeded(now=now)
        return changed


def _stamp(path: str) -> tuple[float, int]:
    info = os.stat(path)
    return info.st_mtime, info.st_size


def read_rules(path: str) -> tuple[Rule, ...]:
    """Parse a UTF-8 YAML (`prices:` list) or CSV table. Raises CustomTableError naming the rule (or the line,
    for bytes that are not UTF-8) at fault."""
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise CustomTableError(f"{path}: line {line}: not UTF-8 (byte 0x{raw[err.start]:02x})") from err
    if path.lower().endswith(".csv"):
        entries = _csv_entries(text)
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise CustomTableError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(data, dict) or not isinstance(data.get("prices"), list):
            raise CustomTableError(f"{path}: expected a mapping with a 'prices' list")
        entries = data["prices"]
    return tuple(_rule(entry, f"{path}: prices[{i}]") for i, entry in enumerate(entries))


def _csv_entries(text: str) -> list[dict[str, Any]]:
    """A row per rule; an empty cell is no condition (an empty `provider` matches every provider). Lines
    starting with `#` are comments."""
    entries: list[dict[str, Any]] = []
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("#")]
    for row in csv.DictReader(lines):
        entry: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
        if "selector" in entry:  # "key=value;key2=value2"
            pairs = [p.split("=", 1) for p in str(entry["selector"]).split(";") if p]
            entry["selector"] = {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}
        entries.append(entry)
    return entries


def _rule(entry: Any, where: str) -> Rule:
    if not isinstance(entry, Mapping):
        raise CustomTableError(f"{where}: must be a mapping")
    unknown = set(entry) - {*_MATCH_FIELDS, *_PRICE_FIELDS, "selector"}
    if unknown:
        raise CustomTableError(f"{where}: unknown keys {', '.join(sorted(map(str, unknown)))}")
    for name in _MATCH_FIELDS:
        if name in entry and entry[name] is None:  # YAML `provider:` would match no node at all
            hint = ' ("" for nodes without a providerID)' if name == "provider" else ""
            raise CustomTableError(f"{where}.{name}: empty; give a value{hint} or leave the key out")
    if entry.get("capacity_type", "on_demand") not in ("on_demand", "spot"):
        raise CustomTableError(f"{where}.capacity_type: must be on_demand or spot")
    selector = entry.get("selector") or {}
    if not isinstance(selector, Mapping):
        raise CustomTableError(f"{where}.selector: must be a mapping of label to value")
    prices: dict[str, Decimal | None] = {}
    for name in _PRICE_FIELDS:
        raw = entry.get(name)
        if isinstance(raw, float):
            raw = repr(raw)  # YAML gave a float: its shortest repr is what the user wrote
        try:
            prices[name] = None if raw is None else parse_money(raw)
        except ValueError as err:
            raise CustomTableError(f"{where}.{name}: {err}") from err
    if all(v is None for v in prices.values()):
        raise CustomTableError(f"{where}: needs hourly or a per-unit price")
    return Rule(
        match=tuple((f, str(entry[f])) for f in _MATCH_FIELDS if f in entry),
        selector=tuple((str(k), str(v)) for k, v in selector.items()),
        hourly=prices["hourly"],
        cpu_core_hourly=prices["cpu_core_hourly"],
        memory_gib_hourly=prices["memory_gib_hourly"],
        gpu_hourly=prices["gpu_hourly"],
    )
