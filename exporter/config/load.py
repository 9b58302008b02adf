"""Loading the configuration: YAML file, then `NODECOST_SECTION__KEY` environment variables, then flags
(later wins), coerced into the typed model and validated at start. A bad value raises `ConfigError` naming
the dotted key, so a typo in a ConfigMap fails the rollout instead of silently pricing with defaults; the
value of a secret-like key (`api_key`, tokens, passwords) is never quoted. An environment value is text,
converted only where the settings type asks for a number, a boolean or a list: `NODECOST_AWS__CUR__TABLE=
123_456` stays the string "123_456". Floats must be finite.

The cloud sources' sections are the settings types in `exporter.config.sources` (`@section("aws.cur")`):
the config package knows every section without importing the sources, which sit above it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import ssl
import types
import typing
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from exporter.config.errors import ConfigError, shown
from exporter.config.model import (
    DEMO_LISTEN_ADDRESS,
    PROVIDERS,
    SOURCE_KINDS,
    CloudSettings,
    Config,
    SourceSettings,
    billing_tag_keys,
    tag_label,
)
from exporter.config.sections import cloud_sections, sections

ENV_PREFIX = "NODECOST_"


def load_config(
    path: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the config: YAML file, then `NODECOST_SECTION__KEY` environment variables, then flag overrides.

    `overrides` maps dotted keys (`web.listen_address`) to values, as the CLI flags produce them.
    """
    tree: dict[str, Any] = {}
    if path:
        tree = _read_yaml(path)
    for dotted, raw in _env_overrides(os.environ if env is None else env).items():
        _set_dotted(tree, dotted, _EnvText(raw))
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
    config = _build_root(tree)
    if config.demo and "listen_address" not in (tree.get("web") or {}):
        web = dataclasses.replace(config.web, listen_address=DEMO_LISTEN_ADDRESS)  # this host only
        config = dataclasses.replace(config, web=web)
    _validate(config)
    return config


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError("config.file", f"cannot read {path}: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError("config.file", f"{path} is not valid YAML: {_yaml_problem(err)}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config.file", f"{path} must hold a mapping at the top level")
    return data


def _env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    out = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            out[name[len(ENV_PREFIX) :].lower().replace("__", ".")] = value
    return out


def _yaml_problem(err: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's quote of the line, which may hold a secret."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"{err.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return type(err).__name__


class _EnvText(str):
    """A value from the environment: text, converted only where the settings type is not a string."""


_TRUE, _FALSE = ("true", "yes", "on"), ("false", "no", "off")  # the words YAML read as booleans


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(parents[: i + 1]), "must be a mapping")
        node = child
    node[leaf] = value


def _build_root(tree: dict[str, Any]) -> Config:
    """The core sections as their dataclasses; each source's section as its settings type, and each
    cloud's own scalar keys (`azure.cloud`) as its cloud settings type."""
    clouds: dict[str, dict[str, type[SourceSettings]]] = {}
    for key, settings_type in sections().items():
        cloud, _, name = key.partition(".")
        clouds.setdefault(cloud, {})[name] = settings_type
    shared_types = cloud_sections()
    core = {f.name for f in dataclasses.fields(Config)} - {"sources", "clouds"}
    known = core | set(clouds) | set(shared_types)
    for key in tree:
        if key not in known:
            raise ConfigError(key, f"unknown key (known: {', '.join(sorted(known))})")
    sources: dict[str, SourceSettings] = {}
    shared: dict[str, CloudSettings] = {}
    for cloud in sorted(set(clouds) | set(shared_types)):
        types_by_name = clouds.get(cloud, {})
        shared_type = shared_types.get(cloud)
        shared_keys = {f.name for f in dataclasses.fields(shared_type)} if shared_type else set()
        data = tree.get(cloud)
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise ConfigError(cloud, f"must be a mapping, got {type(data).__name__}")
        for key in data:
            if key not in types_by_name and key not in shared_keys:
                known_here = ", ".join(sorted(set(types_by_name) | shared_keys))
                raise ConfigError(f"{cloud}.{key}", f"unknown key (known: {known_here})")
        for name, settings_type in types_by_name.items():
            key = f"{cloud}.{name}"
            sources[key] = _coerce(settings_type, data.get(name), key)
        if shared_type is not None:
            own = {k: v for k, v in data.items() if k in shared_keys}
            shared[cloud] = _build(shared_type, own, f"{cloud}.")
    config: Config = _build(Config, {k: v for k, v in tree.items() if k in core}, "")
    return dataclasses.replace(
        config, sources=types.MappingProxyType(sources), clouds=types.MappingProxyType(shared)
    )


def _build(cls: type[Any], data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        kind = "str" if isinstance(data, str) else type(data).__name__
        raise ConfigError(prefix.rstrip(".") or "config", f"must be a mapping, got {kind}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            dotted = f"{prefix}{key}"
            raise ConfigError(dotted, f"unknown key (known: {', '.join(sorted(known))})")
    kwargs = {}
    for name in known:
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type[Any], hint), value if value is not None else {}, f"{key}.")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {type(value).__name__}")
        return tuple(_coerce(str, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):
        raise TypeError(f"unsupported config type for {key}")
    if isinstance(value, _EnvText):
        value = _from_env(hint, value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"must be true or false, got {shown(key, value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"must be a whole number, got {shown(key, value)}")
    if hint is float:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(key, f"must be a number, got {shown(key, value)}")
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, got {shown(key, value)}")
        return float(value)
    if hint is Decimal:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConfigError(key, f"must be a decimal number, got {shown(key, value)}")
        try:
            number = Decimal(str(value))
        except InvalidOperation as err:
            raise ConfigError(key, f"must be a decimal number, got {shown(key, value)}") from err
        if not number.is_finite():
            raise ConfigError(key, f"must be a finite number, got {shown(key, value)}")
        return number
    if hint is str:
        if isinstance(value, str):
            return str(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, f"must be a string, got {shown(key, value)}")
    raise TypeError(f"unsupported config type {hint!r} for {key}")


def _from_env(hint: Any, text: str) -> Any:
    """An environment value as the number or boolean `hint` asks for; otherwise the text itself (a string,
    a comma-separated list, a decimal, or a bad value the caller reports)."""
    word = text.strip()
    if hint is bool and word.lower() in (*_TRUE, *_FALSE):
        return word.lower() in _TRUE
    for kind in (int, float):
        if hint is kind:
            try:
                return kind(word)
            except ValueError:
                return text
    return text


def _validate(config: Config) -> None:
    _host, sep, port = config.web.listen_address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError("web.listen_address", f"must be [host]:port, got {config.web.listen_address!r}")
    if not config.web.telemetry_path.startswith("/"):
        raise ConfigError("web.telemetry_path", "must start with /")
    for key, level in (("log.level", config.log.level), ("log.level_sdk", config.log.level_sdk)):
        if level.lower() not in ("debug", "info", "warn", "warning", "error"):
            raise ConfigError(key, f"must be one of debug, info, warn, error; got {level!r}")
    if config.log.format not in ("logfmt", "json"):
        raise ConfigError("log.format", f"must be logfmt or json; got {config.log.format!r}")
    kube = config.kubernetes
    if not 1 <= kube.page_size <= 10_000:
        raise ConfigError("kubernetes.page_size", "must be between 1 and 10000")
    if kube.watch_timeout_seconds < 1:
        raise ConfigError("kubernetes.watch_timeout_seconds", "must be at least 1")
    for i, label in enumerate(kube.spot_labels):
        if not label or label.startswith("="):
            raise ConfigError(f"kubernetes.spot_labels[{i}]", f"must be 'key' or 'key=value', got {label!r}")
    if kube.nodes_file and not Path(kube.nodes_file).exists():
        raise ConfigError("kubernetes.nodes_file", f"{kube.nodes_file} does not exist")
    _check_sharding(config)
    if config.cache.enabled and not config.cache.path:
        raise ConfigError("cache.path", "must be set when the cache is enabled")
    pricing = config.pricing
    seen: set[str] = set()
    for i, kind in enumerate(pricing.precedence):
        if kind not in SOURCE_KINDS:
            raise ConfigError(f"pricing.precedence[{i}]", f"must be one of {', '.join(SOURCE_KINDS)}")
        if kind in seen:
            raise ConfigError(f"pricing.precedence[{i}]", f"{kind} is listed twice")
        seen.add(kind)
    if len(pricing.currency) != 3 or not pricing.currency.isalpha() or not pricing.currency.isupper():
        raise ConfigError("pricing.currency", f"must be an ISO 4217 code like USD, got {pricing.currency!r}")
    for provider in PROVIDERS:
        discount = getattr(pricing.discounts, provider)
        if not Decimal(0) <= discount < Decimal(1):
            raise ConfigError(
                f"pricing.discounts.{provider}", f"must be a fraction in [0, 1), got {discount}"
            )
    for unit in ("cpu_core", "memory_gib", "gpu"):
        if getattr(pricing.split, unit) < 0:
            raise ConfigError(f"pricing.split.{unit}", "must not be negative")
    if pricing.custom.reload_interval_seconds <= 0:
        raise ConfigError("pricing.custom.reload_interval_seconds", "must be positive")
    if pricing.split.cpu_core + pricing.split.memory_gib == 0:
        raise ConfigError("pricing.split", "cpu_core and memory_gib cannot both be 0")
    for shared in config.clouds.values():
        shared.validate(config)
    for key, settings in config.sources.items():
        settings.validate(key, config)
    labels: dict[str, str] = {}
    for tag in billing_tag_keys(config):
        other = labels.setdefault(tag_label(tag), tag)
        if other != tag:
            raise ConfigError(
                "tags", f"{other!r} and {tag!r} both become the label {tag_label(tag)}; keep one"
            )
    for key, path in (
        ("pricing.custom.file", pricing.custom.file),
        ("pricing.offline.file", pricing.offline.file),
    ):
        if path and not Path(path).is_file():
            raise ConfigError(key, f"{path} does not exist")
    if config.tls.ca_file:
        _check_ca_file(config.tls.ca_file)


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def _check_sharding(config: Config) -> None:
    sharding = config.sharding
    if sharding.total_shards < 1:
        raise ConfigError("sharding.total_shards", f"must be at least 1, got {sharding.total_shards}")
    if not 0 <= sharding.shard < sharding.total_shards:
        raise ConfigError(
            "sharding.shard",
            f"must be between 0 and total_shards - 1 ({sharding.total_shards - 1}), got {sharding.shard}",
        )
    # They name the API paths automatic sharding reads: a DNS label (namespace) and subdomain (pod).
    if sharding.pod_namespace and not _DNS_LABEL.fullmatch(sharding.pod_namespace):
        namespace = sharding.pod_namespace
        raise ConfigError("sharding.pod_namespace", f"must be a namespace name, got {namespace!r}")
    if sharding.pod and not _DNS_SUBDOMAIN.fullmatch(sharding.pod):
        raise ConfigError("sharding.pod", f"must be a pod name, got {sharding.pod!r}")
    if sharding.pod and not sharding.pod_namespace:
        raise ConfigError("sharding.pod", "needs sharding.pod_namespace (automatic sharding)")
    if sharding.automatic and sharding.total_shards != 1:
        raise ConfigError(
            "sharding.pod_namespace",
            "automatic sharding takes the shard and total from the StatefulSet: "
            "leave sharding.shard and sharding.total_shards unset",
        )
    if sharding.automatic and (config.kubernetes.nodes_file or config.demo):
        problem = "automatic sharding reads the pod from the Kubernetes API, not a nodes file"
        raise ConfigError("sharding.pod_namespace", problem)


def _check_ca_file(path: str) -> None:
    """At start, not at the first TLS handshake: a wrong path would otherwise surface as every cloud
    failing its certificate check, minutes later."""
    if not Path(path).exists():
        raise ConfigError("tls.ca_file", f"{path} does not exist")
    if not Path(path).is_file():
        raise ConfigError("tls.ca_file", f"{path} is not a file")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError as err:
        raise ConfigError("tls.ca_file", f"{path} holds no PEM certificate ({err.reason})") from err
    except OSError as err:
        raise ConfigError("tls.ca_file", f"cannot read {path}: {err.strerror}") from err
