"""Log lines as logfmt (default, like Prometheus' own components) or JSON, one event per line.

Besides ts, level, logger and msg, a line carries the structured FIELDS its record has (set by a logger
from `with_fields`, or by `extra=`), each as its own key, so `integration=aws_cur` can be filtered on
instead of parsed out of a message.

No credential is written. The cloud SDKs and HTTP libraries log signed requests, headers and token
exchanges at debug, so every logger outside `exporter` stays at `log.level_sdk` (warn unless asked), and
every line goes through `redact`, which masks the known credential shapes whatever logged them.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

# Record attributes written as their own keys, in this order, between logger and msg. A fixed list, so
# lines keep one key order and no library's `extra` leaks into them.
FIELDS = ("integration", "source")

REDACTED = "[REDACTED]"
_I = re.IGNORECASE
_VALUE = r"""["']?\s*[:=]\s*b?["']?"""  # between a key's name and its value: `=`, `: `, `': b'`, `": "`
_END = r"""[^\s"'&,;<>]+"""  # a value, up to a quote, a space or a query-string separator
# (pattern, replacement): credential shapes of AWS, Google, Azure and HTTP auth; a named key keeps its name.
_SECRETS = [
    # AWS access key ids: long-term (AKIA) and temporary (ASIA).
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
    # Secrets after their key's name: AWS secret key and session token, OAuth and Azure secrets.
    (
        re.compile(
            r"((?:aws_secret_access_key|secret_?access_?key|aws_session_token|session_?token"
            r"|x-amz-security-token|security_?token|client_?secret|access_?token|refresh_?token"
            r"|id_?token|password|AccountKey|SharedAccessKey)" + _VALUE + ")" + _END,
            _I,
        ),
        r"\1" + REDACTED,
    ),
    (re.compile(r"\b(?:IQoJb3JpZ2lu|FwoGZXIvYXdz)[A-Za-z0-9/+=]+"), REDACTED),  # AWS session tokens
    (re.compile(r"(\b(?:bearer|basic)\s+)[A-Za-z0-9._~+/=-]+", _I), r"\1" + REDACTED),  # Authorization
    (re.compile(r"\bya29\.[A-Za-z0-9._-]+"), REDACTED),  # Google OAuth access tokens
    (re.compile(r"\bAIza[A-Za-z0-9_-]{35}"), REDACTED),  # Google API keys
    (re.compile(r"([?&;]sig=)" + _END, _I), r"\1" + REDACTED),  # Azure SAS signatures
    (re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL), REDACTED),
]


def redact(text: str) -> str:
    """`text` with every credential shape the SDKs are known to log replaced by REDACTED."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


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
        fields["msg"] = redact(record.getMessage())
        if record.exc_info:
            fields["err"] = redact(self.formatException(record.exc_info))
        if self._as_json:
            return json.dumps(fields)
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())


def _logfmt_value(value: str) -> str:
    if value and not any(c in value for c in ' ="\n\\'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def setup_logging(level: str, fmt: str, sdk_level: str = "warn") -> None:
    """Log to stderr at `level`; lines of other libraries than the exporter's (SDKs, HTTP clients) only
    at `sdk_level` or `level`, whichever is less verbose."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(as_json=fmt == "json"))
    handler.addFilter(_SdkLevel(max(_level(level), _level(sdk_level))))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_level(level))


def _level(name: str) -> int:
    return logging.getLevelNamesMapping()[{"warn": "WARNING"}.get(name.lower(), name.upper())]


class _SdkLevel(logging.Filter):
    """Passes the exporter's own records, and another library's from `level` up: a filter on the handler,
    not levels on a list of loggers, so a library no list names is held back as well."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == "exporter" or record.name.startswith("exporter.")
        return own or record.levelno >= self._level
