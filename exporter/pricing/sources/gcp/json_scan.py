"""A streaming scanner for ListSkus pages: one SKU decoded at a time, so a 5,000-SKU page never exists
as one Python object tree (the catalog is listed whole on every refresh)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def scan_page(text: str, fold: Callable[[object], None]) -> str:
    """Decode a ListSkus page `{"skus":[…],"nextPageToken":…}` one SKU at a time, handing each to `fold`;
    returns the next page token ("" on the last page). Raises ValueError on anything else."""
    pos = _expect(text, 0, "{")
    token = ""
    if text.startswith("}", pos):
        pos += 1
    else:
        while True:
            key, pos = _DECODER.raw_decode(text, pos)
            if not isinstance(key, str):
                raise ValueError(f"expected a member name at {pos}")
            pos = _expect(text, pos, ":")
            if key == "skus":
                pos = _expect(text, pos, "[")
                separator = "]" if text.startswith("]", pos) else ","
                if separator == "]":
                    pos += 1
                while separator == ",":
                    sku, pos = _DECODER.raw_decode(text, pos)
                    fold(sku)
                    pos, separator = _separator(text, pos, ",]")
            else:
                value, pos = _DECODER.raw_decode(text, pos)
                if key == "nextPageToken":
                    if not isinstance(value, str):
                        raise ValueError("nextPageToken is not a string")
                    token = value
            pos, separator = _separator(text, pos, ",}")
            if separator == "}":
                break
    if _skip(text, pos) != len(text):
        raise ValueError(f"data after the page at {pos}")
    return token


def _skip(text: str, pos: int) -> int:
    match = _WS.match(text, pos)
    return match.end() if match else pos


def _expect(text: str, pos: int, char: str) -> int:
    """Skip whitespace, require `char`, and skip the whitespace after it."""
    pos = _skip(text, pos)
    if not text.startswith(char, pos):
        raise ValueError(f"expected {char!r} at {pos}")
    return _skip(text, pos + 1)


def _separator(text: str, pos: int, allowed: str) -> tuple[int, str]:
    """Skip whitespace, require one of `allowed`, and return the position after it and which it was."""
    pos = _skip(text, pos)
    char = text[pos : pos + 1]
    if not char or char not in allowed:
        raise ValueError(f"expected one of {allowed!r} at {pos}")
    return _skip(text, pos + 1), char
