"""Local fakes of the two AWS APIs the exporter calls, speaking their real wire protocols on 127.0.0.1.

boto3 reaches them only through `endpoint_url`, so the SDK's real serialisers, signers and parsers run:
- `PricingApi`: the Price List Query API (AWS JSON 1.1, `X-Amz-Target: AWSPriceListService.GetProducts`).
  It holds products shaped like real GetProducts elements and applies the TERM_MATCH filters itself, so a
  misspelt field or value in the caller finds nothing, as it would against AWS. `ignored_filters` makes it
  lenient on chosen fields, to prove the caller re-checks rows instead of trusting its filters.
- `Ec2Api`: the EC2 Query API's DescribeSpotPriceHistory (form-encoded request, XML response). It tells
  regions apart by the SigV4 credential scope, so one endpoint serves several regions, and with a
  StartTime it returns, like EC2, the price in effect at that time plus any later changes, newest first.

Both are `FakeServer`s: generic faults (`inject`) come in each API's own wire shape, and the older
controls stay: an exact error (`fail_next`), garbage (`malformed_next`), slowness (`delay_seconds`), paging
(`page_size`) and every call decoded (`calls`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from exporter.config.sources.aws import partition_of
from fakes.server import Answer, FakeServer, Fault, Request, header_seconds

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"

# Region → (Price List `location`, usagetype prefix), as the price list spells them.
REGIONS = {
    "us-east-1": ("US East (N. Virginia)", ""),
    "us-east-2": ("US East (Ohio)", "USE2-"),
    "us-west-1": ("US West (N. California)", "USW1-"),
    "us-west-2": ("US West (Oregon)", "USW2-"),
    "eu-west-1": ("EU (Ireland)", "EU-"),
    "eu-central-1": ("EU (Frankfurt)", "EUC1-"),
    "af-south-1": ("Africa (Cape Town)", "AFS1-"),
    "cn-north-1": ("China (Beijing)", "CNN1-"),
    "cn-northwest-1": ("China (Ningxia)", "CNW1-"),
    "us-gov-west-1": ("AWS GovCloud (US-West)", "UGW1-"),
}
_USAGE = {"Shared": "BoxUsage", "Dedicated": "DedicatedUsage", "Host": "HostBoxUsage"}
ON_DEMAND_TERM = "JRTCKXETXF"  # the offer term code of every EC2 on-demand price
HOURLY_RATE = "6YS6EN2CT7"  # the rate code of its hourly price dimension


def ec2_product(
    region: str,
    instance_type: str,
    usd_per_hour: str,
    *,
    operating_system: str = "Linux",
    operation: str = "RunInstances",
    tenancy: str = "Shared",
    license_model: str = "No License required",
    capacitystatus: str = "Used",
    pre_installed_sw: str = "NA",
    market_option: str = "OnDemand",
    vcpu: str = "2",
    memory: str = "8 GiB",
    reserved_usd_per_hour: str = "",
    currency: str = "USD",  # the China regions' price list quotes CNY
) -> str:
    """One GetProducts PriceList element (a JSON string), with the attribute names and term layout of the
    real 2024 af-south-1 c5ad.2xlarge element in ../shared/fixtures/real/aws_pricing/."""
    location, prefix = REGIONS[region]
    usage = "UnusedBox" if capacitystatus == "UnusedCapacityReservation" else _USAGE[tenancy]
    attributes = {
        "memory": memory,
        "vcpu": vcpu,
        "capacitystatus": capacitystatus,
        "locationType": "AWS Region",
        "storage": "EBS only",
        "operatingSystem": operating_system,
        "regionCode": region,
        "servicename": "Amazon Elastic Compute Cloud",
        "instanceType": instance_type,
        "tenancy": tenancy,
        "usagetype": f"{prefix}{usage}:{instance_type}",
        "servicecode": "AmazonEC2",
        "licenseModel": license_model,
        "currentGeneration": "Yes",
        "preInstalledSw": pre_installed_sw,
        "location": location,
        "processorArchitecture": "64-bit",
        "marketoption": market_option,
        "operation": operation,
        "availabilityzone": "NA",
    }
    sku = hashlib.sha256(json.dumps(attributes, sort_keys=True).encode()).hexdigest()[:16].upper()
    rate = f"{sku}.{ON_DEMAND_TERM}.{HOURLY_RATE}"
    terms: dict[str, Any] = {
        "OnDemand": {
            f"{sku}.{ON_DEMAND_TERM}": {
                "priceDimensions": {
                    rate: {
                        "unit": "Hrs",
                        "endRange": "Inf",
                        "description": f"${usd_per_hour.rstrip('0')} per On Demand {operating_system} "
                        f"{instance_type} Instance Hour",
                        "appliesTo": [],
                        "rateCode": rate,
                        "beginRange": "0",
                        "pricePerUnit": {currency: usd_per_hour},
                    }
                },
                "sku": sku,
                "effectiveDate": "2026-11-01T00:00:00Z",
                "offerTermCode": ON_DEMAND_TERM,
                "termAttributes": {},
            }
        }
    }
    if reserved_usd_per_hour:
        reserved = f"{sku}.4NA7Y494T4.{HOURLY_RATE}"
        terms["Reserved"] = {
            f"{sku}.4NA7Y494T4": {
                "priceDimensions": {
                    reserved: {
                        "unit": "Hrs",
                        "endRange": "Inf",
                        "description": f"{operating_system} (Amazon VPC), {instance_type} reserved instance "
                        "applied",
                        "appliesTo": [],
                        "rateCode": reserved,
                        "beginRange": "0",
                        "pricePerUnit": {"USD": reserved_usd_per_hour},
                    }
                },
                "sku": sku,
                "effectiveDate": "2026-11-01T00:00:00Z",
                "offerTermCode": "4NA7Y494T4",
                "termAttributes": {
                    "LeaseContractLength": "1yr",
                    "OfferingClass": "standard",
                    "PurchaseOption": "No Upfront",
                },
            }
        }
    element = {
        "product": {"productFamily": "Compute Instance", "attributes": attributes, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": terms,
        "version": "20261120191027",
        "publicationDate": "2026-11-20T19:10:27Z",
    }
    return json.dumps(element, separators=(",", ":"))


@dataclass(frozen=True)
class Call:
    """One request as the fake decoded it."""

    operation: str  # GetProducts, DescribeSpotPriceHistory, or whatever the request named
    region: str  # from the SigV4 credential scope; "" when unsigned
    params: dict[str, Any]  # the decoded JSON body, or form fields (a list per field)


class _FakeAws(FakeServer):
    """What both AWS fakes share: SigV4 scope checks, the legacy controls and the call log."""

    content_type = ""

    def __init__(self) -> None:
        super().__init__()
        self.page_size = 100  # most items per page, whatever MaxResults asks for

    @property
    def calls(self) -> list[Call]:
        """Every request, decoded."""
        with self._lock:
            received = list(self.requests)
        return [self._call(request) for request in received]

    def count(self, operation: str) -> int:
        return sum(1 for call in self.calls if call.operation == operation)

    def fail_next(
        self,
        count: int,
        code: str,
        *,
        status: int = 400,
        message: str = "",
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `count` calls with this error (queued after any earlier failures)."""
        headers = {} if retry_after is None else {"Retry-After": retry_after}
        self.enqueue(lambda request: self._error(status, code, message or code, headers), count)

    def malformed_next(self, count: int = 1) -> None:
        """Answer the next `count` calls with HTTP 200 and a truncated body."""
        self.enqueue(Answer(200, self._truncated().encode(), content_type=self.content_type), count)

    # -- per request ------------------------------------------------------------------------------------

    def answer_headers(self, request: Request) -> dict[str, str]:
        return {"x-amzn-RequestId": str(uuid.uuid4())}

    def handle(self, request: Request) -> Answer:
        scope = _SCOPE.search(request.headers.get("authorization") or "")
        if scope is None:
            return self._error(403, "MissingAuthenticationToken", "Request is missing a signature")
        call = self._call(request)
        return self._answer(call.operation, scope.group(1), scope.group(2), call.params)

    def _call(self, request: Request) -> Call:
        scope = _SCOPE.search(request.headers.get("authorization") or "")
        operation, params = self._decode(request)
        return Call(operation, scope.group(1) if scope else "", params)

    def _reply(self, status: int, payload: str) -> Answer:
        return Answer(status, payload.encode(), content_type=self.content_type)

    def _decode(self, request: Request) -> tuple[str, dict[str, Any]]:
        raise NotImplementedError

    def _answer(self, operation: str, region: str, service: str, params: dict[str, Any]) -> Answer:
        raise NotImplementedError

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
        raise NotImplementedError

    def _truncated(self) -> str:
        raise NotImplementedError


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _offset(token: str) -> int | None:
    try:
        return int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
    except (ValueError, KeyError, TypeError):
        return None


class PricingApi(_FakeAws):
    """The Price List Query API's GetProducts, over AWS JSON 1.1."""

    content_type = "application/x-amz-json-1.1"

    def __init__(self) -> None:
        super().__init__()
        self._products: list[tuple[str, dict[str, Any]]] = []  # (element as served, its attributes)
        self.ignored_filters: set[str] = set()  # filter fields this fake pretends not to apply
        self.garbage_elements: list[str] = []  # appended to every page, as a server bug would
        self.stuck_token = False  # True: every page says NextToken "stuck", a server paging in circles

    def add(self, *elements: str) -> None:
        """Products as GetProducts PriceList elements (JSON strings), served byte for byte."""
        parsed = [(element, json.loads(element)["product"]["attributes"]) for element in elements]
        with self._lock:
            self._products.extend(parsed)

    def _decode(self, request: Request) -> tuple[str, dict[str, Any]]:
        target = request.headers.get("x-amz-target") or ""
        operation = (
            target.removeprefix("AWSPriceListService.") if target.startswith("AWSPriceList") else target
        )
        params = request.json() if request.body else {}
        if request.headers.get("content-type") != self.content_type:
            operation = f"bad content type {request.headers.get('content-type')!r}"
        return operation, params if isinstance(params, dict) else {}

    def _answer(self, operation: str, region: str, service: str, params: dict[str, Any]) -> Answer:
        if operation != "GetProducts" or service != "pricing":
            return self._error(400, "UnknownOperationException", f"{operation} ({service})")
        if params.get("ServiceCode") != "AmazonEC2":
            return self._error(400, "NotFoundException", f"unknown service code {params.get('ServiceCode')!r}")
        filters = params.get("Filters", [])
        if any(f.get("Type") != "TERM_MATCH" for f in filters):
            return self._error(400, "InvalidParameterException", "this fake only knows TERM_MATCH")
        wanted = {f["Field"]: f["Value"] for f in filters if f["Field"] not in self.ignored_filters}
        with self._lock:
            matches = [
                element
                for element, attributes in self._products
                if all(attributes.get(field) == value for field, value in wanted.items())
            ]
        offset = 0 if self.stuck_token or "NextToken" not in params else _offset(params["NextToken"])
        if offset is None:
            return self._error(400, "InvalidNextTokenException", "The next token is invalid")
        size = min(int(params.get("MaxResults") or 100), self.page_size)
        page = matches[offset : offset + size] + self.garbage_elements
        answer: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": page}
        if self.stuck_token:
            answer["NextToken"] = "stuck"
        elif offset + size < len(matches):
            answer["NextToken"] = _token(offset + size)
        return self._reply(200, json.dumps(answer))

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
        return aws_json_error(status, code, message, headers=headers)

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        """The Price List API's errors (AWS JSON 1.1, see `aws_json_error`), for GetProducts."""
        if fault is Fault.NO_DATA:  # no product matches the filters
            return self._reply(200, json.dumps({"FormatVersion": "aws_v1", "PriceList": []}))
        if fault is Fault.BAD_RESPONSE:
            return self._reply(200, self._truncated())
        scope = _SCOPE.search(request.headers.get("authorization") or "")
        return aws_json_fault(fault, "pricing:GetProducts", retry_after, partition_of(scope.group(1) if scope else ""))

    def _truncated(self) -> str:
        return '{"FormatVersion":"aws_v1","PriceList":["{\\"product\\":{\\"productFamily'


@dataclass(frozen=True)
class SpotRecord:
    availability_zone: str
    instance_type: str
    product_description: str
    spot_price: str
    timestamp: datetime


class Ec2Api(_FakeAws):
    """EC2's DescribeSpotPriceHistory, over the EC2 Query protocol."""

    content_type = "text/xml;charset=UTF-8"

    def __init__(self) -> None:
        super().__init__()
        self._records: list[SpotRecord] = []
        self.full_history = False  # True: every record, as for a StartTime long ago

    def add(
        self,
        availability_zone: str,
        instance_type: str,
        spot_price: str,
        timestamp: str,
        product_description: str = "Linux/UNIX (Amazon VPC)",
    ) -> None:
        """One spot price change; `timestamp` as EC2 writes it, e.g. 2026-11-22T10:00:00.000Z."""
        stamp = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        with self._lock:
            self._records.append(
                SpotRecord(availability_zone, instance_type, product_description, spot_price, stamp)
            )

    def _decode(self, request: Request) -> tuple[str, dict[str, Any]]:
        params = parse_qs(request.body.decode(), keep_blank_values=True)
        if params.get("Version") != ["2016-11-15"]:
            return f"bad version {params.get('Version')}", params
        return params.get("Action", ["?"])[0], params

    def _answer(self, operation: str, region: str, service: str, params: dict[str, Any]) -> Answer:
        if operation != "DescribeSpotPriceHistory" or service != "ec2":
            return self._error(400, "InvalidAction", f"The action {operation} is not valid for this web service.")
        types = _members(params, "InstanceType")
        descriptions = _members(params, "ProductDescription")
        with self._lock:
            records = [
                r
                for r in self._records
                if r.availability_zone[:-1] == region
                and (not types or r.instance_type in types)
                and (not descriptions or r.product_description in descriptions)
            ]
        if "StartTime" in params and not self.full_history:
            records = _effective_since(records, _parse_time(params["StartTime"][0]))
        records.sort(key=lambda r: r.timestamp, reverse=True)
        offset = _offset(params["NextToken"][0]) if params.get("NextToken", [""])[0] else 0
        if offset is None:
            return self._error(400, "InvalidNextToken", "The specified token is invalid")
        size = min(int(params.get("MaxResults", ["1000"])[0]), self.page_size)
        items = "".join(
            "<item>"
            f"<instanceType>{escape(r.instance_type)}</instanceType>"
            f"<productDescription>{escape(r.product_description)}</productDescription>"
            f"<spotPrice>{escape(r.spot_price)}</spotPrice>"
            f"<timestamp>{r.timestamp.strftime('%Y-%m-%dT%H:%M:%S.000Z')}</timestamp>"
            f"<availabilityZone>{escape(r.availability_zone)}</availabilityZone>"
            "</item>"
            for r in records[offset : offset + size]
        )
        token = _token(offset + size) if offset + size < len(records) else ""
        return self._history(items, token)

    def _history(self, items: str, token: str) -> Answer:
        return self._reply(
            200,
            f'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeSpotPriceHistoryResponse xmlns="{_EC2_NS}">'
            f"<requestId>{uuid.uuid4()}</requestId><spotPriceHistorySet>{items}</spotPriceHistorySet>"
            f"<nextToken>{token}</nextToken></DescribeSpotPriceHistoryResponse>",
        )

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
        """EC2's Query API error document (docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html):
        `<Response><Errors><Error><Code>…<Message>…</Error></Errors><RequestID>…</RequestID></Response>`."""
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
        )
        return Answer(status, body.encode(), dict(headers or {}), self.content_type)

    def fault_answer(self, fault: Fault, request: Request, retry_after: float | None) -> Answer:
        """EC2's own codes and statuses, from its API reference "Error codes" page (api-error-codes.html)
        and "Troubleshooting API request errors" (RequestLimitExceeded, Client.UnauthorizedOperation)."""
        if fault is Fault.NO_DATA:  # no price history for the types asked, in that region
            return self._history("", "")
        if fault is Fault.BAD_RESPONSE:
            return self._reply(200, self._truncated())
        headers = {} if retry_after is None else {"Retry-After": header_seconds(retry_after)}
        status, code, message = {
            Fault.AUTH: (401, "AuthFailure", "AWS was not able to validate the provided access credentials"),
            Fault.PERMISSION: (403, "UnauthorizedOperation", "You are not authorized to perform this operation."),
            Fault.NOT_FOUND: (400, "InvalidAction", "The action or operation requested is not valid."),
            Fault.THROTTLED: (503, "RequestLimitExceeded", "Request limit exceeded."),
            Fault.UNAVAILABLE: (503, "Unavailable", "The server is overloaded and can't handle the request."),
        }[fault]
        return self._error(status, code, message, headers if fault is Fault.THROTTLED else None)

    def _truncated(self) -> str:
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeSpotPriceHistoryResponse xmlns="{_EC2_NS}"><spot'


def aws_json_error(
    status: int, code: str, message: str, *, message_key: str = "message", headers: dict[str, str] | None = None
) -> Answer:
    """An AWS JSON 1.1 error: the shape name in `__type` and in the `x-amzn-ErrorType` header, the message
    in `message` (`Message` for some services' own errors), as the Smithy awsJson1_1 protocol spec says
    (smithy-lang/smithy, aws-json-1_1-protocol: "Operation error serialization")."""
    return Answer.json(
        status,
        {"__type": code, message_key: message},
        {"x-amzn-ErrorType": code, **(headers or {})},
        content_type="application/x-amz-json-1.1",
    )


def aws_json_fault(fault: Fault, action: str, retry_after: float | None, partition: str = "aws") -> Answer:
    """A generic fault as any AWS JSON service's front door answers it: UnrecognizedClientException and
    AccessDeniedException (AWS's common errors, docs.aws.amazon.com/.../CommonErrors.html), 400
    ThrottlingException "Rate exceeded", 503 ServiceUnavailable. AWS rarely sends Retry-After; the fake adds
    it when `retry_after` is given, to prove a caller honours it where it is sent. The caller's ARN is in
    the partition of the region the request was signed for (arn:aws-cn:… in China)."""
    role = f"arn:{partition}:sts::123456789012:assumed-role/node-cost-exporter/botocore-session"
    status, code, message = {
        Fault.AUTH: (400, "UnrecognizedClientException", "The security token included in the request is invalid."),
        Fault.PERMISSION: (
            400,
            "AccessDeniedException",
            f"User: {role} is not authorized to perform: {action} because no identity-based policy allows the "
            f"{action} action",
        ),
        Fault.NOT_FOUND: (400, "NotFoundException", "The requested resource was not found."),
        Fault.THROTTLED: (400, "ThrottlingException", "Rate exceeded"),
        Fault.UNAVAILABLE: (503, "ServiceUnavailable", "Service is unavailable. Please try again later."),
    }[fault]
    headers = {"Retry-After": header_seconds(retry_after)} if fault is Fault.THROTTLED and retry_after is not None else {}
    return aws_json_error(status, code, message, headers=headers)



def _members(params: dict[str, list[str]], name: str) -> set[str]:
    """The values of an EC2 Query list parameter: Name.1, Name.2, …"""
    return {values[0] for key, values in params.items() if re.fullmatch(rf"{name}\.\d+", key)}


def _parse_time(text: str) -> datetime:
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _effective_since(records: list[SpotRecord], start: datetime) -> list[SpotRecord]:
    """Changes after `start` plus, per zone/type/description, the last change before it (the price then)."""
    before: dict[tuple[str, str, str], SpotRecord] = {}
    after = []
    for record in records:
        where = (record.availability_zone, record.instance_type, record.product_description)
        if record.timestamp > start:
            after.append(record)
        elif where not in before or record.timestamp > before[where].timestamp:
            before[where] = record
    return after + list(before.values())
