"""Child processes and HTTP over loopback, with a timeout on every wait (a benchmark must never hang)."""

from __future__ import annotations

import http.client
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"


class BenchError(RuntimeError):
    """A measurement could not be made (a child died, a wait timed out)."""


class Child:
    """A child Python process speaking line commands on stdin/stdout; killed by `close()`."""

    def __init__(
        self,
        name: str,
        args: list[str],
        *,
        log: Path | None = None,
        pipe_stdout: bool = True,
        env: dict[str, str] | None = None,
    ):
        """`env` is added to a copy of this process' environment, from which any in-cluster variables
        (KUBERNETES_SERVICE_*), KUBECONFIG and NODECOST_* settings are first removed: a child sees only
        what it is given."""
        self.name = name
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._log: IO[bytes] | None = log.open("wb") if log is not None else None
        self.started = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE if pipe_stdout else self._log,
            stderr=self._log if self._log is not None else subprocess.DEVNULL,
            text=pipe_stdout,
            env=_child_env(env or {}),
        )
        if pipe_stdout:
            threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, word: str, timeout: float) -> list[str]:
        """The fields after `word` on the next line starting with it."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"{self.name}: no {word} line within {timeout:.0f} s")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise BenchError(f"{self.name} exited (code {self.proc.poll()}) before {word}")
            fields = line.split()
            if fields and fields[0] == word:
                return fields[1:]
            if fields and fields[0] == "ERROR":
                raise BenchError(f"{self.name}: {line}")

    def ask(self, command: str, word: str, timeout: float) -> list[str]:
        self.send(command)
        return self.expect(word, timeout)

    def close(self) -> None:
        """Ask nicely (stdin closed, SIGTERM), then kill; always reaps the process."""
        if self.proc.poll() is None:
            try:
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            except OSError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KUBERNETES_SERVICE_", "NODECOST_")) and k != "KUBECONFIG"
    }
    return {**base, **extra}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def get(
    port: int, path: str, *, headers: dict[str, str] | None = None, timeout: float = 30.0
) -> tuple[int, bytes]:
    """One request on a fresh connection: (status, body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def timed_get(
    conn: http.client.HTTPConnection, path: str, headers: dict[str, str], *, quickack: bool = True
) -> tuple[float, bytes]:
    """Seconds from sending the request to reading the body's last byte, on a kept-alive connection.

    With `quickack` the client acknowledges the response's first segment at once, as a client does after
    an idle spell (a scrape interval). Back-to-back requests otherwise put Linux into delayed-ACK mode, and
    a server that sends headers and a body under one segment as two writes (Nagle on) waits ~40 ms for
    that ACK: a stall of the client's making that would swamp the server time being measured.
    """
    start = time.perf_counter()
    conn.request("GET", path, headers=headers)
    if quickack and conn.sock is not None:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    resp = conn.getresponse()
    body = resp.read()
    elapsed = time.perf_counter() - start
    if resp.status != 200:
        raise BenchError(f"GET {path}: HTTP {resp.status}")
    return elapsed, body


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM … from /proc/PID/status, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Vm"):
            parts = value.split()
            out[key] = int(parts[0]) * 1024 if parts else 0
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
