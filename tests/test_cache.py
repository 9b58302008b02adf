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


@pytest.mark.parametrize("layout", ["read_only_dir", "file_as_dir", "missing_parent_unwritable"])
def test_unusable_directory_falls_back_to_memory_and_says_so(tmp_path: Path, layout: str) -> None:
    if layout == "file_as_dir":
        (tmp_path / "blocker").write_text("a regular file where the cache directory should be")
        path = tmp_path / "blocker" / "cache.sqlite"
    else:
        parent = unwritable_dir(tmp_path)
        path = parent / "cache.sqlite" if layout == "read_only_dir" else parent / "sub" / "cache.sqlite"
    cache, status = open_cache(path)
    assert not cache.persistent
    assert (status.up, status.reason) == (False, Reason.PERMISSION if layout != "file_as_dir" else Reason.CONFIG)
    assert "in-memory" in status.detail
    assert cache.store("aws_pricing", [("k", "1")])
    assert cache.load("aws_pricing")["k"].value == "1"
    assert not status.up  # still says it is not persisting
    assert not path.exists()


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory no file can be created in: mode 0555, or, for root (who ignores modes), sysfs."""
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    probe = parent / "probe"
    try:
        probe.touch()
    except OSError:
        return parent
    probe.unlink()
    return Path("/sys/kernel")  # root: sysfs refuses new files to everyone


def test_a_full_database_loses_nothing_committed(tmp_path: Path) -> None:
    """SQLite's max_page_count stands in for a full disk: the write fails with SQLITE_FULL."""
    path = tmp_path / "cache.sqlite"
    cache, status = open_cache(path)
    assert cache.store("aws_pricing", [(f"k{i}", "0.1") for i in range(50)])
    pages = cache._conn.execute("PRAGMA page_count").fetchone()[0]
    cache._conn.execute(f"PRAGMA max_page_count = {pages}")
    assert not cache.store("aws_pricing", [(f"big{i}", "x" * 2000) for i in range(200)])
    assert (status.up, status.reason) == (False, Reason.UNAVAILABLE) and "full" in status.detail
    cache.close()
    again, status = open_cache(path)
    assert status.up
    assert sorted(again.load("aws_pricing")) == sorted(f"k{i}" for i in range(50))


FULL_DISK_WRITER = textwrap.dedent(
    """
    import os, resource, signal, sys
    from exporter.cache import PriceCache
    from exporter.health import IntegrationStatus

    status = IntegrationStatus("cache")
    cache = PriceCache(sys.argv[1], status)
    assert cache.store("bills", [(f"k{i}", "0.1") for i in range(50)])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    size = sum(os.path.getsize(sys.argv[1] + s) for s in ("", "-wal") if os.path.exists(sys.argv[1] + s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 8192, size + 8192))
    ok = cache.store("bills", [(f"big{i}", "x" * 4000) for i in range(500)])
    print(ok, status.reason, status.detail)
    """
)


def test_a_file_size_limit_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    """A real full disk for one process: RLIMIT_FSIZE makes SQLite's writes fail with EFBIG."""
    path = tmp_path / "cache.sqlite"
    result = subprocess.run(
        [sys.executable, "-c", FULL_DISK_WRITER, str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    ok, reason, detail = result.stdout.split(" ", 2)
    assert (ok, reason) == ("False", "unavailable")
    assert "disk is full" in detail or "disk I/O error" in detail  # the write's own error, not the rollback's
    cache, status = open_cache(path)
    assert status.up, status.detail
    assert sorted(cache.load("bills")) == sorted(f"k{i}" for i in range(50))
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
