"""The one error a bad configuration raises, and how a value may appear in it."""

from __future__ import annotations

import re
from typing import Any

# A key whose value is a credential: its value never appears in an error (stderr ends up in pod logs).
_SECRET_KEY = re.compile(r"key|token|secret|passw|credential", re.IGNORECASE)


class ConfigError(ValueError):
    """Invalid configuration; the message starts with the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


def shown(key: str, value: Any) -> str:
    """`value` as an error message may quote it: its repr, or only its type for a secret-like key."""
    leaf = key.rsplit(".", 1)[-1].split("[", 1)[0]
    if isinstance(value, str):
        value = str(value)  # a str subclass (an environment value) shows as the plain text
    if _SECRET_KEY.search(leaf):
        return f"a {type(value).__name__} (value hidden: a secret)"
    return repr(value)
