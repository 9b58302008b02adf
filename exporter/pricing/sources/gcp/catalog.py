"""GCP list prices from the Cloud Billing Catalog: Compute Engine SKUs priced per vCPU, GiB and GPU, put
together into a machine's hourly price from its machine type's name.

Why it is built this way:
- GCP publishes no price per machine type: a VM costs its vCPUs * the family's core SKU + its GiB * the
  family's RAM SKU (+ GPUs * the accelerator's SKU). Families are read from SKU descriptions ("N2 Instance
  Core running in Americas"), never from a list in code, so a family launched tomorrow prices the day its
  SKUs appear (OpenCost #2797/#3444 priced new families at 0).
- The catalog has no server-side filter: it is listed whole (~tens of thousands of SKUs, 5,000 a page) once
  per refresh for every key. Each page is decoded one SKU at a time and folded into a small table of unit
  prices for the wanted regions, so a page never exists as a Python object tree.
- The table is kept for the TTL: a node of a new type, a Spot node or a GPU node seen within it is priced
  without listing the catalog again (so a price can be up to twice the TTL old).
- Plain HTTPS through `requests`: an API key goes in the `x-goog-api-key` header (never in a URL that ends
  up in logs), otherwise Application Default Credentials through google-auth's AuthorizedSession (Workload
  Identity on GKE). google-cloud-billing's CloudCatalogClient would work (its REST transport honours an
  `http://` api_endpoint) but imports gRPC and protobuf (~27 MiB more RSS) and parses every page whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from exporter.config.sources.gcp import GcpCatalogSettings
from exporter.health import Reason
from exporter.inventory.node import CapacityType, Node
from exporter.pricing.money import parse_money
from exporter.pricing.quote import Basis
from exporter.pricing.sources.context import SourceContext
from exporter.pricing.sources.fetch import (
    FetchError,
    parse_retry_after,
    reason_for_status,
    untrusted_tls_error,
)
from exporter.pricing.sources.gcp.json_scan import scan_page
from exporter.pricing.sources.gcp.machine_shapes import gpu_id, implied_gpus, machine_shape
from exporter.pricing.sources.registry import register
from exporter.pricing.sources.shelf import Key, ShelfPrice, ShelfSource
from exporter.tls import untrusted_certificate

if TYPE_CHECKING:  # requests and google-auth are imported when a listing starts
    import requests


SERVICE = "6F81-5844-456A"  # Compute Engine's service id in the catalog
DEFAULT_ENDPOINT = "https://cloudbilling.googleapis.com"
PAGE_SIZE = 5000  # the API's maximum
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
ON_DEMAND = "OnDemand"
SPOT = "Preemptible"  # GKE Spot and preemptible VMs both bill under this usage type
_MAX_PAGES = 1000  # a server handing out endless page tokens is a bad response, not a loop

# -- SKUs -------------------------------------------------------------------------------------------------

_USAGE_PREFIX = re.compile(r"^(?:spot\s+)?preemptible\s+", re.IGNORECASE)
_INSTANCE_SKU = re.compile(
    r"(?:(?P<family>[a-z]\d[a-z0-9]*)\s+)?"
    r"(?P<quals>(?:(?:amd|arm|intel|predefined|custom|extended|memory-optimized)\s+)*)"
    r"instance\s+(?P<res>core|ram)\s+running\s+in\s",
    re.IGNORECASE,
)
_C2_SKU = re.compile(r"compute\s+optimized\s+(?P<res>core|ram)\s+running\s+in\s", re.IGNORECASE)  # C2's
_GPU_SKU = re.compile(
    r"(?P<model>.+?)\s+gpu(?:\s+attached\s+to\s+spot\s+preemptible\s+vms)?\s+running\s+in\s", re.IGNORECASE
)
_FLAT_GROUP = re.compile(r"([A-Z]\d+)([A-Z][a-z]+)")  # F1Micro → f1-micro, G1Small → g1-small

PriceKey = tuple[str, str, str, str]  # (region, usage type, family, resource)


def sku_resource(description: str, group: str, unit: str) -> tuple[str, str] | None:
    """(family, resource) a Compute Engine SKU prices — resource one of core, ram, custom core, custom ram,
    extended ram, gpu:<id>, flat:<machine type> — or None when it prices nothing a node is made of.

    Only the qualifiers seen on machine SKUs are accepted between the family and "Instance", so sole-tenancy,
    commitment and premium SKUs never pass for a family's rate. Unit checks stop a GiBy.mo or GiBy price
    from being read as hourly."""
    text = _USAGE_PREFIX.sub("", description.strip(), count=1)
    if group == "GPU":
        gpu = _GPU_SKU.match(text)
        return ("", "gpu:" + gpu_id(gpu["model"])) if gpu and unit == "h" else None
    if m := _INSTANCE_SKU.match(text):
        quals = m["quals"].lower().split()
        family = (m["family"] or ("n1" if "custom" in quals else "")).lower()  # "Custom Instance Core": N1
        if not family:
            return None
    elif m := _C2_SKU.match(text):
        family, quals = "c2", []
    else:
        flat = _FLAT_GROUP.fullmatch(group)
        if flat and unit == "h" and "instance" in text.lower():
            return "", f"flat:{flat[1].lower()}-{flat[2].lower()}"
        return None
    resource = m["res"].lower()
    if unit != ("h" if resource == "core" else "GiBy.h"):
        return None
    if resource == "ram" and "extended" in quals:
        return family, "extended ram"
    return family, f"custom {resource}" if "custom" in quals else resource


class _Table:
    """Unit prices of the wanted regions, folded from SKUs one at a time."""

    def __init__(self, regions: frozenset[str], currency: str) -> None:
        self.regions = regions
        self.currency = currency
        self.prices: dict[PriceKey, Decimal] = {}
        self.seen = 0  # SKUs listed
        self.unreadable = 0  # machine SKUs whose price could not be read
        self.other_currency = 0  # machine SKUs priced in another currency than asked for

    def fold(self, sku: object) -> None:
        if not isinstance(sku, dict):
            raise ValueError("a SKU is not a JSON object")
        self.seen += 1
        category = sku.get("category")
        if not isinstance(category, dict) or category.get("usageType") not in (ON_DEMAND, SPOT):
            return  # commitments (Commit1Yr, Commit3Yr) and anything unclassified
        served = sku.get("serviceRegions")
        regions = [r for r in served if r in self.regions] if isinstance(served, list) else []
        if not regions:
            return
        infos = sku.get("pricingInfo")
        info = infos[0] if isinstance(infos, list) and infos and isinstance(infos[0], dict) else {}
        expression = info.get("pricingExpression")
        expression = expression if isinstance(expression, dict) else {}
        resource = sku_resource(
            str(sku.get("description", "")),
            str(category.get("resourceGroup", "")),
            str(expression.get("usageUnit", "")),
        )
        if resource is None:
            return
        price = _last_tier(expression)
        if price is None:
            self.unreadable += 1
            return
        value, currency = price
        if currency != self.currency:
            self.other_currency += 1
            return
        for region in regions:
            # First wins: the catalog's order is stable, so a duplicate cannot flip a price between refreshes.
            self.prices.setdefault((region, category["usageType"], *resource), value)


def _last_tier(expression: Mapping[str, Any]) -> tuple[Decimal, str] | None:
    """units + nanos·1e-9 of the last tier (the rate at any real usage), and its currency."""
    rates = expression.get("tieredRates")
    if not isinstance(rates, list) or not rates or not isinstance(rates[-1], dict):
        return None
    money = rates[-1].get("unitPrice")
    if not isinstance(money, dict):
        return None
    units, nanos = money.get("units", "0"), money.get("nanos", 0)  # proto3 JSON omits zeros
    if type(nanos) is not int or not 0 <= nanos < 10**9:
        return None
    try:
        value = parse_money(units) + Decimal(nanos).scaleb(-9)
    except ValueError:
        return None
    return value, str(money.get("currencyCode", ""))


# -- the source -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Catalog:
    prices: dict[PriceKey, Decimal]
    regions: frozenset[str]
    listed_at: float


@register("gcp.catalog", settings=GcpCatalogSettings, extra="gcp", sdk=("requests", "google.auth"))
class GcpCatalogPrices(ShelfSource[GcpCatalogSettings]):
    """Compute Engine list prices. Key: (region, machine type, "spot"|"on_demand", GPU model, GPU count)."""

    name = "gcp_catalog"

    def __init__(self, settings: GcpCatalogSettings, context: SourceContext) -> None:
        self._endpoint = (settings.endpoint_url or DEFAULT_ENDPOINT).rstrip("/")
        self._catalog: _Catalog | None = None
        self._verify = context.sdk_verify()
        super().__init__(settings, context)

    def key(self, node: Node) -> Key | None:
        if node.provider != "gcp" or not node.region or not node.instance_type:
            return None
        capacity = "spot" if node.capacity_type is CapacityType.SPOT else "on_demand"
        # The type's name is what is billed: a2-highgpu-1g has its A100 even before the device plugin reports
        # it; GPUs attached to other types (n1 + T4, g2 + L4) are counted from the node's capacity.
        gpus = implied_gpus(node.instance_type) or node.gpu_count
        return (node.region, node.instance_type, capacity, node.gpu_model if gpus else "", str(gpus))

    def basis_of(self, key: Key) -> Basis:
        return Basis.SPOT if key[2] == "spot" else Basis.ON_DEMAND

    def batches(self, keys: Sequence[Key]) -> list[list[Key]]:
        """One batch: the whole catalog is listed once for every key (the API cannot filter it)."""
        return [list(keys)]

    def fetch(self, keys: Sequence[Key]) -> Mapping[Key, ShelfPrice | None]:
        """Prices from the unit-price table, listing the catalog when the table is older than the TTL or
        lacks a key's region. Only one batch exists, so only one thread at a time touches the table."""
        prices = self._catalog_for(frozenset(key[0] for key in keys)).prices
        return {key: price for key in keys if (price := machine_price(prices, key)) is not None}

    # -- listing ------------------------------------------------------------------------------------------

    def _catalog_for(self, regions: frozenset[str]) -> _Catalog:
        catalog = self._catalog
        fresh = catalog is not None and self.clock.time() - catalog.listed_at < self.settings.ttl_seconds
        if catalog is not None and fresh and regions <= catalog.regions:
            return catalog
        if catalog is not None and fresh:
            regions |= catalog.regions
        catalog = self._list(regions)
        self._catalog = catalog
        return catalog

    def _list(self, regions: frozenset[str]) -> _Catalog:
        table = _Table(regions, self.currency)
        session, headers = self._session()
        with session:
            token, tokens = "", set()
            for _ in range(_MAX_PAGES):
                params = {"currencyCode": self.currency, "pageSize": str(PAGE_SIZE)}
                if token:
                    params["pageToken"] = token
                text = self._get(session, headers, params)
                try:
                    token = scan_page(text, table.fold)
                except ValueError as err:
                    detail = f"unreadable Cloud Billing Catalog page: {err}"
                    raise self._failed(Reason.BAD_RESPONSE, detail) from err
                self.status.record_request()
                if not token:
                    break
                if token in tokens:
                    raise FetchError(Reason.BAD_RESPONSE, "the Cloud Billing Catalog repeated a page token")
                tokens.add(token)
            else:
                raise FetchError(
                    Reason.BAD_RESPONSE, f"the Cloud Billing Catalog did not end in {_MAX_PAGES} pages"
                )
        if table.unreadable:
            self.log.warning("skipped %d machine SKUs with an unreadable price", table.unreadable)
        # An empty listing (or one in the wrong currency) must not replace known prices with "unpriced";
        # SKUs but none for these regions is an answer: their nodes are unpriced.
        if not table.seen:
            raise FetchError(Reason.NO_DATA, "the Cloud Billing Catalog listed no Compute Engine SKUs")
        if not table.prices and table.other_currency:
            raise FetchError(
                Reason.NO_DATA,
                f"the Cloud Billing Catalog has no Compute Engine prices in {self.currency} for "
                f"{', '.join(sorted(regions))} ({table.other_currency} SKUs came in another currency)",
            )
        return _Catalog(table.prices, regions, self.clock.time())

    def _session(self) -> tuple[requests.Session, dict[str, str]]:
        """A session for one listing: an API key header, or ADC (tokens refreshed by google-auth)."""
        import requests
        from google.auth.exceptions import DefaultCredentialsError

        if self.settings.api_key:
            return trusting(requests.Session(), self._verify), {"x-goog-api-key": self.settings.api_key}
        import google.auth  # ~14 MiB: only when there is no API key
        from google.auth.transport.requests import AuthorizedSession, Request

        try:
            credentials, _ = google.auth.default(scopes=SCOPES)
        except DefaultCredentialsError as err:
            raise FetchError(
                Reason.AUTH,
                "no Google credentials: set gcp.catalog.api_key, or give the pod a Workload Identity "
                f"(or GOOGLE_APPLICATION_CREDENTIALS) ({err})",
            ) from err
        # No silent re-send on 401: each call is counted once, and the next refresh builds fresh credentials.
        # Token refreshes go through a session of their own, which must trust tls.ca_file as well.
        refresh = Request(trusting(requests.Session(), self._verify))
        session = AuthorizedSession(  # type: ignore[no-untyped-call]
            credentials, max_refresh_attempts=0, auth_request=refresh
        )
        return trusting(session, self._verify), {}

    def _get(self, session: requests.Session, headers: dict[str, str], params: dict[str, str]) -> str:
        """One page's text; the bytes are dropped on return, so a page is held once while it is scanned."""
        import requests
        from google.auth.exceptions import GoogleAuthError, RefreshError

        url = f"{self._endpoint}/v1/services/{SERVICE}/skus"
        timeout = self.settings.timeout_seconds
        try:
            response = session.get(url, params=params, headers=headers, timeout=timeout)
        except requests.Timeout as err:
            raise self._failed(
                Reason.TIMEOUT, f"no answer from {self._endpoint} within {timeout:g}s"
            ) from err
        except RefreshError as err:
            raise self._failed(Reason.AUTH, f"Google credentials could not be refreshed: {err}") from err
        except (requests.RequestException, GoogleAuthError) as err:
            if untrusted_certificate(err):
                untrusted = untrusted_tls_error(self._endpoint)
                raise self._failed(untrusted.reason, untrusted.detail) from err
            raise self._failed(
                Reason.UNAVAILABLE, f"cannot reach {self._endpoint}: {type(err).__name__}"
            ) from err
        if response.status_code != 200:
            raise self._http_error(response)
        try:
            return response.content.decode("utf-8")
        except UnicodeDecodeError as err:
            raise self._failed(
                Reason.BAD_RESPONSE, f"Cloud Billing Catalog page is not UTF-8: {err}"
            ) from err

    def _failed(self, reason: Reason, detail: str, retry_after: float | None = None) -> FetchError:
        self.status.record_request(reason)
        return FetchError(reason, detail, retry_after=retry_after)

    def _http_error(self, response: requests.Response) -> FetchError:
        status = response.status_code
        message, google_reason = _google_error(response)
        what = f"Cloud Billing Catalog answered {status}" + (f" ({message})" if message else "")
        if status == 400 and ("API_KEY" in google_reason or "API key" in message):
            return self._failed(Reason.AUTH, f"{what}: check gcp.catalog.api_key")
        reason = reason_for_status(status)
        if reason is Reason.THROTTLED:
            return self._failed(
                Reason.THROTTLED,
                what,
                parse_retry_after(response.headers.get("Retry-After"), self.clock.time()),
            )
        hint = {
            Reason.CONFIG: ": check pricing.currency",
            Reason.AUTH: ": check gcp.catalog.api_key or the Workload Identity binding",
            Reason.PERMISSION: (
                ": enable the Cloud Billing API (cloudbilling.googleapis.com) in the project of the "
                "API key or service account, and allow the key to call it"
            ),
            Reason.NOT_FOUND: ": check gcp.catalog.endpoint_url",
        }.get(reason, "")
        return self._failed(reason, what + hint)


def machine_price(prices: Mapping[PriceKey, Decimal], key: Key) -> ShelfPrice | None:
    """vCPUs * core + GiB * RAM (+ extended GiB * extended RAM) + GPUs * GPU, or a flat instance SKU
    (f1-micro, g1-small); None when any part is missing: an unpriced node, never a partial or zero price."""
    region, machine, capacity, gpu_model, gpu_count = key
    usage = SPOT if capacity == "spot" else ON_DEMAND
    gpus = int(gpu_count)
    gpu = prices.get((region, usage, "", "gpu:" + gpu_id(gpu_model))) if gpus else None
    if gpus and gpu is None:
        return None
    gpu_cost = gpus * gpu if gpu is not None else Decimal(0)
    flat = prices.get((region, usage, "", f"flat:{machine.lower()}"))
    if flat is not None:
        return ShelfPrice(flat + gpu_cost, gpu_hourly=gpu)
    shape = machine_shape(machine)
    if shape is None:
        return None
    prefix = "custom " if shape.custom else ""
    core = prices.get((region, usage, shape.family, prefix + "core"))
    ram = prices.get((region, usage, shape.family, prefix + "ram"))
    extended = prices.get((region, usage, shape.family, "extended ram")) if shape.extended_gib else Decimal(0)
    if core is None or ram is None or extended is None:
        return None
    hourly = shape.vcpus * core + shape.ram_gib * ram + shape.extended_gib * extended + gpu_cost
    return ShelfPrice(hourly, core, ram, gpu)


def _google_error(response: requests.Response) -> tuple[str, str]:
    """Google's error message and ErrorInfo reasons from a `{"error":{…}}` body, best effort."""
    try:
        error = response.json().get("error", {})
        message = str(error.get("message", ""))[:300]
        reasons = " ".join(str(d.get("reason", "")) for d in error.get("details", []) if isinstance(d, dict))
    except (ValueError, AttributeError, TypeError):
        return "", ""
    return message, reasons


def trusting(session: requests.Session, verify: str | None) -> requests.Session:
    """`session` verifying with `verify` (tls.ca_file's bundle); None keeps requests' default."""
    if verify:
        session.verify = verify
    return session
