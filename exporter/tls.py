"""Trust for every HTTPS client the exporter makes: `tls.ca_file` is *added* to the public roots, never put
in their place. Behind a TLS-inspecting proxy most hosts are re-signed by the corporate CA, yet some are
exempted from inspection (token endpoints often are) and still show their public certificate, so both must
verify.

The SDKs take a CA *file* (botocore `verify`, requests `verify`, azure-core `connection_verify`), and each
replaces its default roots with that file. So the file they get, `sdk_bundle()`, is certifi's roots (what
they trust by default) followed by the corporate CA, written once per process. The exporter's own urllib3
clients take an `ssl_context()` instead: the system roots plus the corporate CA, nothing written.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import ssl
import tempfile
import threading
from pathlib import Path

_bundles: dict[str, str] = {}
_lock = threading.Lock()


class TrustError(Exception):
    """The combined bundle could not be written; the message says where and why."""


def ssl_context(ca_file: str, base_ca_file: str | None = None) -> ssl.SSLContext:
    """A client context trusting `base_ca_file` (else the system roots) and `ca_file` besides.

    Built as urllib3 builds its own (its hostname matching, its protocol floor), so handing it to a pool
    changes nothing but the roots."""
    from urllib3.util.ssl_ import create_urllib3_context

    context = create_urllib3_context()
    if base_ca_file:
        context.load_verify_locations(cafile=base_ca_file)
    else:
        context.load_default_certs()
    context.load_verify_locations(cafile=ca_file)
    return context


def sdk_bundle(ca_file: str) -> str:
    """The path of a PEM file with certifi's roots followed by `ca_file`'s certificates, for the SDKs'
    `verify` options. Written once per `ca_file` into the temporary directory ($TMPDIR), removed at exit."""
    with _lock:
        path = _bundles.get(ca_file)
        if path is None:
            path = _bundles[ca_file] = _write_bundle(ca_file)
        return path


def _write_bundle(ca_file: str) -> str:
    import certifi  # a dependency of the kubernetes package, hence always installed

    public = Path(certifi.where()).read_bytes()
    corporate = Path(ca_file).read_bytes()
    try:
        fd, path = tempfile.mkstemp(prefix="node-cost-exporter-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as out:
            out.write(public.rstrip(b"\n") + b"\n" + corporate)
    except OSError as err:  # no writable temporary directory: a read-only root filesystem
        raise TrustError(
            f"cannot write the CA bundle (public roots + {ca_file}) to a temporary directory "
            f"({err.strerror or err}); set TMPDIR to a writable directory, e.g. the cache volume's"
        ) from err
    atexit.register(_remove, path)
    return path


def untrusted_certificate(err: BaseException) -> bool:
    """Whether `err`, or an error it wraps (`__cause__`, urllib3's `reason`, azure-core's
    `inner_exception`), is a server certificate this process does not trust: the one failure that
    `tls.ca_file` fixes, and that no retry does."""
    pending, seen = [err], set()
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        text = str(error)
        if isinstance(error, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            return True
        for name in ("__cause__", "__context__", "reason", "inner_exception"):
            inner = getattr(error, name, None)
            if isinstance(inner, BaseException):
                pending.append(inner)
    return False


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
