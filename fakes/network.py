"""A corporate network in a box, for the tests of `tls.ca_file` and the sovereign clouds: a private CA
that signs certificates for real cloud hostnames, and an HTTP CONNECT proxy that maps those hostnames to
the local fakes, so the SDKs talk to `api.pricing.cn-northwest-1.amazonaws.com.cn` or
`management.usgovcloudapi.net` by name, with nothing patched and no /etc/hosts edit.

- `TestCA`: a root CA and leaf certificates (SANs: the names given, plus 127.0.0.1), written as PEM files
  for `FakeServer(tls=…)`; the CA file is what a test sets as `tls.ca_file`.
- `ConnectProxy`: what HTTPS_PROXY points at. boto3 (urllib3), requests (google-auth) and azure-core all
  send `CONNECT host:443` and then speak TLS to `host` through the tunnel (RFC 9110, 9.3.6), so the name
  checked against the certificate is the real cloud hostname. Each CONNECT target is recorded
  (`connects`); one the routes do not know is answered 502, as a proxy that cannot reach it would.
"""

from __future__ import annotations

import datetime
import select
import socket
import threading
from contextlib import suppress
from pathlib import Path
from socketserver import StreamRequestHandler, ThreadingTCPServer
from typing import Any


class TestCA:
    """A root CA in `directory`; `issue(*names)` signs a server certificate for those names."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, name: str = "Corporate Inspection CA") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._name = subject
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = str(directory / "corporate-ca.pem")
        Path(self.ca_file).write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, *names: str, label: str = "server") -> tuple[str, str]:
        """(certificate, key) PEM files for `names` (and IP 127.0.0.1), signed by this CA."""
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        alternatives: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
        alternatives.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else label)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_file, key_file = self.directory / f"{label}.crt", self.directory / f"{label}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return str(cert_file), str(key_file)


class ConnectProxy:
    """An HTTP CONNECT proxy on 127.0.0.1 tunnelling `host:port` to the local port `routes` maps `host` to.

    `with ConnectProxy({"management.usgovcloudapi.net": fake.port}) as proxy:` then HTTPS_PROXY=proxy.url.
    """

    def __init__(self, routes: dict[str, int] | None = None) -> None:
        self.routes: dict[str, int] = dict(routes or {})
        self.connects: list[str] = []  # every CONNECT target, "host:port", in arrival order
        self._lock = threading.Lock()
        self._server: ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def hosts(self) -> list[str]:
        """The hosts CONNECT asked for, without ports, in order."""
        with self._lock:
            return [target.rsplit(":", 1)[0] for target in self.connects]

    def __enter__(self) -> ConnectProxy:
        proxy = self

        class Handler(StreamRequestHandler):
            def handle(self) -> None:
                proxy._tunnel(self)

        self._server = ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.01,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _tunnel(self, handler: StreamRequestHandler) -> None:
        request_line = handler.rfile.readline(65536).decode("latin-1").strip()
        while handler.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
            pass  # the proxy request's headers: nothing here needs them
        method, _, rest = request_line.partition(" ")
        target = rest.split(" ", 1)[0]
        if method != "CONNECT":
            handler.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        with self._lock:
            self.connects.append(target)
        port = self.routes.get(target.rsplit(":", 1)[0])
        if port is None:
            handler.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        upstream = socket.create_connection(("127.0.0.1", port), timeout=10)
        handler.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        handler.wfile.flush()
        _pipe(handler.connection, upstream)


def _pipe(client: Any, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    sockets = [client, upstream]
    try:
        while True:
            readable, _, _ = select.select(sockets, [], [], 30)
            if not readable:
                return
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                (upstream if sock is client else client).sendall(data)
    except OSError:
        return
    finally:
        with suppress(OSError):
            upstream.close()
