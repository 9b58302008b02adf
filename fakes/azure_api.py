"""A local fake of the Azure Retail Prices API (`GET /api/retail/prices`), for the `azure_retail` source.

What it models, because the source depends on each of these:
- the `$filter` subset a VM price query uses, applied by the server itself: `field eq 'value'` joined by
  `and`/`or` with parentheses, case-sensitive values (as from api-version 2023-01-01-preview), `priceType`
  matching an item's `type`. Anything else (`ne`, `in`, `contains`, `not`, unknown fields, more than 20
  comparisons) is refused like the real API: HTTP 400 `{"Error":{"Code":"BadRequest","Message":"Invalid
  OData parameters supplied"}}`. An unknown api-version gets the real "Unsupported API version" 400;
- `currencyCode` (quoted or not, USD when absent): only items priced in that currency are served;
- paging: `Count` per page, `NextPageLink` an absolute URL back to this server with the query repeated and
  `$skip=N` appended (the real one names `https://prices.azure.com:443`), null on the last page;
- a `FakeServer`: generic faults (`inject`) in the API's error shape, plus the older controls: failing the
  next calls with a status (and Retry-After), answering with a given body, a delay, the page size, a
  NextPageLink host of the test's choosing, and a "proxy" that drops the priceType or currency part of the
  query; every request is recorded (count, `$filter`, currency).

Items are dicts shaped exactly like the API's (prices are JSON numbers, from Python floats whose repr is the
published decimal). `REAL_*` below are verbatim API responses; `vm_items` builds the same shapes for other
SKUs and regions from published prices.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any

from fakes.server import Answer, FakeServer, Fault, Request, header_seconds

API_PATH = "/api/retail/prices"
API_VERSIONS = ("2023-01-01-preview", "2021-10-01-preview")
MAX_COMPARISONS = 20  # third-party measurements: the API refuses a $filter with more with a 400
BAD_FILTER = {"Error": {"Code": "BadRequest", "Message": "Invalid OData parameters supplied"}}
BAD_VERSION = {"Error": {"Code": "BadRequest", "Message": "Unsupported API version"}}
FILTER_FIELDS = {  # the documented filter fields; priceType filters the item's `type`
    "armRegionName": "armRegionName",
    "location": "location",
    "meterId": "meterId",
    "meterName": "meterName",
    "productId": "productId",
    "skuId": "skuId",
    "productName": "productName",
    "skuName": "skuName",
    "serviceName": "serviceName",
    "serviceId": "serviceId",
    "serviceFamily": "serviceFamily",
    "priceType": "type",
    "armSkuName": "armSkuName",
}

# -- real items ---------------------------------------------------------------------------------------------
# Verbatim `Items` of api-version=2023-01-01-preview responses without a priceType filter, captured from
# prices.azure.com in 2026 by rshade/finfocus-plugin-azure-public@0d26960af6f8714ed01577b2b89e1a75a19d8f5e,
# internal/pricing/testdata/retail/savingsplan/eastus_standard_{d2s_v3,d2als_v7,b1s}_nofilter_preview.json
# (Microsoft's public price data; that repository has no LICENSE file).
# Standard_D2s_v3 in eastus: the Linux and Windows pay-as-you-go meters are isPrimaryMeterRegion false and
# have no primary twin; DevTestConsumption rows carry Linux prices under Windows products.
REAL_EASTUS_D2S_V3: list[dict[str, Any]] = json.loads("""[
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.075,"unitPrice":0.075,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2018-06-01T00:00:00Z","meterId":"2c872941-5870-447f-a296-b394ebf018c6","meterName":"D2s v3 Low Priority","productId":"DZH318Z0BPWD","skuId":"DZH318Z0BPWD/00FP","productName":"Virtual Machines DSv3 Series Windows","skuName":"D2s v3 Low Priority","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":false,"armSkuName":"Standard_D2s_v3"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.019,"unitPrice":0.019,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2018-06-01T00:00:00Z","meterId":"2c872941-5870-447f-a296-b394ebf018c6","meterName":"D2s v3 Low Priority","productId":"DZH318Z0BPWD","skuId":"DZH318Z0BPWD/00FP","productName":"Virtual Machines DSv3 Series Windows","skuName":"D2s v3 Low Priority","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"DevTestConsumption","isPrimaryMeterRegion":false,"armSkuName":"Standard_D2s_v3"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.019,"unitPrice":0.019,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2018-06-01T00:00:00Z","meterId":"c0908cfc-44cd-4d8f-aebb-c429a8bc7f76","meterName":"D2s v3 Low Priority","productId":"DZH318Z0BQ50","skuId":"DZH318Z0BQ50/00VW","productName":"Virtual Machines DSv3 Series","skuName":"D2s v3 Low Priority","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":false,"armSkuName":"Standard_D2s_v3"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.018816,"unitPrice":0.018816,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2026-06-01T00:00:00Z","meterId":"898b8731-56dd-5181-bb31-90ac59267863","meterName":"D2s v3 Spot","productId":"DZH318Z0BQ50","skuId":"DZH318Z0BQ50/0234","productName":"Virtual Machines DSv3 Series","skuName":"D2s v3 Spot","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2s_v3"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.036848,"unitPrice":0.036848,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2026-06-01T00:00:00Z","meterId":"bbb70622-b453-5a2d-a044-13e45e233ab4","meterName":"D2s v3 Spot","productId":"DZH318Z0BPWD","skuId":"DZH318Z0BPWD/014C","productName":"Virtual Machines DSv3 Series Windows","skuName":"D2s v3 Spot","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2s_v3"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.018816,"unitPrice":0.018816,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2026-06-01T00:00:00Z","meterId":"bbb70622-b453-5a2d-a044-13e45e233ab4","meterName":"D2s v3 Spot","productId":"DZH318Z0BPWD","skuId":"DZH318Z0BPWD/014C","productName":"Virtual Machines DSv3 Series Windows","skuName":"D2s v3 Spot","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"DevTestConsumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2s_v3"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.096,"unitPrice":0.096,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2017-12-15T00:00:00Z","meterId":"ae331802-83a5-4b9e-b287-85675f794e3d","meterName":"D2s v3","productId":"DZH318Z0BQ50","skuId":"DZH318Z0BQ50/00VV","productName":"Virtual Machines DSv3 Series","skuName":"D2s v3","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":false,"armSkuName":"Standard_D2s_v3","savingsPlan":[{"unitPrice":0.04512,"retailPrice":0.04512,"term":"3 Years"},{"unitPrice":0.06624,"retailPrice":0.06624,"term":"1 Year"}]},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.188,"unitPrice":0.188,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2017-12-15T00:00:00Z","meterId":"b1ecee3b-bd38-4d2b-a18c-5d8099e23450","meterName":"D2s v3","productId":"DZH318Z0BPWD","skuId":"DZH318Z0BPWD/00FN","productName":"Virtual Machines DSv3 Series Windows","skuName":"D2s v3","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":false,"armSkuName":"Standard_D2s_v3"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.096,"unitPrice":0.096,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2017-12-15T00:00:00Z","meterId":"b1ecee3b-bd38-4d2b-a18c-5d8099e23450","meterName":"D2s v3","productId":"DZH318Z0BPWD","skuId":"DZH318Z0BPWD/00FN","productName":"Virtual Machines DSv3 Series Windows","skuName":"D2s v3","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"DevTestConsumption","isPrimaryMeterRegion":false,"armSkuName":"Standard_D2s_v3"}
]""")
# Standard_D2als_v7 in eastus: Reservation rows whose retailPrice is the whole term (416 for 1 year, 803 for
# 3 years) although unitOfMeasure says "1 Hour".
REAL_EASTUS_D2ALS_V7: list[dict[str, Any]] = json.loads("""[
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.0804,"unitPrice":0.0804,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2025-11-01T00:00:00Z","meterId":"01538ee0-66a2-5297-ab94-2a3dbce453c8","meterName":"D2als v7","productId":"DZH318Z0TBH5","skuId":"DZH318Z0TBH5/003D","productName":"Virtual Machines Dalsv7 Series","skuName":"D2als v7","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2als_v7","savingsPlan":[{"unitPrice":0.035376,"retailPrice":0.035376,"term":"3 Years"},{"unitPrice":0.053868,"retailPrice":0.053868,"term":"1 Year"}]},
{"currencyCode":"USD","tierMinimumUnits":0.0,"reservationTerm":"1 Year","retailPrice":416.0,"unitPrice":416.0,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2025-11-01T00:00:00Z","meterId":"01538ee0-66a2-5297-ab94-2a3dbce453c8","meterName":"D2als v7","productId":"DZH318Z0TBH5","skuId":"DZH318Z0TBH5/02V2","productName":"Virtual Machines Dalsv7 Series","skuName":"D2als v7","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Reservation","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2als_v7"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"reservationTerm":"3 Years","retailPrice":803.0,"unitPrice":803.0,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2025-11-01T00:00:00Z","meterId":"01538ee0-66a2-5297-ab94-2a3dbce453c8","meterName":"D2als v7","productId":"DZH318Z0TBH5","skuId":"DZH318Z0TBH5/02TV","productName":"Virtual Machines Dalsv7 Series","skuName":"D2als v7","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Reservation","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2als_v7"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.015598,"unitPrice":0.015598,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2026-08-01T00:00:00Z","meterId":"33b3256b-8ac3-5ea3-84f2-eba83bfd56cf","meterName":"D2als v7 Spot","productId":"DZH318Z0TBH5","skuId":"DZH318Z0TBH5/0043","productName":"Virtual Machines Dalsv7 Series","skuName":"D2als v7 Spot","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2als_v7"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.033368,"unitPrice":0.033368,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2026-08-01T00:00:00Z","meterId":"550137dc-490b-55a6-affc-64b1e202b927","meterName":"D2als v7 Spot","productId":"DZH318Z0TBH4","skuId":"DZH318Z0TBH4/0071","productName":"Virtual Machines Dalsv7 Series Windows","skuName":"D2als v7 Spot","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2als_v7"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.015598,"unitPrice":0.015598,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2026-08-01T00:00:00Z","meterId":"550137dc-490b-55a6-affc-64b1e202b927","meterName":"D2als v7 Spot","productId":"DZH318Z0TBH4","skuId":"DZH318Z0TBH4/0071","productName":"Virtual Machines Dalsv7 Series Windows","skuName":"D2als v7 Spot","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"DevTestConsumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2als_v7"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.172,"unitPrice":0.172,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2025-11-01T00:00:00Z","meterId":"a81db198-a7ec-5250-bf06-a30259a693ac","meterName":"D2als v7","productId":"DZH318Z0TBH4","skuId":"DZH318Z0TBH4/006R","productName":"Virtual Machines Dalsv7 Series Windows","skuName":"D2als v7","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2als_v7"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.0804,"unitPrice":0.0804,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2025-11-01T00:00:00Z","meterId":"a81db198-a7ec-5250-bf06-a30259a693ac","meterName":"D2als v7","productId":"DZH318Z0TBH4","skuId":"DZH318Z0TBH4/006R","productName":"Virtual Machines Dalsv7 Series Windows","skuName":"D2als v7","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"DevTestConsumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_D2als_v7"}
]""")
REAL_EASTUS_B1S: list[dict[str, Any]] = json.loads("""[
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.014,"unitPrice":0.014,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2025-10-01T00:00:00Z","meterId":"e5d2dca6-ab7b-4a73-bba7-202798e84cd4","meterName":"B1s","productId":"DZH318Z0BQNH","skuId":"DZH318Z0BQNH/0056","productName":"Virtual Machines BS Series Windows","skuName":"B1s","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_B1s"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.0104,"unitPrice":0.0104,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2025-10-01T00:00:00Z","meterId":"e5d2dca6-ab7b-4a73-bba7-202798e84cd4","meterName":"B1s","productId":"DZH318Z0BQNH","skuId":"DZH318Z0BQNH/0056","productName":"Virtual Machines BS Series Windows","skuName":"B1s","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"DevTestConsumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_B1s"},
{"currencyCode":"USD","tierMinimumUnits":0.0,"retailPrice":0.0104,"unitPrice":0.0104,"armRegionName":"eastus","location":"US East","effectiveStartDate":"2025-10-01T00:00:00Z","meterId":"f4d7a5a5-1b67-45ea-b1a0-282fbdd34b05","meterName":"B1s","productId":"DZH318Z0BQ35","skuId":"DZH318Z0BQ35/00SV","productName":"Virtual Machines BS Series","skuName":"B1s","serviceName":"Virtual Machines","serviceId":"DZH313Z7MMC8","serviceFamily":"Compute","unitOfMeasure":"1 Hour","type":"Consumption","isPrimaryMeterRegion":true,"armSkuName":"Standard_B1s","savingsPlan":[{"unitPrice":0.00468624,"retailPrice":0.00468624,"term":"3 Years"},{"unitPrice":0.0070044,"retailPrice":0.0070044,"term":"1 Year"}]}
]""")

# -- item generator -----------------------------------------------------------------------------------------

LOCATIONS = {
    "eastus": "US East",
    "eastus2": "US East 2",
    "westus": "US West",
    "westus2": "US West 2",
    "westcentralus": "US West Central",
    "northeurope": "EU North",
    "westeurope": "EU West",
    "southindia": "IN South",
    "usgovvirginia": "US Gov Virginia",  # Azure Government: listed by the same API
    "switzerlandnorth": "CH North",
}
VM_SERVICE_ID = "DZH313Z7MMC8"  # serviceId of "Virtual Machines" in every real item


def vm_items(
    region: str,
    arm_sku: str,
    series: str,
    *,
    linux: str,
    windows: str | None = None,
    spot: str | None = None,
    spot_windows: str | None = None,
    low_priority: str | None = None,
    reservation: tuple[str, str] | None = None,
    start: str = "2025-10-01T00:00:00Z",
) -> list[dict[str, Any]]:
    """The meters the API lists for one VM size in one region, in the real items' shape.

    `series` is the product's middle part ("DSv3" → "Virtual Machines DSv3 Series" and "… Series Windows").
    As in the real lists, Windows products also carry DevTestConsumption rows at the Linux price (Spot too),
    Low Priority rows exist for both products, and `reservation` = (1-year, 3-year) whole-term prices.
    Prices are decimal strings as published; they become JSON numbers.
    """
    product = f"Virtual Machines {series} Series"
    meter = arm_sku.removeprefix("Standard_").replace("_", " ")
    rows: list[tuple[str, str, str, str, str | None]] = [(product, meter, "Consumption", linux, None)]
    if windows is not None:
        rows += [
            (f"{product} Windows", meter, "Consumption", windows, None),
            (f"{product} Windows", meter, "DevTestConsumption", linux, None),
        ]
    if spot is not None:
        rows.append((product, f"{meter} Spot", "Consumption", spot, None))
    if spot_windows is not None:
        rows.append((f"{product} Windows", f"{meter} Spot", "Consumption", spot_windows, None))
        if spot is not None:
            rows.append((f"{product} Windows", f"{meter} Spot", "DevTestConsumption", spot, None))
    if low_priority is not None:
        rows.append((product, f"{meter} Low Priority", "Consumption", low_priority, None))
    if reservation is not None:
        rows += [
            (product, meter, "Reservation", reservation[0], "1 Year"),
            (product, meter, "Reservation", reservation[1], "3 Years"),
        ]
    return [
        _item(region, arm_sku, product_name, sku_name, kind, price, term, start)
        for product_name, sku_name, kind, price, term in rows
    ]


def variant(item: dict[str, Any], price: str | None = None, **fields: Any) -> dict[str, Any]:
    """A copy of `item` with other fields (a non-primary duplicate, other dates, a Cloud Services product);
    a new price sets both retailPrice and unitPrice, and the meter gets its own ids."""
    out = dict(item, **fields)
    if price is not None:
        out["retailPrice"] = out["unitPrice"] = float(price)
    if "meterId" not in fields:
        out["meterId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(out, sort_keys=True)))
    return out


def in_currency(items: Iterable[dict[str, Any]], currency: str, rate: Decimal) -> list[dict[str, Any]]:
    """The items as the API lists them in another currency, converted at `rate` (a test rate, exact)."""
    out = []
    for item in items:
        price = float(Decimal(repr(item["retailPrice"])) * rate)
        out.append(dict(item, currencyCode=currency, retailPrice=price, unitPrice=price))
    return out


def _item(
    region: str,
    arm_sku: str,
    product: str,
    sku_name: str,
    kind: str,
    price: str,
    term: str | None,
    start: str,
) -> dict[str, Any]:
    product_id = "DZH318Z0" + _code(product, 4)
    item: dict[str, Any] = {"currencyCode": "USD", "tierMinimumUnits": 0.0}
    if term is not None:
        item["reservationTerm"] = term
    item |= {
        "retailPrice": float(price),
        "unitPrice": float(price),
        "armRegionName": region,
        "location": LOCATIONS[region],
        "effectiveStartDate": start,
        "meterId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{region}/{product}/{sku_name}")),
        "meterName": sku_name,
        "productId": product_id,
        "skuId": f"{product_id}/{_code(f'{region}/{sku_name}/{kind}/{term}', 4)}",
        "productName": product,
        "skuName": sku_name,
        "serviceName": "Virtual Machines",
        "serviceId": VM_SERVICE_ID,
        "serviceFamily": "Compute",
        "unitOfMeasure": "1 Hour",
        "type": kind,
        "isPrimaryMeterRegion": True,
        "armSkuName": arm_sku,
    }
    return item


def _code(text: str, length: int) -> str:
    """A stable upper-case code like the API's product/sku ids."""
    return uuid.uuid5(uuid.NAMESPACE_URL, text).hex[:length].upper()


# -- $filter --------------------------------------------------------------------------------------------------


class FilterError(ValueError):
    """A $filter outside what the API accepts."""


Predicate = Callable[[dict[str, Any]], bool]
_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<sym>\S))")


def parse_filter(text: str) -> Predicate:
    """`field eq 'v'` comparisons under `and`/`or`/parentheses; anything else raises FilterError."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # only trailing whitespace is left
            break
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    parser = _FilterParser(tokens)
    predicate = parser.expr()
    if parser.pos != len(tokens):
        raise FilterError(f"unexpected {tokens[parser.pos][1]!r}")
    if parser.comparisons > MAX_COMPARISONS:
        raise FilterError(f"{parser.comparisons} comparisons")
    return predicate


class _FilterParser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.comparisons = 0

    def expr(self) -> Predicate:
        parts = [self.conjunction()]
        while self._take("word", "or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda item: any(p(item) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.atom()]
        while self._take("word", "and"):
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else (lambda item: all(p(item) for p in parts))

    def atom(self) -> Predicate:
        if self._take("sym", "("):
            inner = self.expr()
            if not self._take("sym", ")"):
                raise FilterError("unbalanced parentheses")
            return inner
        field = self._next("word")
        if field not in FILTER_FIELDS:
            raise FilterError(f"unknown field {field!r}")
        if self._next("word") != "eq":
            raise FilterError("only eq is supported")
        literal = self._next("str")
        value = literal[1:-1].replace("''", "'")
        self.comparisons += 1
        name = FILTER_FIELDS[field]
        return lambda item: item.get(name) == value

    def _take(self, kind: str, value: str) -> bool:
        if self.pos < len(self.tokens) and self.tokens[self.pos] == (kind, value):
            self.pos += 1
            return True
        return False

    def _next(self, kind: str) -> str:
        if self.pos >= len(self.tokens) or self.tokens[self.pos][0] != kind:
            raise FilterError(f"expected a {kind}")
        self.pos += 1
        return self.tokens[self.pos - 1][1]


# -- server ---------------------------------------------------------------------------------------------------


class FakeRetailPricesAPI(FakeServer):
    """The server; use as a context manager. Mutate `items` and the controls between calls as needed."""

    def __init__(self, items: Iterable[dict[str, Any]] = (), *, page_size: int = 1000) -> None:
        super().__init__()
        self.items = list(items)
        self.page_size = page_size
        self.ignore_price_type = False  # a proxy that drops the priceType clause: every type comes back
        self.ignore_currency = False  # a proxy or cache that answers in USD whatever was asked
        self.link_base: str | None = None  # host NextPageLink names instead of this server's

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.requests)

    @property
    def filters(self) -> list[str]:
        with self._lock:
            return [r.query.get("$filter", "") for r in self.requests]

    def fail_next(
        self, count: int, status: int, *, headers: dict[str, str] | None = None, body: Any = None
    ) -> None:
        """Answer the next `count` calls with `status` and `headers` (e.g. Retry-After); the body is the
        API's error JSON ("Invalid OData parameters supplied" for a 400) unless given."""
        if body is None:
            body = BAD_FILTER if status == 400 else _error(str(status), "fake failure")
        self.enqueue(Answer.json(status, body, headers, content_type=_JSON), count)

    def answer_next(self, count: int, body: bytes) -> None:
        """Answer the next `count` calls with 200 and this body (broken JSON, no Items, a looping link…)."""
        self.enqueue(Answer(200, body, content_type=_JSON), count)

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        """The Retail Prices API's own error shape, `{"Error": {"Code", "Message"}}` (as its 400s, see
        BAD_FILTER), not ARM's `{"error": …}`. The API is anonymous: a 401 or 403 comes from what stands in
        front of it (a proxy, a private endpoint); its throttling is a 429 with Retry-After."""
        if fault is Fault.NO_DATA:  # nothing matches the filter
            return Answer.json(200, self._page_body(request, [], None), content_type=_JSON)
        if fault is Fault.BAD_RESPONSE:
            return self.handle(request).truncated()
        headers = {"Retry-After": header_seconds(retry_after)} if fault is Fault.THROTTLED and retry_after else {}
        status, code, message = {
            Fault.AUTH: (401, "Unauthorized", "Authentication failed."),
            Fault.PERMISSION: (403, "Forbidden", "The client is not allowed to read prices."),
            Fault.NOT_FOUND: (404, "NotFound", "The requested resource was not found."),
            Fault.THROTTLED: (429, "TooManyRequests", "Too many requests. Please retry after some time."),
            Fault.UNAVAILABLE: (503, "ServiceUnavailable", "The service is temporarily unavailable."),
        }[fault]
        return Answer.json(status, _error(code, message), headers, content_type=_JSON)

    def handle(self, request: Request) -> Answer:
        """What the API answers to GET path?query."""
        query = request.query
        if request.path != API_PATH:
            return Answer(404, b"", content_type=_JSON)
        if query.get("api-version", API_VERSIONS[0]) not in API_VERSIONS:
            return Answer.json(400, BAD_VERSION, content_type=_JSON)
        currency = query.get("currencyCode", "USD").strip("'")
        try:
            predicate = parse_filter(query["$filter"]) if "$filter" in query else (lambda _item: True)
            skip = int(query.get("$skip", "0"))
        except ValueError:  # FilterError too
            return Answer.json(400, BAD_FILTER, content_type=_JSON)
        with self._lock:
            matches = [item for item in self.items if self._matches(item, predicate, currency)]
        page = matches[skip : skip + self.page_size]
        link = None
        if skip + self.page_size < len(matches):
            kept = [p for p in request.raw_query.split("&") if not p.startswith(("$skip=", "%24skip="))]
            base = self.link_base or self.url
            link = f"{base}{API_PATH}?{'&'.join(kept)}&$skip={skip + self.page_size}"
        return Answer.json(200, self._page_body(request, page, link), content_type=_JSON)

    def _page_body(self, request: Request, page: list[dict[str, Any]], link: str | None) -> dict[str, Any]:
        currency = request.query.get("currencyCode", "USD").strip("'")
        return {
            "BillingCurrency": "USD" if self.ignore_currency else currency,
            "CustomerEntityId": "Default",
            "CustomerEntityType": "Retail",
            "Items": page,
            "NextPageLink": link,
            "Count": len(page),
        }

    def _matches(self, item: dict[str, Any], predicate: Predicate, currency: str) -> bool:
        if not self.ignore_currency and item.get("currencyCode") != currency:
            return False
        if self.ignore_price_type:
            item = dict(item, type="Consumption")  # only for matching: the served item keeps its type
        return predicate(item)


_JSON = "application/json; charset=utf-8"


def _error(code: str, message: str) -> dict[str, Any]:
    return {"Error": {"Code": code, "Message": message}}

