"""Log lines as logfmt (default, like Prometheus' own components) or JSON, one event per line.

Besides ts, level, logger and msg, a line carries the structured FIELDS its record has (set by a logger
from `with_fields`, or by `extra=`), each as its own key, so `integration=aws_cur` can be filtered on
instead of parsed out of a message.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

# Record attributes written as their own keys, in this order, between logger and msg. A fixed list, so
# lines keep one key order and no library's `extra` leaks into them.
FIELDS = ("integration", "source")


def with_fields(logger: logging.Logger, **fields: str) -> logging.LoggerAdapter[logging.Logger]:
    """`logger`, stamping `fields` (names from FIELDS) on every line, e.g. `integration="aws_cur"`."""
    unknown = sorted(set(fields) - set(FIELDS))
    if unknown:
        raise TypeError(f"not a log field: {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    return _WithFields(logger, fields)


class _WithFields(logging.LoggerAdapter[logging.Logger]):
    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        # The stock adapter replaces a call's own `extra`; merge instead, the call's keys winning.
        extra: Mapping[str, object] = self.extra or {}
        kwargs["extra"] = {**extra, **(kwargs.get("extra") or {})}
        return msg, kwargs


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self._as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                fields[key] = str(value)
        fields["msg"] = record.getMessage()
        if record.exc_info:
            fields["err"] = self.formatException(record.exc_info)
        if self._as_json:
            return json.dumps(fields)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' ="\n\\'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=fmt == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel({"warn": "WARNING"}.get(level.lower(), level.upper()))
