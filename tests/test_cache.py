import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from exporter.cache import PriceCache
from exporter.health import IntegrationStatus, Reason


def open_cache(path: Path) -> tuple[PriceCache, IntegrationStatus]:
    status = IntegrationStatus("cache")
    return PriceCache(str(path), status), status


def test_round_trip_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.sqlite"
    cache, status = open_cache(path)
    assert status.up
    assert cache.store("aws_pricing", [("us-east-1/m5.large/linux", "0.0960000000")], fetched_at=1700000000.0)
    assert cache.store("aws_pricing", [("us-east-1/m5.large/linux", "0.0970000000")], fetched_at=1700000100.0)
    cache.store("gcp_catalog", [("us-central1/e2-standard-2", "0.067006")])
    cache.close()
    again, _ = open_cache(path)
    entries = again.load("aws_pricing")
    assert list(entries) == ["us-east-1/m5.large/linux"]
    assert (entries["us-east-1/m5.large/linux"].value, entries["us-east-1/m5.large/linux"].fetched_at) == (
        "0.0970000000",
        1700000100.0,
    )
    assert again.load("nothing") == {}


WRITER = textwrap.dedent(
    """
    import sys
    from exporter.cache import PriceCache
    from exporter.health import IntegrationStatus
    cache = PriceCache(sys.argv[1], IntegrationStatus("cache"))
    print("ready", flush=True)
    batch = 0
    while True:
        cache.store("bills", [(f"{batch}/{i}", "x" * 2000) for i in range(200)])
        batch += 1
    """
)


@pytest.mark.slow  # a writer process, SIGKILLed
def test_sigkill_mid_write_loses_at_most_the_open_batch(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    time.sleep(1.0)  # let it commit many batches and be in the middle of one
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    cache, status = open_cache(path)
    assert status.up, status.detail
    keys = cache.load("bills")
    batches = {key.split("/")[0] for key in keys}
    assert len(batches) > 3
    assert len(keys) == 200 * len(batches)  # whole batches only
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_corrupt_file_is_moved_aside_and_the_exporter_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is not an sqlite database, it is a truncated download" * 100)
    cache, status = open_cache(path)
    assert (status.up, status.reason) == (False, Reason.CORRUPT)
    assert "moved to" in status.detail and "starting empty" in status.detail
    assert list(tmp_path.glob("cache.sqlite.corrupt-*"))
    assert cache.load("aws_pricing") == {}
    assert cache.store("aws_pricing", [("k", "1")])
    assert status.up  # a working fresh cache reports up again after the first write


def test_locked_file_falls_back_to_memory_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    first, _ = open_cache(path)
    first.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode = DELETE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        status = IntegrationStatus("cache")
        cache = PriceCache(str(path), status, busy_timeout_seconds=0.2)
        assert (status.up, status.reason) == (False, Reason.LOCKED)
        assert cache.store("aws_pricing", [("k", "1")])
        assert cache.load("aws_pricing")["k"].value == "1"
        assert status.reason is Reason.LOCKED  # still says it is not persisting
    finally:
        holder.execute("ROLLBACK")
        holder.close()
