"""The bundled offline table: published on-demand list prices, the last resort before "unpriced".

It lets an air-gapped cluster or a demo price common instance types with no cloud call. Every row keeps
its source and date (see data/OFFLINE_PRICES.md); a spot node found here is priced at on-demand, and its
`price_basis` label says so.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable
from importlib import resources

from exporter.config import ConfigError
from exporter.inventory.node import Node
from exporter.pricing.money import parse_money
from exporter.pricing.quote import Basis, Quote

log = logging.getLogger(__name__)

BUNDLED = "bundled"
COLUMNS = ("provider", "region", "instance_type", "os", "hourly", "currency", "as_of", "source")


class OfflinePrices:
    name = "offline"
    kind = "offline"
    refresh_interval_seconds: float | None = None

    def __init__(self, table: dict[tuple[str, str, str, str], Quote]) -> None:
        self._table = table

    @classmethod
    def load(cls, path: str = "", *, currency: str = "USD") -> OfflinePrices:
        """Read the bundled table, or `path`. A bad row fails start-up: this file is ours or the user's."""
        key = "pricing.offline.file"
        if path:
            try:
                with open(path, encoding="utf-8", newline="") as handle:
                    text = handle.read()
            except OSError as err:
                raise ConfigError(key, f"cannot read {path}: {err.strerror}") from err
        else:
            text = resources.files("exporter.pricing.data").joinpath("offline_prices.csv").read_text("utf-8")
        return cls(_parse_table(text, path or BUNDLED, currency))

    def __len__(self) -> int:
        return len(self._table)

    def quote(self, node: Node) -> Quote | None:
        return self._table.get((node.provider, node.region, node.instance_type, node.os or "linux"))

    def wanted(self, nodes: Iterable[Node]) -> None:
        """Static table: nothing to fetch."""

    def pending(self) -> bool:
        return False

    def refresh(self) -> bool:
        return False


def _parse_table(text: str, origin: str, currency: str) -> dict[tuple[str, str, str, str], Quote]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ConfigError("pricing.offline.file", f"{origin}: missing columns {', '.join(missing)}")
    table: dict[tuple[str, str, str, str], Quote] = {}
    other_currency = 0
    for line, row in enumerate(reader, start=2):
        try:
            hourly = parse_money(row["hourly"])
        except ValueError as err:
            raise ConfigError("pricing.offline.file", f"{origin} line {line}: {err}") from err
        if row["currency"] != currency:
            other_currency += 1  # cannot be mixed in: such nodes stay unpriced rather than wrongly priced
            continue
        key = (row["provider"], row["region"], row["instance_type"], row["os"] or "linux")
        table[key] = Quote(hourly=hourly, currency=row["currency"], basis=Basis.ON_DEMAND)
    if other_currency:
        log.warning("offline table %s: %d rows not in %s were left out", origin, other_currency, currency)
    return table
