"""The exporter as a real process, for the reliability tests: start it, wait for it, probe it, stop it;
and the fake cluster and AWS price list it runs against."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fakes.aws_api import PricingApi, ec2_product
from fakes.kube_api import FakeKubeAPI, make_node, write_kubeconfig

# Static credentials from the environment, as a pod given an access key has them.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AWS_EC2_METADATA_DISABLED": "true",
}
KUBE_TOKEN = "test-token"


@contextlib.contextmanager
def fake_cluster(token: str = KUBE_TOKEN) -> Iterator[FakeKubeAPI]:
    """A Kubernetes API with 20 m5.xlarge nodes in us-east-1."""
    with FakeKubeAPI(token=token) as api:
        api.load([make_node(f"ip-10-0-0-{i}.ec2.internal") for i in range(20)])
        yield api


@contextlib.contextmanager
def fake_prices() -> Iterator[PricingApi]:
    """The AWS Price List Query API, with the m5.xlarge us-east-1 Linux price."""
    with PricingApi() as fake:
        fake.add(ec2_product("us-east-1", "m5.xlarge", "0.1920000000"))
        yield fake


def write_config(tmp_path: Path, kube: FakeKubeAPI, prices: PricingApi) -> Path:
    """A config file: the fake cluster, the fake price list, a cache file under `tmp_path`."""
    path = tmp_path / "config.yaml"
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube.url, kube.token)
    settings = {
        "kubernetes": {"kubeconfig": str(kubeconfig)},
        "cache": {"path": str(tmp_path / "cache.sqlite")},
        "aws": {"pricing": {"enabled": True, "endpoint_url": prices.url, "timeout_seconds": 5}},
    }
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


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


def run(
    tmp_path: Path, config_file: Path, name: str, flags: Sequence[str] = (), env: Mapping[str, str] = AWS_ENV
) -> Exporter:
    """The exporter on `config_file` with `flags` and `env` (nothing from the machine's own AWS setup),
    listening; its stderr in `tmp_path`/`name`.log."""
    none = str(tmp_path / "none")
    env = {**env, "AWS_CONFIG_FILE": none, "AWS_SHARED_CREDENTIALS_FILE": none}
    exporter = start([f"--config.file={config_file}", *flags], tmp_path / f"{name}.log", env)
    exporter.wait_listening()
    return exporter
