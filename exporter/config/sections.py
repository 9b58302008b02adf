"""Which settings type each cloud source's config section is read into: `@section("aws.cur")` on the type
(in `exporter/config/sources/`), and `sections()` for the loader, which imports those modules on first use."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import TypeVar

from exporter.config.model import SourceSettings

S = TypeVar("S", bound=type[SourceSettings])
_SECTIONS: dict[str, type[SourceSettings]] = {}
_discovered = False


def section(key: str) -> Callable[[S], S]:
    """Class decorator: read this settings type from the config section `key`, "<cloud>.<source>"
    (YAML `<cloud>: {<source>: …}`, environment `NODECOST_<CLOUD>__<SOURCE>__<FIELD>`)."""
    cloud, dot, name = key.partition(".")
    if not (dot and cloud.isidentifier() and name.isidentifier()):
        raise ValueError(f"a source's config section is <cloud>.<source>, got {key!r}")

    def add(cls: S) -> S:
        if _SECTIONS.get(key, cls) is not cls:
            raise RuntimeError(f"two settings types for {key!r}: {_SECTIONS[key]} and {cls}")
        cls.section_key = key
        _SECTIONS[key] = cls
        return cls

    return add


def sections() -> Mapping[str, type[SourceSettings]]:
    """Every source's settings type by section key: the modules of `exporter.config.sources` are imported
    on first use, so adding a cloud's settings module is all the loader needs."""
    global _discovered
    if not _discovered:  # not "while empty": importing one cloud's module must not hide the others
        package = importlib.import_module("exporter.config.sources")
        for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
        _discovered = True
    return dict(sorted(_SECTIONS.items()))
