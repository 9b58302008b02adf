"""AWS public prices: on-demand from the Price List Query API, spot from EC2's spot price history.

The AWS sources import the SDK only when they build a client (`aws_session`, `_client`) or map its errors:
the registry imports this module even when AWS is not configured. Clients are botocore's (what boto3's
clients are; the `aws` extra installs it with boto3). Each source has its own botocore session, so
credentials resolve per source, but all share one data loader: a session's first client parses the
service's JSON models (~0.2 s and several MiB), and without sharing, every source parses them again.

The SDK's own retries are switched off (`total_max_attempts=1`): `ShelfSource` retries with jittered
backoff, and every HTTP call is counted once in the integration's health. Filters sent to the APIs are
re-checked on every row returned: a price list holds BYOL, Dedicated/Host, capacity-reservation and
Capacity Block rows for the same type, and picking one of those by accident is a silent mispricing.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

from exporter.config import ShelfSettings
from exporter.config.sources.aws import PARTITION_CURRENCIES, partition_of
from exporter.health import Reason
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import (
    FetchError,
    parse_retry_after,
    reason_for_status,
    untrusted_tls_error,
)
from exporter.pricing.sources.shelf import ShelfSource
from exporter.tls import untrusted_certificate

# Node OS → the Price List's operatingSystem and operation (the operation suffix encodes the licence:
# RunInstances:0002 is licensed Windows, :0800 Windows BYOL, :0010 RHEL, :000g SUSE).
# A zone is its region plus a letter (us-east-1a), or a Local/Wavelength Zone suffix (us-west-2-lax-1a).
_ZONE_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d+")

_THROTTLED = {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequestsException"}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
# RequestExpired: a signature older than 15 minutes or dated in the future, a clock too far off (AWS's
# common errors, e.g. docs.aws.amazon.com/autoscaling/ec2/APIReference/CommonErrors.html; EC2 answers it).
_BAD_CREDENTIALS = {
    "RequestExpired",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
}
# What the API answers when the endpoint does not serve the call: the Price List's NotFoundException (an
# unknown service code or resource), EC2's InvalidAction (an action this endpoint does not know, e.g. an
# endpoint_url that is not EC2), and an AWS JSON service's UnknownOperationException.
_NOT_FOUND = {"NotFoundException", "ResourceNotFoundException", "InvalidAction", "UnknownOperationException"}
# The config section of the source behind each action, by the action's service, so every hint names a key
# that exists: spot has no region key (its regions come from the nodes) and the CUR, a billing source, no
# concurrency or ttl_seconds.
_SECTIONS = {"pricing": "aws.pricing", "ec2": "aws.spot", "athena": "aws.cur"}
_REGION_KEYED = {"aws.pricing", "aws.cur"}
_CODE_REASONS = {
    **dict.fromkeys(_THROTTLED, Reason.THROTTLED),
    **dict.fromkeys(_DENIED, Reason.PERMISSION),
    **dict.fromkeys(_BAD_CREDENTIALS, Reason.AUTH),
    **dict.fromkeys(_NOT_FOUND, Reason.NOT_FOUND),
}


_loader: Any = None  # botocore's data loader, shared by every AWS session of the process
_loader_lock = threading.Lock()


def aws_session(timeout_seconds: float, verify: str | None = None) -> Any:
    """A botocore session of its own (credentials and config resolved for its source) on the process's
    one data loader, so service models are parsed once. botocore's Loader caches what it loads and is
    only ever added to, so sharing it across sessions and threads is safe.

    The clients botocore makes for itself, the STS client of IRSA's AssumeRoleWithWebIdentity above all,
    get the source's deadline and no retries too: by default a hung STS endpoint holds a call for 60 s a
    try, several tries. `verify`, a CA bundle path, becomes the session's `ca_bundle`, which every client
    of the session trusts, those clients included (None: botocore's default, or AWS_CA_BUNDLE)."""
    import botocore.session
    from botocore.config import Config as BotoConfig

    global _loader
    session = botocore.session.Session()
    if verify:
        session.set_config_variable("ca_bundle", verify)
    session.set_default_client_config(
        BotoConfig(
            connect_timeout=min(60.0, timeout_seconds),
            read_timeout=timeout_seconds,
            retries={"total_max_attempts": 1},
        )
    )
    with _loader_lock:
        if _loader is None:
            _loader = session.get_component("data_loader")  # the first session's, from its config
        else:
            session.register_component("data_loader", _loader)
    return session


def whole_answers(client: Any) -> Any:
    """The client, refusing an answer whose body is shorter than its Content-Length: a connection cut
    midway through the answer. botocore would parse the half it got (a JSON or XML error at best, a
    silently short page at worst); it is a dropped connection, so it surfaces as one (UNAVAILABLE)."""
    from botocore.exceptions import ConnectionClosedError

    def check(response_dict: dict[str, Any], **_: Any) -> None:
        body, headers = response_dict.get("body"), response_dict.get("headers") or {}
        length = str(headers.get("content-length") or "")
        cut = isinstance(body, bytes) and length.isdigit() and len(body) < int(length)
        if cut and not headers.get("content-encoding"):
            raise ConnectionClosedError(endpoint_url=client.meta.endpoint_url)

    client.meta.events.register("before-parse", check)
    return client


def region_of_zone(zone: str) -> str | None:
    """The region an availability zone (or Local/Wavelength Zone) belongs to; None if it is not one."""
    match = _ZONE_REGION.match(zone)
    return match.group(0) if match and len(zone) > match.end() else None


S = TypeVar("S", bound=ShelfSettings)


class AwsSource(ShelfSource[S]):
    """What both AWS sources share: SDK clients without SDK retries, one error mapping."""

    def __init__(self, settings: S, context: SourceContext) -> None:
        super().__init__(settings, context)  # USD or CNY (config); each region's own: _check_currency
        self._session = aws_session(settings.timeout_seconds, context.sdk_verify())
        self._clients: dict[str, Any] = {}
        self._client_lock = threading.Lock()  # botocore sessions are not thread-safe; clients are
        self._warn_lock = threading.Lock()
        self._warned: set[str] = set()

    def _client(self, service: str, region: str) -> Any:
        from botocore.config import Config as BotoConfig

        with self._client_lock:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = whole_answers(
                    self._session.create_client(
                        service,
                        region_name=region,
                        endpoint_url=self.settings.endpoint_url or None,
                        config=BotoConfig(
                            connect_timeout=self.settings.timeout_seconds,
                            read_timeout=self.settings.timeout_seconds,
                            retries={"total_max_attempts": 1},
                            max_pool_connections=max(10, self.settings.concurrency),
                            user_agent_extra="node-cost-exporter",
                        ),
                    )
                )
            return client

    def _check_currency(self, region: str) -> None:
        """Refuse, with what to set, prices quoted in another currency than pricing.currency: the China
        regions' prices are CNY, and a CNY figure read as USD would be a silent mispricing."""
        quoted = PARTITION_CURRENCIES[partition_of(region)]
        if quoted != self.currency:
            raise FetchError(
                Reason.CONFIG,
                f"AWS quotes {region} prices in {quoted}, not {self.currency}: a cluster in "
                f"{partition_of(region)} needs pricing.currency: {quoted}",
            )

    def _call(self, client: Any, operation: str, action: str, **params: Any) -> dict[str, Any]:
        """One HTTP call: counted in health; an SDK failure becomes a FetchError saying what to do."""
        try:
            response: dict[str, Any] = getattr(client, operation)(**params)
        except Exception as err:
            failure = _fetch_error(
                err, action, client.meta.endpoint_url, self.settings.timeout_seconds, self.clock.time()
            )
            self.status.record_request(failure.reason if failure else Reason.BAD_RESPONSE)
            if failure is None:
                raise
            raise failure from err
        self.status.record_request()
        return response

    def _pages(
        self, client: Any, operation: str, action: str, params: dict[str, Any]
    ) -> Iterator[dict[str, Any]]:
        """Every page of a NextToken-paged call; a server repeating a token would otherwise loop forever."""
        seen: set[str] = set()
        while True:
            page = self._call(client, operation, action, **params)
            yield page
            token = page.get("NextToken")
            if not token:
                return
            if token in seen:
                raise FetchError(Reason.BAD_RESPONSE, f"{action} repeated a NextToken; stopped paging")
            seen.add(token)
            params = {**params, "NextToken": token}

    def _warn_once(self, topic: str, message: str, *args: object) -> None:
        with self._warn_lock:
            if topic in self._warned:
                return
            self._warned.add(topic)
        self.log.warning(message, *args)


def _fetch_error(err: Exception, action: str, endpoint: str, timeout: float, now: float) -> FetchError | None:
    """The FetchError for an SDK exception, or None for one we do not expect (a bug: let it surface)."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        CredentialRetrievalError,
        HTTPClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
        TokenRetrievalError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.parsers import ResponseParserError  # not re-exported by botocore.exceptions

    section = _SECTIONS[action.split(":", 1)[0]]
    if untrusted_certificate(err):
        return untrusted_tls_error(endpoint)
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        meta = err.response.get("ResponseMetadata", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        http = int(meta.get("HTTPStatusCode") or 0)
        said = f"{code}: {message}" if message else code
        # The code decides first (ExpiredTokenException comes with a 403, throttling with a 400); the status
        # speaks only for a code not listed here. An unknown 400 stays bad_response: AWS answers most errors
        # with 400, so it names no setting to fix.
        reason = _CODE_REASONS.get(code) or (reason_for_status(http) if http != 400 else Reason.BAD_RESPONSE)
        if reason is Reason.THROTTLED:
            return FetchError(
                Reason.THROTTLED,
                f"{action} throttled ({said}); "
                + (
                    f"raise {section}.backoff_seconds"
                    if section == "aws.cur"
                    else f"lower {section}.concurrency or raise {section}.ttl_seconds"
                ),
                retry_after=_retry_after(meta.get("HTTPHeaders", {}), now),
            )
        if reason is Reason.PERMISSION:
            return FetchError(Reason.PERMISSION, f"{action} denied: grant the {action} IAM action ({said})")
        if reason is Reason.AUTH:
            return FetchError(
                Reason.AUTH,
                f"{action}: AWS rejected the credentials ({said}); check the pod's IAM role "
                "(IRSA or EKS Pod Identity) or its AWS_* variables",
            )
        if reason is Reason.NOT_FOUND:
            return FetchError(
                Reason.NOT_FOUND,
                f"{action} not found at {endpoint} ({said}); check {section}.endpoint_url"
                + (f" and {section}.region" if section in _REGION_KEYED else ""),
            )
        if reason is Reason.TIMEOUT:
            return FetchError(Reason.TIMEOUT, f"{action} timed out at {endpoint} with HTTP {http} ({said})")
        if reason is Reason.UNAVAILABLE:
            return FetchError(
                Reason.UNAVAILABLE,
                f"{action} failed at {endpoint} with HTTP {http} ({said}): an AWS-side error",
                retry_after=_retry_after(meta.get("HTTPHeaders", {}), now),
            )
        return FetchError(Reason.BAD_RESPONSE, f"{action} refused with HTTP {http} ({said})")
    if isinstance(err, NoCredentialsError | PartialCredentialsError):
        return FetchError(
            Reason.AUTH,
            f"{action}: no AWS credentials ({err}); give the pod an IAM role (IRSA or EKS Pod Identity) "
            "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        )
    if isinstance(err, CredentialRetrievalError | TokenRetrievalError):
        return FetchError(Reason.AUTH, f"{action}: could not obtain AWS credentials: {err}")
    if isinstance(err, ConnectTimeoutError | ReadTimeoutError):
        return FetchError(
            Reason.TIMEOUT,
            f"{action} timed out after {timeout:g}s at {endpoint}; "
            f"check egress or raise {section}.timeout_seconds",
        )
    if isinstance(err, BotoConnectionError | HTTPClientError):
        return FetchError(
            Reason.UNAVAILABLE,
            f"{action}: cannot reach {endpoint} ({err}); check {section}.endpoint_url, DNS and egress",
        )
    if isinstance(err, ResponseParserError):
        return FetchError(
            Reason.BAD_RESPONSE, f"{action}: unreadable response from {endpoint}: {str(err)[:300]}"
        )
    return None


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds from a Retry-After header (botocore lower-cases header names); None if absent."""
    return parse_retry_after(headers.get("retry-after"), now)
