"""glibc malloc settings for a long-running exporter whose memory is mostly many small, lasting objects.

By default glibc gives each thread that allocates its own arena (the watch, the scrapes, the refreshes), and
raises its mmap threshold to the size of the largest buffer freed so far, so that after the first list page
(megabytes) such buffers come from the arenas' heaps and stay resident when freed. At 15,000 nodes that
cost ~17 MiB of peak RSS (docs/performance.md, §5). One arena is enough for a Python process, where the GIL
already serializes allocation; a fixed threshold sends every buffer over 128 KiB to mmap, returned to the
system when freed; the heap top is trimmed beyond 128 KiB free.
"""

from __future__ import annotations

import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt(3) parameters and their values; each is left alone when its MALLOC_*_ variable is set, so that an
# operator's own setting wins.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_SETTINGS = (
    (_M_ARENA_MAX, "MALLOC_ARENA_MAX", 1),
    (_M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", 128 * 1024),
    (_M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", 128 * 1024),
)


def tune_malloc() -> list[str]:
    """Apply the settings (before any thread starts: arenas are made by threads' first allocations); the
    names of those applied. Nothing on other C libraries (musl, macOS, Windows), where they do not exist."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return []
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return []
    applied = []
    for param, variable, value in _SETTINGS:
        if variable not in os.environ and mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            applied.append(f"{variable}={value}")
    log.debug("malloc settings: %s", ", ".join(applied) or "none")
    return applied
