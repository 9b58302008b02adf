"""Embedded SQLite store of every fetched price and billed rate, with its fetch time.

Billing queries cost money and minutes, and list prices change rarely: sources load their last known
values from here at start, so a restart prices nodes before any cloud call returns. WAL journaling and
one transaction per write batch make a SIGKILL mid-write lose at most that batch, never the file.
A corrupt file is moved aside; a locked file, or a path that cannot be created or written (read-only
directory, a file where the directory should be), is replaced by an in-memory store: the exporter starts
with an empty cache and says so (one log line, `nodecost_integration_up{integration="cache"} 0` and
`nodecost_cache_persistent 0`). A failed write (a full disk) rolls back its batch only.
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from exporter.health import IntegrationStatus, Reason

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    namespace  TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    fetched_at REAL NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""


@dataclass(frozen=True, slots=True)
class Entry:
    value: str  # the source's own serialisation (JSON text, a decimal string, …)
    fetched_at: float


class PriceCache:
    """Namespaced key → (value, fetched_at). One connection shared under a lock; writes are small batches."""

    def __init__(self, path: str, status: IntegrationStatus, *, busy_timeout_seconds: float = 2.0) -> None:
        self.path = path
        self._status = status
        self._busy_timeout = busy_timeout_seconds
        self._lock = threading.Lock()
        self.persistent = False  # True once the store is a file on disk, not memory
        self._conn = self._open(busy_timeout_seconds)

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        if self.path == ":memory:":
            conn = self._connect(":memory:", busy_timeout)
            self._status.succeeded()
            return conn
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            return self._in_memory(_os_reason(err), f"cannot create {Path(self.path).parent}: {err.strerror}")
        if not _writable(self.path):
            return self._in_memory(Reason.PERMISSION, f"{self.path} is not writable")
        try:
            conn = self._connect(self.path, busy_timeout)
            row = conn.execute("PRAGMA quick_check").fetchone()
            if row is None or row[0] != "ok":
                conn.close()
                raise sqlite3.DatabaseError(f"quick_check: {row[0] if row else 'no answer'}")
            self.persistent = True
            self._status.succeeded()
            return conn
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                return self._reset(busy_timeout, err)
            return self._in_memory(Reason.LOCKED, f"{self.path} is locked by another process ({err})")
        except sqlite3.DatabaseError as err:
            return self._reset(busy_timeout, err)

    def _reset(self, busy_timeout: float, err: Exception) -> sqlite3.Connection:
        aside = f"{self.path}.corrupt-{int(time.time())}"
        try:
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(self.path + suffix):
                    os.replace(self.path + suffix, aside + suffix)
            conn = self._connect(self.path, busy_timeout)
        except (OSError, sqlite3.Error) as again:
            return self._in_memory(
                Reason.CORRUPT, f"{self.path} was unreadable ({err}) and could not be replaced ({again})"
            )
        self.persistent = True
        self._status.failed(
            Reason.CORRUPT, f"{self.path} was unreadable ({err}); moved to {aside}, starting empty"
        )
        return conn

    def _in_memory(self, reason: Reason, why: str) -> sqlite3.Connection:
        """The exporter runs on without persistence; the status (logged once) says why until restart."""
        self._status.failed(reason, f"{why}; using an empty in-memory cache until restart")
        return self._connect(":memory:", self._busy_timeout)

    @staticmethod
    def _connect(path: str, busy_timeout: float) -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=busy_timeout, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(_SCHEMA)
        return conn

    def load(self, namespace: str, prefix: str = "") -> dict[str, Entry]:
        """Every entry of a namespace (whose key starts with `prefix`), e.g. all cached AWS list prices."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT key, value, fetched_at FROM entries WHERE namespace = ? AND key >= ? AND key < ?",
                    (namespace, prefix, prefix + "\U0010ffff"),
                ).fetchall()
            except sqlite3.Error as err:
                self._status.failed(_reason(err), f"read {namespace}: {err}")
                return {}
        return {key: Entry(value, fetched_at) for key, value, fetched_at in rows}

    def store(
        self,
        namespace: str,
        items: Iterable[tuple[str, str]],
        fetched_at: float | None = None,
        *,
        replace: bool = False,
        drop_before: str | None = None,
    ) -> bool:
        """Upsert (key, value) pairs in one transaction; `replace` first empties the namespace and
        `drop_before` deletes its keys sorting before that one. False (and health down) on failure."""
        stamp = time.time() if fetched_at is None else fetched_at
        rows = [(namespace, key, value, stamp) for key, value in items]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    if replace:
                        self._conn.execute("DELETE FROM entries WHERE namespace = ?", (namespace,))
                    if drop_before is not None:
                        self._conn.execute(
                            "DELETE FROM entries WHERE namespace = ? AND key < ?", (namespace, drop_before)
                        )
                    self._conn.executemany(
                        "INSERT INTO entries (namespace, key, value, fetched_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
                        "fetched_at = excluded.fetched_at",
                        rows,
                    )
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:  # SQLite already rolled back after SQLITE_FULL, IOERR, …
                        self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as err:
                self._status.failed(_reason(err), f"write {namespace}: {err}")
                return False
        if self.persistent:  # in memory, the status keeps saying why nothing is persisted
            self._status.succeeded()
        return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _reason(err: sqlite3.Error) -> Reason:
    text = str(err)
    if "locked" in text or "busy" in text:
        return Reason.LOCKED
    if "full" in text or "disk I/O" in text:  # the disk, not the file: a retry may work once space frees
        return Reason.UNAVAILABLE
    return Reason.CORRUPT


def _os_reason(err: OSError) -> Reason:
    return Reason.PERMISSION if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else Reason.CONFIG


def _writable(path: str) -> bool:
    """Whether SQLite can write `path` and its journal beside it; probed with a file, since root ignores
    mode bits yet not a read-only mount."""
    probe = f"{path}.probe-{os.getpid()}"
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError:
        return False
    return not os.path.exists(path) or os.access(path, os.W_OK)
