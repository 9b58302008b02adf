"""The typed registry of cloud sources: each source class registers itself with one decorator, and the
app builds every enabled one from its entry, with one constructor signature, `Source(settings, context)`.

Adding a cloud is its own module(s) with `@register`, its settings, its docs row and its test: discovery
imports every module under `exporter.pricing.sources` once, so nothing else lists the sources. Source
modules import their cloud SDK only inside the methods that use it, so discovery stays cheap and a build
without an extra still starts (and says which extra an enabled source needs).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from exporter.config import ConfigError, SourceSettings
from exporter.pricing.source import PriceSource
from exporter.pricing.sources.context import SourceContext


class SourceClass(Protocol):
    """A registrable source class: its label name, its kind, and the one constructor signature."""

    name: str
    kind: str

    def __call__(self, settings: Any, context: SourceContext) -> PriceSource: ...


C = TypeVar("C", bound=SourceClass)


@dataclass(frozen=True)
class SourceEntry:
    """One registered source."""

    key: str  # its config section, dotted ("aws.cur"): YAML aws: {cur: …}, env NODECOST_AWS__CUR__…
    source: SourceClass
    settings: type[SourceSettings]  # the dataclass its config section is read into
    extra: str | None  # the pip extra that installs its SDK; None: nothing beyond the core dependencies
    sdk: tuple[str, ...]  # modules it imports when built; all must be importable
    rank: int  # within its kind, lower is asked first

    @property
    def name(self) -> str:
        """The `integration` / `source` label of its series."""
        return self.source.name

    @property
    def kind(self) -> str:
        return self.source.kind

    def missing_sdk(self) -> str | None:
        """The first SDK module that cannot be imported, without importing any of them."""
        for module in self.sdk:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):  # a parent package missing, or blocked in sys.modules
                found = False
            if not found:
                return module
        return None

    def build(self, settings: SourceSettings, context: SourceContext) -> PriceSource:
        """The source, or a ConfigError naming `<key>.enabled` when its SDK is not installed."""
        missing = self.missing_sdk()
        if missing is not None:
            raise ConfigError(
                f"{self.key}.enabled",
                f"needs the '{self.extra}' extra, which is not installed ({missing} is missing): "
                f"run `python3 scripts/uv.py run --frozen --extra {self.extra} {command_line()}` "
                f"in a checkout, or `pip install 'node-cost-exporter[{self.extra}]'` first",
            )
        return self.source(settings, context)


def command_line() -> str:
    """The command this process runs, to repeat with an extra: exact when the process is the exporter (its
    console script or `python -m exporter`), whose arguments are `sys.argv[1:]`; else a placeholder."""
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program == "node-cost-exporter" or sys.argv[0].endswith(os.path.join("exporter", "__main__.py")):
        return shlex.join(["node-cost-exporter", *sys.argv[1:]])
    return "node-cost-exporter <arguments>"


_ENTRIES: dict[str, SourceEntry] = {}


def register(
    key: str,
    *,
    settings: type[SourceSettings],
    extra: str | None = None,
    sdk: tuple[str, ...] = (),
    rank: int = 0,
) -> Callable[[C], C]:
    """Class decorator: make a source buildable from the config section `key`, "<cloud>.<source>", whose
    settings type (`@section(key)` in exporter/config/sources/) is `settings`."""
    if settings.section_key != key:
        raise ValueError(f"{settings.__name__} is read from section {settings.section_key!r}, not {key!r}")

    def add(cls: C) -> C:
        if key in _ENTRIES and _ENTRIES[key].source is not cls:
            raise RuntimeError(f"two sources registered as {key!r}: {_ENTRIES[key].source} and {cls}")
        _ENTRIES[key] = SourceEntry(key, cls, settings, extra, sdk, rank)
        return cls

    return add


_discovered = False


def entries() -> list[SourceEntry]:
    """Every registered source, in build order: by kind (billing first), then rank, then key."""
    global _discovered
    if not _discovered:
        _discover()
        _discovered = True
    kinds = ("billing", "shelf")
    return sorted(_ENTRIES.values(), key=lambda e: (kinds.index(e.kind), e.rank, e.key))


def registered(key: str) -> SourceEntry:
    """The entry of one source by its config key."""
    entries()
    return _ENTRIES[key]


def _discover() -> None:
    """Import every module under exporter.pricing.sources, so each `@register` runs."""
    package = importlib.import_module("exporter.pricing.sources")
    for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        importlib.import_module(module.name)
