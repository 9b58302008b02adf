"""A local fake of the Cloud Billing Catalog REST API (`GET /v1/services/{service}/skus`), plus the OAuth
token endpoint an `authorized_user` ADC file points at.

What it models, because the GCP source depends on each of these:
- SKU records shaped exactly like the raw API's (see the A2 records in
  ../shared/fixtures/real/gcp_pricing/), pretty-printed as the real API answers;
- `currencyCode` (prices converted from USD at a fixed rate, `currencyConversionRate` set, unknown codes
  refused), `pageSize` (capped at 5000) with opaque `pageToken`/`nextPageToken`;
- auth as Google does it: an API key in `x-goog-api-key` or `?key=`, or an OAuth bearer token; no credential
  → 403, a wrong key → 400 `API_KEY_INVALID`, a wrong token → 401, a disabled API → 403 `SERVICE_DISABLED`;
  error bodies in Google's `{"error":{"code","message","status","details"}}` shape;
- a `FakeServer`: generic faults (`inject`) in Google's error shape, plus the older controls: fail the
  next K calls with a status (and Retry-After), malformed JSON, a delay, a page size cap; every request is
  recorded.

`compute_catalog()` generates a realistic Compute Engine SKU set; every price says where it comes from.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fakes.server import Answer, FakeServer, Fault, Request, header_seconds

SERVICE = "6F81-5844-456A"  # Compute Engine
SKUS_PATH = f"/v1/services/{SERVICE}/skus"
TOKEN_PATH = "/token"
MAX_PAGE_SIZE = 5000  # the real API's cap

AMERICAS = ("us-central1", "us-east1", "us-west1")  # as the real multi-regional A2 SKUs list them
BELGIUM = ("europe-west1",)
FINLAND = ("europe-north1",)

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

_UNITS = {
    # usageUnit → (usageUnitDescription, baseUnit, baseUnitDescription, baseUnitConversionFactor), as in the
    # real records: "h" for cores, GPUs and whole instances, "GiBy.h" for memory.
    "h": ("hour", "s", "second", 3600),
    "GiBy.h": ("gibibyte hour", "By.s", "byte second", 3865470566400),
    "GiBy": ("gibibyte", "By", "byte", 1073741824),
    "GiBy.mo": ("gibibyte month", "By.s", "byte second", 2823503591587840),
}


def split_price(price: str | Decimal) -> tuple[str, int]:
    """A decimal price as the API's Money: whole `units` (an int64 string) and `nanos`."""
    value = Decimal(price)
    units = int(value)
    nanos = int(((value - units) * 10**9).to_integral_value(ROUND_HALF_EVEN))
    return str(units), nanos


def money(price: str | Decimal, currency: str = "USD") -> dict[str, Any]:
    """A `google.type.Money` as the API writes it: currencyCode, `units` (an int64 string) and `nanos`."""
    units, nanos = split_price(price)
    return {"currencyCode": currency, "units": units, "nanos": nanos}


def sku(
    description: str,
    price: str,
    *,
    group: str,
    regions: Iterable[str] = AMERICAS,
    usage: str = "OnDemand",
    unit: str | None = None,
    tiers: Sequence[tuple[int, str]] = (),
    last_start: int = 0,
    family: str = "Compute",
) -> dict[str, Any]:
    """One SKU record in the raw API's shape. `price` is the last tier's, starting at `last_start`; `tiers`
    are the (startUsageAmount, price) rows before it. `unit` defaults from the resource group (RAM → GiBy.h)."""
    regions = list(regions)
    unit = unit or ("GiBy.h" if group == "RAM" or " Ram " in description else "h")
    digest = hashlib.sha1(f"{description}|{usage}|{regions}".encode()).hexdigest().upper()
    sku_id = f"{digest[0:4]}-{digest[4:8]}-{digest[8:12]}"
    rates = [*tiers, (last_start, price)]
    unit_desc, base, base_desc, factor = _UNITS[unit]
    return {
        "name": f"services/{SERVICE}/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": family,
            "resourceGroup": group,
            "usageType": usage,
        },
        "serviceRegions": regions,
        "pricingInfo": [
            {
                "summary": "",
                "pricingExpression": {
                    "usageUnit": unit,
                    "displayQuantity": 1,
                    "tieredRates": [
                        {
                            "startUsageAmount": start,
                            "unitPrice": money(rate),
                        }
                        for start, rate in rates
                    ],
                    "usageUnitDescription": unit_desc,
                    "baseUnit": base,
                    "baseUnitDescription": base_desc,
                    "baseUnitConversionFactor": factor,
                },
                "currencyConversionRate": 1,
                "effectiveTime": "2024-05-02T05:15:08.117Z",
            }
        ],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "MULTI_REGIONAL" if len(regions) > 1 else "REGIONAL", "regions": regions},
    }


def compute_catalog() -> list[dict[str, Any]]:
    """A Compute Engine SKU set: N1/N2/E2/C3/A2/T2D cores and RAM, custom and extended memory, Spot,
    T4 and A100 GPUs, f1/g1 flat SKUs, commitments, sole tenancy and non-VM rows that must be ignored.

    Sources of the numbers: [list] = the published us-central1 on-demand list price
    (cloud.google.com/compute/vm-instance-pricing, 2023-24); [sample] = the real A2 records in
    ../shared/fixtures/real/gcp_pricing (0.031611 / 0.004237, identical to N2's list price); [illustrative]
    = a plausible value for a row whose exact current price does not matter to the tests (Spot prices
    move monthly; European regions are ~10 % above Iowa).
    """
    spot = "Preemptible"
    return [
        # -- Americas, on-demand ------------------------------------------------------------------------
        sku("N1 Predefined Instance Core running in Americas", "0.031611", group="N1Standard"),  # [list]
        sku("N1 Predefined Instance Ram running in Americas", "0.004237", group="N1Standard"),  # [list]
        sku("Custom Instance Core running in Americas", "0.033174", group="CPU"),  # [list] N1 custom
        sku("Custom Instance Ram running in Americas", "0.004446", group="RAM"),  # [list]
        sku("Custom Extended Instance Ram running in Americas", "0.00955", group="RAM"),  # [list]
        sku("N2 Instance Core running in Americas", "0.031611", group="CPU"),  # [list]
        sku("N2 Instance Ram running in Americas", "0.004237", group="RAM"),  # [list]
        sku("N2 Custom Instance Core running in Americas", "0.033191", group="CPU"),  # [list]
        sku("N2 Custom Instance Ram running in Americas", "0.004449", group="RAM"),  # [list]
        sku("N2 Custom Extended Instance Ram running in Americas", "0.00955", group="RAM"),  # [list]
        sku("E2 Instance Core running in Americas", "0.021811", group="CPU"),  # [list]
        sku("E2 Instance Ram running in Americas", "0.002923", group="RAM"),  # [list]
        sku("E2 Custom Instance Core running in Americas", "0.02289", group="CPU"),  # [list] ≈ +5 %
        sku("E2 Custom Instance Ram running in Americas", "0.003067", group="RAM"),  # [list] ≈ +5 %
        sku("C3 Instance Core running in Americas", "0.03398", group="CPU"),  # [list]
        sku("C3 Instance Ram running in Americas", "0.00455", group="RAM"),  # [list]
        sku("T2D AMD Instance Core running in Americas", "0.027502", group="CPU"),  # [list]
        sku("T2D AMD Instance Ram running in Americas", "0.003686", group="RAM"),  # [list]
        sku("A2 Instance Core running in Americas", "0.031611", group="CPU"),  # [sample]
        sku("A2 Instance Ram running in Americas", "0.004237", group="RAM"),  # [sample]
        sku("Nvidia Tesla A100 GPU running in Americas", "2.933908", group="GPU"),  # [list]
        sku("Nvidia Tesla T4 GPU running in Americas", "0.35", group="GPU"),  # [list]
        sku("Micro Instance with burstable CPU running in Americas", "0.0076", group="F1Micro"),  # [list]
        sku("Small Instance with 1 VCPU running in Americas", "0.0257", group="G1Small"),  # [list]
        # -- Americas, Spot (usageType Preemptible) [illustrative] ---------------------------------------
        sku(
            "Spot Preemptible N1 Predefined Instance Core running in Americas",
            "0.006655",
            group="N1Standard",
            usage=spot,
        ),
        sku(
            "Spot Preemptible N1 Predefined Instance Ram running in Americas",
            "0.000892",
            group="N1Standard",
            usage=spot,
        ),
        sku("Spot Preemptible N2 Instance Core running in Americas", "0.007594", group="CPU", usage=spot),
        sku("Spot Preemptible N2 Instance Ram running in Americas", "0.001017", group="RAM", usage=spot),
        sku("Spot Preemptible E2 Instance Core running in Americas", "0.006543", group="CPU", usage=spot),
        sku("Spot Preemptible E2 Instance Ram running in Americas", "0.000877", group="RAM", usage=spot),
        sku(
            "Nvidia Tesla T4 GPU attached to Spot Preemptible VMs running in Americas",
            "0.11",
            group="GPU",
            usage=spot,
        ),
        sku(
            "Spot Preemptible Micro Instance with burstable CPU running in Americas",
            "0.0035",
            group="F1Micro",
            usage=spot,
        ),
        # -- rows that must not price anything -----------------------------------------------------------
        sku(
            "Commitment v1: N2 Cpu in Americas for 1 Year", "0.019915", group="CPU", usage="Commit1Yr"
        ),  # [list]
        sku(
            "Commitment v1: N2 Ram in Americas for 1 Year", "0.002669", group="RAM", usage="Commit1Yr"
        ),  # [list]
        sku(
            "Commitment v1: Nvidia Tesla T4 GPU in Americas for 1 Year",
            "0.2205",
            group="GPU",
            usage="Commit1Yr",
        ),
        sku("N2 Sole Tenancy Instance Core running in Americas", "0.034772", group="CPU"),  # [illustrative]
        sku("N2 Sole Tenancy Instance Ram running in Americas", "0.004661", group="RAM"),  # [illustrative]
        sku("Storage PD Capacity", "0.04", group="PDStandard", family="Storage", unit="GiBy.mo"),  # [list]
        sku(
            "Network Internet Egress from Americas to Americas",
            "0.085",
            group="PremiumInternetEgress",
            family="Network",
            unit="GiBy",
            tiers=[(0, "0.12"), (1024, "0.11")],
            last_start=10240,
        ),  # [list] tiered: 0.12 for the first TiB, 0.11 to 10 TiB, then 0.085
        # -- Europe, on-demand [illustrative] --------------------------------------------------------------
        sku(
            "N1 Predefined Instance Core running in Belgium", "0.034773", group="N1Standard", regions=BELGIUM
        ),
        sku("N1 Predefined Instance Ram running in Belgium", "0.004661", group="N1Standard", regions=BELGIUM),
        sku("N2 Instance Core running in Belgium", "0.034802", group="CPU", regions=BELGIUM),
        sku("N2 Instance Ram running in Belgium", "0.004664", group="RAM", regions=BELGIUM),
        sku("E2 Instance Core running in Belgium", "0.023999", group="CPU", regions=BELGIUM),
        sku("E2 Instance Ram running in Belgium", "0.003216", group="RAM", regions=BELGIUM),
        sku("Nvidia Tesla T4 GPU running in Belgium", "0.35", group="GPU", regions=BELGIUM),
        sku("N2 Instance Core running in Finland", "0.034773", group="CPU", regions=FINLAND),
        sku("N2 Instance Ram running in Finland", "0.004661", group="RAM", regions=FINLAND),
        sku("E2 Instance Core running in Finland", "0.023974", group="CPU", regions=FINLAND),
        sku("E2 Instance Ram running in Finland", "0.003213", group="RAM", regions=FINLAND),
    ]


def write_adc(path: Path, token_url: str, *, universe_domain: str = "") -> Path:
    """An Application Default Credentials file whose token endpoint is local (`FakeCatalogAPI`'s /token):
    the `external_account_authorized_user` type (workforce identity), the one ADC type whose token endpoint
    can be pointed elsewhere (`authorized_user` always uses oauth2.googleapis.com). A non-default
    `universe_domain` keeps google-auth from looking up access boundaries on googleapis.com; clients that
    check the universe against their own (BigQuery) need the default."""
    adc = {
        "type": "external_account_authorized_user",
        "audience": "//iam.googleapis.com/locations/global/workforcePools/pool/providers/idp",
        "refresh_token": "refresh-1",
        "token_url": token_url,
        "client_id": "client",
        "client_secret": "secret",
    }
    path.write_text(json.dumps(adc | ({"universe_domain": universe_domain} if universe_domain else {})))
    return path


def google_error(
    code: int, message: str, *, reason: str = "", domain: str = "googleapis.com"
) -> dict[str, Any]:
    """Google's JSON error body; `reason` adds the `ErrorInfo` detail real errors carry."""
    error: dict[str, Any] = {"code": code, "message": message, "status": _STATUS.get(code, "UNKNOWN")}
    if reason:
        error["details"] = [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain}
        ]
    return {"error": error}


class FakeCatalogAPI(FakeServer):
    """Context manager: `with FakeCatalogAPI(api_key="k") as api: api.url …`. With neither `api_key` nor
    `token` set, calls need no credential."""

    def __init__(
        self,
        skus: list[dict[str, Any]] | None = None,
        *,
        api_key: str | None = None,
        token: str | None = None,  # the bearer token accepted, also what the token endpoint hands out
        rates: dict[str, Decimal] | None = None,
        page_size_cap: int = MAX_PAGE_SIZE,
        disabled: bool = False,  # the Cloud Billing API is not enabled in the caller's project
    ) -> None:
        super().__init__()
        self.skus = compute_catalog() if skus is None else skus
        self.api_key = api_key
        self.token = token
        self.rates = {"USD": Decimal(1), "EUR": Decimal("0.9")} if rates is None else rates
        self.page_size_cap = page_size_cap
        self.disabled = disabled

    @property
    def delay(self) -> float:
        """Seconds before each answer (the older name of `delay_seconds`)."""
        return self.delay_seconds

    @delay.setter
    def delay(self, seconds: float) -> None:
        self.delay_seconds = seconds

    @property
    def calls(self) -> list[Request]:
        """Every API call (GET); the token endpoint's POSTs are in `token_requests`."""
        return [r for r in list(self.requests) if r.method == "GET"]

    @property
    def sku_calls(self) -> list[Request]:
        return [c for c in self.calls if c.path.startswith("/v1/")]

    @property
    def token_requests(self) -> list[dict[str, str]]:
        """The form of every token request."""
        return [dict(parse_qsl(r.body.decode())) for r in list(self.requests) if r.method == "POST"]

    # -- test controls ---------------------------------------------------------------------------------------

    def fail(
        self, status: int, times: int = 1, *, retry_after: str | None = None, body: bytes | None = None
    ) -> None:
        """Answer the next `times` SKU calls with `status` (a Google error body unless `body` is given)."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        payload = body if body is not None else json.dumps(google_error(status, f"injected failure {status}"))
        answer = Answer(status, payload.encode() if isinstance(payload, str) else payload, headers, _JSON)
        self.enqueue(answer, times, when=_is_sku_call)

    def malformed(self, times: int = 1) -> None:
        """Answer the next `times` SKU calls with 200 and a truncated JSON body."""
        self.inject(Fault.BAD_RESPONSE, times, when=_is_sku_call)

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        """Google's error model (cloud.google.com/apis/design/errors: `google.rpc.Status` as
        {"error": {"code", "message", "status", "details"}}, HTTP status from the canonical code) with the
        ErrorInfo reasons Google's front end sends for these cases."""
        if fault is Fault.NO_DATA:  # a service without SKUs
            return self._json(200, {"skus": [], "nextPageToken": ""})
        if fault is Fault.BAD_RESPONSE:
            return self._json(*self._page(request.query)).truncated()
        if fault is Fault.THROTTLED:
            headers = {} if retry_after is None else {"Retry-After": header_seconds(retry_after)}
            quota = "Quota exceeded for quota metric 'Read requests' of service 'cloudbilling.googleapis.com'."
            return self._json(429, google_error(429, quota, reason="RATE_LIMIT_EXCEEDED"), headers)
        code, message, reason = {
            Fault.AUTH: (
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
                "other valid authentication credential.",
                "ACCESS_TOKEN_EXPIRED",
            ),
            Fault.PERMISSION: (
                403,
                "Permission 'billing.services.list' denied on resource (or it may not exist).",
                "IAM_PERMISSION_DENIED",
            ),
            Fault.NOT_FOUND: (404, "Service not found.", ""),
            Fault.UNAVAILABLE: (503, "The service is currently unavailable.", ""),
        }[fault]
        return self._json(code, google_error(code, message, reason=reason))

    # -- internals -------------------------------------------------------------------------------------------

    def _page(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        currency = query.get("currencyCode") or "USD"
        rate = self.rates.get(currency)
        if rate is None:
            return 400, google_error(400, f"Currency code {currency} is not supported.")
        try:
            size = min(int(query.get("pageSize") or MAX_PAGE_SIZE), self.page_size_cap, MAX_PAGE_SIZE)
            token = query.get("pageToken") or ""
            start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        except ValueError:
            return 400, google_error(400, "Invalid page token or page size.")
        if size <= 0:
            size = MAX_PAGE_SIZE
        rows = [_converted(row, currency, rate) for row in self.skus[start : start + size]]
        page: dict[str, Any] = {"skus": rows, "nextPageToken": ""}
        if start + size < len(self.skus):
            page["nextPageToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return 200, page

    @staticmethod
    def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
        return Answer.json(status, payload, headers, content_type=_JSON, indent=2)  # pretty, as Google's

    def handle(self, request: Request) -> Answer:
        if request.method == "POST":
            return self._token(request)
        status, body = self._answer(request.path, request.query, request.headers)
        return self._json(status, body)

    def _token(self, request: Request) -> Answer:
        form = dict(parse_qsl(request.body.decode()))
        if request.path != TOKEN_PATH or self.token is None or form.get("grant_type") != "refresh_token":
            return self._json(400, {"error": "invalid_grant", "error_description": "Bad Request"})
        return self._json(
            200, {"access_token": self.token, "expires_in": 3599, "token_type": "Bearer", "scope": ""}
        )

    def _answer(self, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        key = headers.get("x-goog-api-key") or query.get("key")
        bearer = headers.get("authorization", "")
        if self.api_key is not None or self.token is not None:
            if bearer.startswith("Bearer "):
                if bearer != f"Bearer {self.token}":
                    return 401, google_error(
                        401,
                        "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
                        "cookie or other valid authentication credential.",
                        reason="ACCESS_TOKEN_TYPE_UNSUPPORTED",
                    )
            elif key is None:
                return 403, google_error(403, "The request is missing a valid API key.", reason="API_KEY_MISSING")
            elif key != self.api_key:
                return 400, google_error(
                    400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
                )
        if self.disabled:
            return 403, google_error(
                403,
                "Cloud Billing API has not been used in project 123456789012 before or it is disabled. Enable "
                "it by visiting https://console.developers.google.com/apis/api/cloudbilling.googleapis.com/"
                "overview?project=123456789012 then retry.",
                reason="SERVICE_DISABLED",
            )
        if not path.startswith("/v1/services/") or not path.endswith("/skus"):
            return 404, google_error(404, "Method not found.")
        if path != SKUS_PATH:
            return 404, google_error(404, "Service not found.")
        return self._page(query)


_JSON = "application/json; charset=UTF-8"


def _is_sku_call(request: Request) -> bool:
    return request.method == "GET" and request.path.startswith("/v1/")



def _converted(row: dict[str, Any], currency: str, rate: Decimal) -> dict[str, Any]:
    """The record priced in `currency`, as the API converts USD list prices (nanos rounded half-even)."""
    if currency == "USD" or rate == 1:
        return row
    row = json.loads(json.dumps(row))
    for info in row["pricingInfo"]:
        info["currencyConversionRate"] = float(rate)
        for tier in info["pricingExpression"]["tieredRates"]:
            price = tier["unitPrice"]
            if price.get("currencyCode") != "USD":
                continue
            usd = Decimal(price.get("units", "0")) + Decimal(price.get("nanos", 0)).scaleb(-9)
            tier["unitPrice"] = money((usd * rate).quantize(Decimal("1e-9"), ROUND_HALF_EVEN), currency)
    return row
