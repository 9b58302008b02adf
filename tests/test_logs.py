"""Log lines: logfmt and JSON, with a component's structured fields as their own keys."""

import json
import logging

import pytest

from exporter.health import Health, Reason
from exporter.logs import _Formatter, with_fields

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
