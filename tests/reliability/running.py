"""The exporter as a real process, for the reliability tests: start it, wait for it, probe it, stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(url: str, timeout: float = 10.0) -> tuple[int, float]:
    """(status, seconds taken) of one GET; an HTTP error status is an answer too."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            status = int(response.status)
    except urllib.error.HTTPError as err:
        err.read()
        status = err.code
    return status, time.monotonic() - started


@dataclass
class Exporter:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path  # its stderr: a file, so a chatty debug run never blocks on a full pipe

    def wait_listening(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exporter exited early: {self.log.read_text()}"
            try:
                probe(self.url + "/healthz", timeout=2)
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("exporter did not listen in time")

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while probe(self.url + "/readyz")[0] != 200:
            assert time.monotonic() < deadline, "exporter not ready in time"
            time.sleep(0.1)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 20.0) -> str:
        """Its stderr, once it exited (killed when it did not within `timeout`)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.log.read_text()


def start(args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Exporter:
    """`python -m exporter` on a free port with `args`, stderr to `log`; `env` added to a copy of this
    one's environment with every NODECOST_ and AWS_ variable of the caller's own dropped."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("NODECOST_", "AWS_"))}
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", f"--web.listen-address=127.0.0.1:{port}", *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**base, **(env or {})},
        )
    return Exporter(proc, f"http://127.0.0.1:{port}", log)
