"""Which settings type each cloud source's config section is read into: `@section("aws.cur")` on the type
(in `exporter/config/sources/`), and `sections()` for the loader, which imports those modules on first use.
A cloud's settings shared by all its sources (`azure.cloud`) are tied the same way by `@cloud_section`."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from typing import TypeVar

from exporter.config.model import CloudSettings, SourceSettings

S = TypeVar("S", bound=type[SourceSettings])
K = TypeVar("K", bound=type[CloudSettings])
_SECTIONS: dict[str, type[SourceSettings]] = {}
_CLOUD_SECTIONS: dict[str, type[CloudSettings]] = {}
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


def cloud_section(cloud: str) -> Callable[[K], K]:
    """Class decorator: read this type from the scalar keys of the config section `cloud` (YAML
    `<cloud>: {<field>: …}` beside its sources, environment `NODECOST_<CLOUD>__<FIELD>`)."""
    if not cloud.isidentifier():
        raise ValueError(f"a cloud's config section is one name, got {cloud!r}")

    def add(cls: K) -> K:
        if _CLOUD_SECTIONS.get(cloud, cls) is not cls:
            raise RuntimeError(f"two cloud settings types for {cloud!r}: {_CLOUD_SECTIONS[cloud]} and {cls}")
        cls.cloud_key = cloud
        _CLOUD_SECTIONS[cloud] = cls
        return cls

    return add


def sections() -> Mapping[str, type[SourceSettings]]:
    """Every source's settings type by section key: the modules of `exporter.config.sources` are imported
    on first use, so adding a cloud's settings module is all the loader needs."""
    _discover()
    return dict(sorted(_SECTIONS.items()))


def cloud_sections() -> Mapping[str, type[CloudSettings]]:
    """Every cloud's shared settings type by cloud name, found as `sections()` finds the sources'."""
    _discover()
    return dict(sorted(_CLOUD_SECTIONS.items()))


def _discover() -> None:
    global _discovered
    if not _discovered:  # not "while empty": importing one cloud's module must not hide the others
        package = importlib.import_module("exporter.config.sources")
        for module in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
        _discovered = True
