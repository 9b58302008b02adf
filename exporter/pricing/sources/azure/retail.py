"""Azure list prices from the public Retail Prices API (`prices.azure.com`): no credentials, plain HTTPS.

One call asks for the Virtual Machines consumption meters of up to `SKUS_PER_CALL` ARM SKUs in one region
and follows `NextPageLink`; items are then narrowed to the one hourly pay-as-you-go (or Spot) meter per key:

- `type == "Consumption"` only: DevTestConsumption is a Dev/Test-subscription rate and a Reservation's
  `retailPrice` is the whole 1- or 3-year term although its `unitOfMeasure` still says "1 Hour". The query
  already asks for `priceType eq 'Consumption'`; the check here also holds behind a proxy that drops it.
- `unitOfMeasure == "1 Hour"`; no "Low Priority" (Batch) meters; no "Cloud Services" products, which reuse
  VM size names at Windows-like prices under serviceName "Virtual Machines".
- Windows when `productName` contains "Windows", Spot when `skuName` ends in " Spot"; keyed by `armSkuName`
  because `skuName` is spelled both "D16s v5" and "Standard_D16s_v5".
- The price is `retailPrice` (the undiscounted list price; `unitPrice` equals it on retail meters). A 0 is
  an included-quantity row, not a price.
- Several items for one key: a primary-meter-region item beats `isPrimaryMeterRegion: false` duplicates (but
  a key with only non-primary items is still priced: eastus Standard_D2s_v3 Linux has no primary meter),
  then an item in force now beats an ended or not-yet-started one, then the newest `effectiveStartDate`;
  the lowest (meterId, skuId) breaks ties so the choice never depends on page order.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from exporter import __version__
from exporter.clock import parse_time
from exporter.config.sources.azure import AzureRetailSettings
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
from exporter.pricing.sources.registry import register
from exporter.pricing.sources.shelf import Key, ShelfPrice, ShelfSource
from exporter.tls import ssl_context, untrusted_certificate

PUBLIC_ENDPOINT = "https://prices.azure.com"
API_PATH = "/api/retail/prices"
API_VERSION = "2023-01-01-preview"  # filter values are case-sensitive from this version on
SKUS_PER_CALL = 10  # the API refuses a $filter of more than about 20 comparisons with a 400
_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class _Candidate:
    """One usable item for a key, with what decides between several."""

    price: Decimal
    primary: bool
    in_force: bool
    start: datetime
    ids: tuple[str, str]  # (meterId, skuId): the tie-break


# No extra: plain HTTPS through urllib3, which the core dependencies already bring.
@register("azure.retail", settings=AzureRetailSettings)
class AzureRetailPrices(ShelfSource[AzureRetailSettings]):
    """On-demand and Spot hourly list prices of AKS and other Azure VM nodes, Linux or Windows."""

    name = "azure_retail"

    def __init__(self, settings: AzureRetailSettings, context: SourceContext) -> None:
        super().__init__(settings, context)
        self._base = (settings.endpoint_url or PUBLIC_ENDPOINT).rstrip("/")
        self._http = _pool(self._base, max(1, settings.concurrency), context.ca_file)

    # -- ShelfSource ------------------------------------------------------------------------------------

    def key(self, node: Node) -> Key | None:
        """(region, ARM SKU as written, os, capacity); the region is lower-cased like `armRegionName`."""
        if node.provider != "azure" or not node.region or not node.instance_type:
            return None
        os_name = "windows" if node.os.lower() == "windows" else "linux"
        capacity = "spot" if node.capacity_type is CapacityType.SPOT else "on_demand"
        return (node.region.lower(), node.instance_type, os_name, capacity)

    def basis_of(self, key: Key) -> Basis:
        return Basis.SPOT if key[3] == "spot" else Basis.ON_DEMAND

    def batches(self, keys: Sequence[Key]) -> list[list[Key]]:
        """One region per call (the filter names one), its distinct SKUs in chunks of `SKUS_PER_CALL`:
        the OS and Spot variants of a SKU come back from the same query."""
        by_region: dict[str, dict[str, list[Key]]] = defaultdict(lambda: defaultdict(list))
        for key in keys:
            by_region[key[0]][key[1]].append(key)
        out: list[list[Key]] = []
        for region in sorted(by_region):
            skus = sorted(by_region[region])
            for start in range(0, len(skus), SKUS_PER_CALL):
                out.append(
                    [key for sku in skus[start : start + SKUS_PER_CALL] for key in by_region[region][sku]]
                )
        return out

    def fetch(self, keys: Sequence[Key]) -> Mapping[Key, ShelfPrice | None]:
        wanted = set(keys)
        region = keys[0][0]
        now = datetime.fromtimestamp(self.clock.time(), UTC)
        found: dict[Key, list[_Candidate]] = defaultdict(list)
        url: str | None = self._first_url(region, sorted({key[1] for key in keys}))
        seen: set[str] = set()
        answered = 0
        while url is not None:
            if url in seen:
                raise FetchError(Reason.BAD_RESPONSE, f"NextPageLink loops back to {_short(url)}")
            seen.add(url)
            items, next_link = self._get_page(url)
            answered += len(items)
            for item in items:
                read = self._read_item(item, now)
                if read is not None and read[0] in wanted:
                    found[read[0]].append(read[1])
            url = self._next_url(url, next_link)
        if not answered and self._had_prices(region):
            # A region's VM meters do not vanish overnight: an empty answer where there were prices is the
            # API failing, and caching it would unprice every node of the region until the TTL runs out.
            raise FetchError(
                Reason.NO_DATA,
                f"Retail Prices answered no Virtual Machines meter at all for {region}, which had prices; "
                "keeping the last prices",
            )
        return {key: ShelfPrice(_choose(options).price) for key, options in found.items()}

    def _had_prices(self, region: str) -> bool:
        """Whether any key of the region has a price from an earlier answer (or the cache)."""
        return any(key[0] == region and price is not None for key, price in list(self._prices.items()))

    # -- internals ------------------------------------------------------------------------------------

    def _first_url(self, region: str, skus: list[str]) -> str:
        any_sku = " or ".join(f"armSkuName eq {_literal(sku)}" for sku in skus)
        odata = (
            f"serviceName eq 'Virtual Machines' and armRegionName eq {_literal(region)}"
            f" and priceType eq 'Consumption' and ({any_sku})"
        )
        return (
            f"{self._base}{API_PATH}?api-version={API_VERSION}"
            f"&currencyCode={quote(_literal(self.currency), safe='')}&$filter={quote(odata, safe='')}"
        )

    def _next_url(self, current: str, link: str | None) -> str | None:
        """NextPageLink, sent to the configured endpoint (proxy, sovereign cloud) when one is set: the API
        writes its own public host into the link."""
        if not link:
            return None
        absolute = urljoin(current, link)
        if not self.settings.endpoint_url or absolute.startswith(self._base + "/"):
            return absolute
        parts = urlsplit(absolute)
        return f"{self._base}{parts.path}?{parts.query}" if parts.query else f"{self._base}{parts.path}"

    def _get_page(self, url: str) -> tuple[list[Any], str | None]:
        """One GET: the page's items and NextPageLink, or FetchError. Counts the call exactly once."""
        try:
            try:
                resp = self._http.request(
                    "GET",
                    url,
                    retries=False,
                    redirect=False,
                    timeout=urllib3.Timeout(total=self.settings.timeout_seconds),
                )
            except NewConnectionError as err:  # before Urllib3Timeout: it subclasses ConnectTimeoutError
                raise FetchError(Reason.UNAVAILABLE, f"cannot connect to {_short(url)}: {err}") from err
            except Urllib3Timeout as err:
                raise FetchError(
                    Reason.TIMEOUT, f"{_short(url)} did not answer within {self.settings.timeout_seconds}s"
                ) from err
            except (HTTPError, OSError) as err:
                if untrusted_certificate(err):
                    raise untrusted_tls_error(_short(url)) from err
                raise FetchError(Reason.UNAVAILABLE, f"GET {_short(url)}: {err}") from err
            if resp.status != 200:
                raise _status_error(resp, url, self.clock.time())
            page = _parse_page(resp.data, url, self.currency)
        except FetchError as err:
            self.status.record_request(err.reason)
            raise
        self.status.record_request()
        return page

    def _read_item(self, item: Any, now: datetime) -> tuple[Key, _Candidate] | None:
        """The key and candidate price of one item, or None when the item is not an hourly VM meter."""
        if not isinstance(item, dict):
            return None
        sku_name, product = _text(item.get("skuName")), _text(item.get("productName"))
        arm_sku, region = _text(item.get("armSkuName")), _text(item.get("armRegionName"))
        if (
            item.get("type") != "Consumption"
            or item.get("unitOfMeasure") != "1 Hour"
            or "Low Priority" in sku_name
            or "Cloud Services" in product
            or not arm_sku
            or not region
        ):
            return None
        price = _money(item.get("retailPrice"))
        if price is None:
            self.log.warning(
                "ignoring %s %s item with retailPrice %r",
                region,
                arm_sku,
                item.get("retailPrice"),
            )
            return None
        if price == 0:
            return None
        start = parse_time(item.get("effectiveStartDate")) or _EPOCH
        end = parse_time(item.get("effectiveEndDate"))
        key = (
            region,
            arm_sku,
            "windows" if "Windows" in product else "linux",
            "spot" if sku_name.endswith(" Spot") else "on_demand",
        )
        return key, _Candidate(
            price=price,
            primary=item.get("isPrimaryMeterRegion") is not False,
            in_force=start <= now and (end is None or now < end),
            start=start,
            ids=(_text(item.get("meterId")), _text(item.get("skuId"))),
        )


def _choose(options: list[_Candidate]) -> _Candidate:
    options.sort(key=lambda c: c.ids)  # max() keeps the first of equals: the lowest ids
    return max(options, key=lambda c: (c.primary, c.in_force, c.start))


def _money(value: Any) -> Decimal | None:
    """A JSON number read as Decimal (or an int), validated like every other price; None if it is not one."""
    if not isinstance(value, str | int | Decimal):
        return None
    try:
        return parse_money(value)
    except ValueError:
        return None


def _parse_page(data: bytes, url: str, currency: str) -> tuple[list[Any], str | None]:
    try:
        body = json.loads(data, parse_float=Decimal)  # 0.096 and 1.2e-05 stay exact decimals
    except ValueError as err:  # also UnicodeDecodeError
        raise FetchError(Reason.BAD_RESPONSE, f"{_short(url)} answered with invalid JSON: {err}") from err
    items = body.get("Items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise FetchError(Reason.BAD_RESPONSE, f"{_short(url)} answered without an Items array")
    link = body.get("NextPageLink")
    if link is not None and not isinstance(link, str):
        raise FetchError(Reason.BAD_RESPONSE, f"{_short(url)} answered with NextPageLink {link!r}")
    for item in items:  # a proxy or cache that ignores currencyCode must not pass USD off as EUR
        if isinstance(item, dict) and item.get("currencyCode") != currency:
            raise FetchError(
                Reason.BAD_RESPONSE,
                f"asked {_short(url)} for {currency} prices, it answered in {item.get('currencyCode')!r}",
            )
    return items, link


def _pool(base: str, connections: int, ca_file: str) -> urllib3.PoolManager:
    """A pool honouring HTTPS_PROXY/HTTP_PROXY and NO_PROXY, as boto3 and requests do for the other clouds:
    clusters whose egress goes through a proxy need nothing Azure-specific. `ca_file` (tls.ca_file) is
    trusted beside the system roots."""
    options: dict[str, Any] = {
        "num_pools": 2,
        "maxsize": connections,
        "headers": {"Accept": "application/json", "User-Agent": f"node-cost-exporter/{__version__}"},
    }
    if ca_file:
        options["ssl_context"] = ssl_context(ca_file)
    url = urlsplit(base)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        return urllib3.ProxyManager(proxy, **options)
    return urllib3.PoolManager(**options)


def _status_error(resp: urllib3.BaseHTTPResponse, url: str, now: float) -> FetchError:
    """A non-200 answer as FetchError; a 400 names the API's message (a filter the API refused)."""
    code = resp.status
    return FetchError(
        reason_for_status(code),
        f"GET {_short(url)}: HTTP {code}: {_error_message(resp.data)}",
        retry_after=_retry_after(resp.headers, now),
    )


def _error_message(data: bytes) -> str:
    """`Error.Message` of the API's error body (`{"Error":{"Code":"BadRequest","Message":…}}`), or the start
    of whatever else answered (a proxy's HTML page)."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    error = body.get("Error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("Message"), str):
        return str(error["Message"])[:500]
    return data[:200].decode("utf-8", "replace").strip() or "(empty body)"


def _retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or an HTTP date) or Azure's
    `x-ms-ratelimit-…-retry-after` headers; the longest when several are sent."""
    values = [
        value
        for name, value in headers.items()
        if name.lower() == "retry-after"
        or (name.lower().startswith("x-ms-ratelimit") and name.lower().endswith("retry-after"))
    ]
    delays = [delay for value in values if (delay := parse_retry_after(value, now)) is not None]
    return max(delays) if delays else None


def _literal(value: str) -> str:
    """An OData string literal: quoted, embedded quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _short(url: str) -> str:
    """scheme://host/path of a URL: the filter is long and says nothing an operator needs in a message."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"
