"""The pod's service account as API credentials, the way client-go's InClusterConfig reads it.

In-cluster is how the exporter runs in production, and importing the `kubernetes` package costs ~30 MiB
(its generated client pulls in pydantic, cryptography and requests): a third of the memory budget for
reading two environment variables and two files. Kubeconfig files, with their many auth plugins, still go
through the `kubernetes` package.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Bound service-account tokens are rotated by the kubelet; client-go re-reads the file this often.
TOKEN_REREAD_SECONDS = 60.0


class InClusterConfig:
    """Duck-types the parts of `kubernetes.client.Configuration` the watcher uses."""

    verify_ssl = True
    cert_file: str | None = None
    key_file: str | None = None
    assert_hostname: str | None = None
    tls_server_name: str | None = None
    proxy: str | None = None
    proxy_headers: Mapping[str, str] | None = None

    def __init__(
        self, service_account_dir: str = SERVICE_ACCOUNT_DIR, env: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise ValueError("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set in a pod")
        self.host = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        directory = Path(service_account_dir)
        self.ssl_ca_cert = str(directory / "ca.crt")
        if not os.path.isfile(self.ssl_ca_cert):
            raise ValueError(f"service account CA {self.ssl_ca_cert} does not exist")
        self._token_path = directory / "token"
        self._lock = threading.Lock()
        self._token = ""
        self._read_at = 0.0
        self._read_token()

    def _read_token(self) -> None:
        try:
            token = self._token_path.read_text().strip()
        except OSError as err:
            raise ValueError(f"service account token {self._token_path}: {err.strerror}") from err
        if not token:
            raise ValueError(f"service account token {self._token_path} is empty")
        self._token, self._read_at = token, time.monotonic()

    def auth_settings(self) -> dict[str, dict[str, str]]:
        """The bearer token, re-read from disk once a minute so rotated tokens are picked up."""
        with self._lock:
            if time.monotonic() - self._read_at >= TOKEN_REREAD_SECONDS:
                self._read_token()
            token = self._token
        return {"BearerToken": {"in": "header", "key": "authorization", "value": f"Bearer {token}"}}
