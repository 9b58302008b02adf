"""In a pod: the service account token and CA, over HTTPS, with token rotation, and no `kubernetes` import."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from exporter.health import Health, Reason
from exporter.inventory import incluster
from exporter.inventory.incluster import InClusterConfig
from exporter.inventory.kube import KubeNodeWatcher
from exporter.inventory.parse import DEFAULT_SPOT_LABELS
from fakes.kube_api import FakeKubeAPI, RecordingSink, make_node, self_signed_cert, wait_for


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def api(tls: tuple[str, str]) -> Iterator[FakeKubeAPI]:
    with FakeKubeAPI(token="sa-token-1", tls=tls) as fake:
        yield fake


def service_account(tmp_path: Path, ca: str, token: str) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir(exist_ok=True)
    (directory / "ca.crt").write_text(Path(ca).read_text())
    (directory / "token").write_text(token + "\n")
    return directory


@contextmanager
def in_pod(sa: Path, sink: RecordingSink, health: Health) -> Iterator[KubeNodeWatcher]:
    """A watcher configured as in a pod (service account dir, env set by the caller), running until exit."""
    watcher = KubeNodeWatcher(
        sink,
        health.integration("kubernetes"),
        health,
        spot_labels=DEFAULT_SPOT_LABELS,
        service_account_dir=str(sa),
        backoff_initial=0.01,
        backoff_max=0.05,
    )
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield watcher
    finally:
        stop.set()
        thread.join(timeout=5)


def test_lists_and_watches_over_https_with_the_service_account(
    tmp_path: Path, api: FakeKubeAPI, tls: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
    monkeypatch.setattr(incluster, "TOKEN_REREAD_SECONDS", 0.0)  # our own constant: re-read on every request
    sa = service_account(tmp_path, tls[0], "sa-token-1")
    api.load([make_node("ip-10-0-1-10.ec2.internal", images=2)])
    sink, health = RecordingSink(), Health()
    status = health.integration("kubernetes")
    with in_pod(sa, sink, health) as watcher:
        wait_for(watcher.synced.is_set, "synced")
        assert sink.names() == {"ip-10-0-1-10.ec2.internal"}
        assert api.requests[0].authorized  # the server accepts only "Bearer sa-token-1" for now

        # The kubelet rotates the token file and the server stops accepting the old token.
        (sa / "token").write_text("sa-token-2\n")
        api.token = "sa-token-2"
        api.drop_watches()
        api.add_node(make_node("ip-10-0-1-11.ec2.internal", images=2))
        wait_for(lambda: "ip-10-0-1-11.ec2.internal" in sink.names(), "node after rotation")
        assert status.up
        assert api.requests[-1].authorized and api.requests[-1].status == 200


def test_wrong_ca_is_a_config_failure(
    tmp_path: Path, api: FakeKubeAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_ca, _ = self_signed_cert(tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(api.port))
    sa = service_account(tmp_path, other_ca, "sa-token-1")
    health = Health()
    status = health.integration("kubernetes")
    with in_pod(sa, RecordingSink(), health) as watcher:
        wait_for(lambda: status.reason is Reason.CONFIG, "TLS failure reported")
        assert "TLS" in status.detail
        assert not watcher.synced.is_set()


@pytest.mark.parametrize(
    ("env", "files", "message"),
    [
        ({}, {"ca.crt": "x", "token": "t"}, "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT"),
        (
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
            {"token": "t"},
            "ca.crt does not exist",
        ),
        (
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
            {"ca.crt": "x"},
            "token",
        ),
        (
            {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
            {"ca.crt": "x", "token": " \n"},
            "is empty",
        ),
    ],
)
def test_missing_pieces_are_named(
    tmp_path: Path, env: dict[str, str], files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        InClusterConfig(str(tmp_path), env)


def test_ipv6_service_host_is_bracketed(tmp_path: Path) -> None:
    service_account(tmp_path, __file__, "t")
    config = InClusterConfig(
        str(tmp_path / "serviceaccount"),
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"},
    )
    assert config.host == "https://[fd00::1]:443"
    assert config.auth_settings()["BearerToken"]["value"] == "Bearer t"


@pytest.mark.slow  # a Python process
def test_in_cluster_watching_never_imports_the_kubernetes_package(
    tmp_path: Path, tls: tuple[str, str]
) -> None:
    """The ~30 MiB the package costs is a third of the memory budget at 5,000 nodes."""
    sa = service_account(tmp_path, tls[0], "sa-token-1")
    probe = f"""
import sys, threading
from fakes.kube_api import FakeKubeAPI, RecordingSink, make_node, wait_for
from exporter.health import Health
from exporter.inventory.kube import KubeNodeWatcher
from exporter.inventory.parse import DEFAULT_SPOT_LABELS
import os
with FakeKubeAPI(token="sa-token-1", tls=({tls[0]!r}, {tls[1]!r})) as api:
    api.load([make_node("n1", images=1)])
    os.environ.update(KUBERNETES_SERVICE_HOST="127.0.0.1", KUBERNETES_SERVICE_PORT=str(api.port))
    health = Health()
    watcher = KubeNodeWatcher(RecordingSink(), health.integration("kubernetes"), health,
                              spot_labels=DEFAULT_SPOT_LABELS, service_account_dir={str(sa)!r})
    stop = threading.Event()
    threading.Thread(target=watcher.run, args=(stop,), daemon=True).start()
    wait_for(watcher.synced.is_set, "synced")
    stop.set()
print(sorted(m for m in sys.modules if m == "kubernetes" or m.startswith("kubernetes.")))
"""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=root
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
