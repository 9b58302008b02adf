"""Log lines: logfmt and JSON, with a component's structured fields as their own keys."""

import json
import logging

import pytest

from exporter.health import Health, Reason
from exporter.logs import REDACTED, _Formatter, redact, setup_logging, with_fields

LOGGER = "exporter.test_logs"


def formatted(caplog: pytest.LogCaptureFixture, *, as_json: bool = False) -> list[str]:
    """Each captured record as the exporter writes it, at a fixed time."""
    lines = []
    for record in caplog.records:
        record.created, record.msecs = 1_717_200_000.0, 5.0
        lines.append(_Formatter(as_json=as_json).format(record))
    return lines


def test_fields_are_logfmt_keys_after_logger_and_before_msg_quoted_when_needed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = with_fields(logging.getLogger(LOGGER), integration="custom_prices", source='my "own" table')
    with caplog.at_level(logging.INFO, LOGGER):
        log.warning("row %d skipped", 7)
        logging.getLogger(LOGGER).info("no fields")
    assert formatted(caplog) == [
        "ts=2024-06-01T00:00:00.005Z level=warning logger=exporter.test_logs integration=custom_prices "
        'source="my \\"own\\" table" msg="row 7 skipped"',
        'ts=2024-06-01T00:00:00.005Z level=info logger=exporter.test_logs msg="no fields"',
    ]


def test_json_lines_carry_the_same_keys_in_the_same_order(caplog: pytest.LogCaptureFixture) -> None:
    log = with_fields(logging.getLogger(LOGGER), source="aws_spot", integration="aws_spot")
    with caplog.at_level(logging.INFO, LOGGER):
        try:
            raise ValueError("bad page")
        except ValueError:
            log.exception("refresh failed")
    (line,) = formatted(caplog, as_json=True)
    fields = json.loads(line)
    assert list(fields) == ["ts", "level", "logger", "integration", "source", "msg", "err"]
    assert fields["integration"] == fields["source"] == "aws_spot"
    assert fields["msg"] == "refresh failed" and fields["err"].endswith("ValueError: bad page")


def test_a_call_can_add_or_override_fields_and_an_unknown_field_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = with_fields(logging.getLogger(LOGGER), integration="aws_cur")
    with caplog.at_level(logging.INFO, LOGGER):
        log.info("query done", extra={"source": "aws_cur"})
    assert " integration=aws_cur source=aws_cur msg=" in formatted(caplog)[0]
    with pytest.raises(TypeError, match="not a log field: region"):
        with_fields(logging.getLogger(LOGGER), region="us-east-1")


def test_integration_failing_and_recovered_lines_name_it_as_a_field(caplog: pytest.LogCaptureFixture) -> None:
    status = Health().integration("azure_retail")
    with caplog.at_level(logging.INFO, "exporter.health"):
        status.failed(Reason.THROTTLED, "HTTP 429 from prices.azure.com")
        status.failed(Reason.THROTTLED, "HTTP 429 again")  # same reason: not logged again
        status.succeeded()
    assert formatted(caplog) == [
        "ts=2024-06-01T00:00:00.005Z level=warning logger=exporter.health integration=azure_retail "
        'msg="integration failing (throttled): HTTP 429 from prices.azure.com"',
        'ts=2024-06-01T00:00:00.005Z level=info logger=exporter.health integration=azure_retail '
        'msg="integration recovered"',
    ]


@pytest.mark.parametrize(
    ("line", "secret"),
    [
        # botocore.endpoint at debug: the signed request's headers.
        ("headers={'X-Amz-Security-Token': b'FQoGZXIvYXdzEXAMPLETOKEN0123', 'Authorization': b'AWS4-HMAC-SHA256 "
         "Credential=AKIAIOSFODNN7EXAMPLE/20260601/us-east-1/pricing/aws4_request'}", "FQoGZXIvYXdzEXAMPLETOKEN0123"),
        ("Credential=ASIAIOSFODNN7EXAMPLE/20260601", "ASIAIOSFODNN7EXAMPLE"),
        # botocore.auth at debug: the canonical request, one header a line.
        ("x-amz-security-token:IQoJb3JpZ2luX2VjEJr//wEaCXVz=\nx-amz-target:GetProducts", "IQoJb3JpZ2luX2VjEJr//wEaCXVz="),
        ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ('{"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCY", "Expiration": 1}', "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"),
        ("{'Authorization': 'Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln'}", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"),
        ("refreshed token ya29.a0AfH6SMBx-Qz_example.token", "ya29.a0AfH6SMBx-Qz_example.token"),
        ("GET /v1/services?key=AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
        ("body: grant_type=client_credentials&client_id=app&client_secret=Xy8Q~s3cr3t.Value&scope=x", "Xy8Q~s3cr3t.Value"),
        ("GET https://acct.blob.core.windows.net/c/export.csv?sv=2022-11-02&sig=Zm9v%2Bbar%3D&se=2026", "Zm9v%2Bbar%3D"),
        ('"private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n"', "MIIEvQIBADANBg"),
    ],
)
def test_known_credential_shapes_are_masked(line: str, secret: str) -> None:
    masked = redact(line)
    assert secret not in masked and REDACTED in masked
    assert "AKIA" not in masked


def test_sdk_lines_are_held_back_unless_asked_for_and_secrets_masked_in_every_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("debug", "json")
        logging.getLogger("botocore.endpoint").debug("Sending request with AKIAIOSFODNN7EXAMPLE")
        logging.getLogger("botocore.credentials").warning("credentials expire soon")
        logging.getLogger("exporter.test").debug("own debug line, Bearer abc.def")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        assert [(line["logger"], line["msg"]) for line in lines] == [
            ("botocore.credentials", "credentials expire soon"),
            ("exporter.test", f"own debug line, Bearer {REDACTED}"),
        ]
        setup_logging("debug", "logfmt", "debug")
        logging.getLogger("botocore.endpoint").debug("Sending request with AKIAIOSFODNN7EXAMPLE")
        assert f'msg="Sending request with {REDACTED}"' in capsys.readouterr().err
        setup_logging("info", "logfmt", "debug")  # never more verbose than log.level
        logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection")
        assert capsys.readouterr().err == ""
    finally:
        root.handlers[:], root.level = saved
