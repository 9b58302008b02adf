"""glibc malloc settings (exporter/allocator.py): applied at start, an operator's MALLOC_* variables win."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import threading

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only"
)
PROBE = "from exporter.allocator import tune_malloc; print(' '.join(tune_malloc()))"


def applied(env: dict[str, str]) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True, timeout=30, check=True
    )
    return out.stdout.split()


def test_every_setting_is_applied_by_default() -> None:
    assert applied({}) == ["MALLOC_ARENA_MAX=1", "MALLOC_MMAP_THRESHOLD_=131072", "MALLOC_TRIM_THRESHOLD_=131072"]


def test_a_setting_from_the_environment_is_left_to_glibc() -> None:
    assert applied({"MALLOC_ARENA_MAX": "4"}) == ["MALLOC_MMAP_THRESHOLD_=131072", "MALLOC_TRIM_THRESHOLD_=131072"]


def test_the_exporter_applies_them_before_serving() -> None:
    """`--log.level debug` shows the settings the process runs with."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "--demo", "--web.listen-address=127.0.0.1:0", "--log.level=debug"],
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(30, proc.kill)  # the stderr read below ends when the process does
    watchdog.start()
    try:
        assert proc.stderr is not None
        line = next((line for line in proc.stderr if "malloc settings" in line), "")
        assert "MALLOC_ARENA_MAX=1" in line
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait(timeout=10)
