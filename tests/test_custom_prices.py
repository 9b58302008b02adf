import os
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.health import IntegrationStatus, Reason
from exporter.inventory.node import CapacityType, ProviderRef
from exporter.pricing.quote import Basis
from exporter.pricing.sources.custom import CustomPrices, CustomTableError, read_rules
from tests.conftest import FakeClock, node

ROOT = Path(__file__).resolve().parents[1]
ONPREM = ProviderRef("")


def table(tmp_path: Path, text: str, name: str = "prices.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_shipped_example_table_prices_by_type_selector_and_per_unit() -> None:
    source = CustomPrices(
        str(ROOT / "config" / "custom-prices.example.yaml"), IntegrationStatus("custom"), "USD"
    )
    by_type = source.quote(node())
    assert by_type is not None and (by_type.hourly, by_type.basis) == (Decimal("0.1650"), Basis.CUSTOM)
    gpu_pool = node(instance_type="g4dn.xlarge", labels={"eks.amazonaws.com/nodegroup": "gpu"})
    assert source.quote(gpu_pool).hourly == Decimal("0.4200")  # type: ignore[union-attr]
    rack = node(
        "rack3-worker-07",
        provider_id="",
        ref=ONPREM,
        instance_type="",
        region="",
        zone="",
        cpu_cores=32.0,
        memory_bytes=128 * 2**30,
        gpu_count=2,
    )
    quote = source.quote(rack)
    assert quote is not None
    assert quote.hourly == Decimal("0.0125") * 32 + Decimal("0.0017") * 128 + Decimal("0.55") * 2
    assert (quote.cpu_core_hourly, quote.memory_gib_hourly, quote.gpu_hourly) == (
        Decimal("0.0125"),
        Decimal("0.0017"),
        Decimal("0.55"),
    )
    other_region = node(region="eu-west-1")
    assert source.quote(other_region) is None


def test_first_match_wins_and_all_conditions_must_hold(tmp_path: Path) -> None:
    path = table(
        tmp_path,
        """
prices:
  - {instance_type: m5.xlarge, capacity_type: spot, hourly: "0.07"}
  - {instance_type: m5.xlarge, hourly: "0.18"}
  - {instance_type: m5.xlarge, hourly: "0.99"}
""",
    )
    source = CustomPrices(path, IntegrationStatus("custom"), "USD")
    assert source.quote(node(capacity_type=CapacityType.SPOT)).hourly == Decimal("0.07")  # type: ignore[union-attr]
    assert source.quote(node()).hourly == Decimal("0.18")  # type: ignore[union-attr]


def test_csv_table_with_selector(tmp_path: Path) -> None:
    path = table(
        tmp_path,
        "instance_type,region,selector,hourly,cpu_core_hourly,memory_gib_hourly\n"
        "m5.xlarge,us-east-1,,0.1650,,\n"
        ",,kubernetes.io/os=linux;node-role.kubernetes.io/worker=,,0.02,0.003\n",
        "prices.csv",
    )
    source = CustomPrices(path, IntegrationStatus("custom"), "EUR")
    quote = source.quote(node())
    assert quote is not None and (quote.hourly, quote.currency) == (Decimal("0.1650"), "EUR")
    worker = node(
        "w",
        region="",
        ref=ONPREM,
        cpu_cores=2.0,
        memory_bytes=4 * 2**30,
        labels={"kubernetes.io/os": "linux", "node-role.kubernetes.io/worker": ""},
    )
    assert source.quote(worker).hourly == Decimal("0.052")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prices:\n  - {instance_type: m5.large}\n", "prices[0]: needs hourly or a per-unit price"),
        (
            "prices:\n  - {instance_type: m5.large, hourly: '$0.09'}\n",
            "prices[0].hourly: not a plain decimal",
        ),
        ("prices:\n  - {instance_tpye: m5.large, hourly: '0.09'}\n", "prices[0]: unknown keys instance_tpye"),
        ("prices:\n  - {capacity_type: on-demand, hourly: '0.09'}\n", "prices[0].capacity_type"),
        ("prices:\n  - {selector: [a], hourly: '0.09'}\n", "prices[0].selector"),
        ("rules: []\n", "expected a mapping with a 'prices' list"),
    ],
)
def test_bad_table_names_the_rule(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(
        CustomTableError, match=message.replace("$", r"\$").replace("[", r"\[").replace("]", r"\]")
    ):
        read_rules(table(tmp_path, text))


def test_edits_are_picked_up_and_a_broken_edit_keeps_the_last_good_table(tmp_path: Path) -> None:
    path = table(tmp_path, "prices:\n  - {instance_type: m5.xlarge, hourly: '0.18'}\n")
    status = IntegrationStatus("custom_prices")
    source = CustomPrices(path, status, "USD")
    assert source.refresh() is False  # unchanged file: nothing to re-read

    Path(path).write_text("prices:\n  - {instance_type: m5.xlarge, hourly: '0.17'}\n")
    os.utime(path, (1, 1))
    assert source.refresh() is True
    assert source.quote(node()).hourly == Decimal("0.17")  # type: ignore[union-attr]

    Path(path).write_text("prices:\n  - {instance_type: m5.xlarge, hourly: 'cheap'}\n")
    os.utime(path, (2, 2))
    assert source.refresh() is False
    assert (status.up, status.reason) == (False, Reason.BAD_RESPONSE)
    assert "keeping the previous table" in status.detail
    assert source.quote(node()).hourly == Decimal("0.17")  # type: ignore[union-attr]

    Path(path).write_text("prices:\n  - {instance_type: m5.xlarge, hourly: '0.16'}\n")
    os.utime(path, (3, 3))
    assert source.refresh() is True
    assert status.up and source.quote(node()).hourly == Decimal("0.16")  # type: ignore[union-attr]

    os.remove(path)
    assert source.refresh() is False
    assert status.reason is Reason.NOT_FOUND
    assert source.quote(node()).hourly == Decimal("0.16")  # type: ignore[union-attr]


def test_the_status_is_stamped_with_the_clocks_time(tmp_path: Path) -> None:
    path = table(tmp_path, "prices:\n  - {instance_type: m5.xlarge, hourly: '0.18'}\n")
    clock, status = FakeClock(), IntegrationStatus("custom_prices")
    source = CustomPrices(path, status, "USD", clock=clock)
    assert status.last_success == clock.time()
    clock.advance(30)
    assert source.refresh() is False
    checked_at = clock.time()
    assert status.last_success == checked_at
    clock.advance(30)
    os.remove(path)
    source.refresh()
    assert (status.up, status.last_attempt, status.last_success) == (False, clock.time(), checked_at)


@pytest.mark.parametrize("name", ["prices.yaml", "prices.csv"])
def test_a_table_that_is_not_utf8_names_the_file_and_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_bytes("instance_type,hourly\nm5.large,0.1\nkühl,0.2\n".encode("latin-1"))
    else:
        path.write_bytes("prices:\n  - {instance_type: m5.large, hourly: '0.1'}\n  # kühl\n".encode("latin-1"))
    with pytest.raises(CustomTableError, match=rf"^{path}: line 3: not UTF-8"):
        read_rules(str(path))


def test_a_reload_that_is_not_utf8_keeps_the_last_good_table(tmp_path: Path) -> None:
    path = table(tmp_path, "prices:\n  - {instance_type: m5.xlarge, hourly: '0.18'}\n")
    status = IntegrationStatus("custom_prices")
    source = CustomPrices(path, status, "USD")
    Path(path).write_bytes("prices:\n  - {instance_type: m5.xlarge, hourly: '0.17'} # \xe9t\xe9\n".encode("latin-1"))
    os.utime(path, (1, 1))
    assert source.refresh() is False
    assert (status.up, status.reason) == (False, Reason.BAD_RESPONSE)
    assert "line 2: not UTF-8" in status.detail and "keeping the previous table" in status.detail
    assert source.quote(node()).hourly == Decimal("0.18")  # type: ignore[union-attr]


def test_shipped_csv_example_loads_and_prices_like_the_yaml_one() -> None:
    source = CustomPrices(str(ROOT / "config" / "custom-prices.example.csv"), IntegrationStatus("custom"), "USD")
    assert len(source.rules) == 3  # the comment lines are not rules
    assert source.quote(node()).hourly == Decimal("0.1650")  # type: ignore[union-attr]
    gpu_pool = node(instance_type="g4dn.xlarge", labels={"eks.amazonaws.com/nodegroup": "gpu"})
    assert source.quote(gpu_pool).hourly == Decimal("0.4200")  # type: ignore[union-attr]
    rack = node("rack3", provider_id="", ref=ONPREM, instance_type="", region="", zone="", cpu_cores=32.0,
                memory_bytes=128 * 2**30, gpu_count=2)
    quote = source.quote(rack)
    assert quote is not None
    assert quote.hourly == Decimal("0.0125") * 32 + Decimal("0.0017") * 128 + Decimal("0.55") * 2


def test_an_empty_provider_is_none_in_yaml_and_any_in_csv(tmp_path: Path) -> None:
    """YAML `provider: ""` is the nodes without a providerID; an empty CSV cell is no condition at all."""
    onprem = node("rack3", provider_id="", ref=ONPREM)
    cloud = node()
    assert cloud.provider == "aws"
    yaml_table = CustomPrices(table(tmp_path, "prices:\n  - {provider: '', hourly: '0.5'}\n"),
                              IntegrationStatus("custom"), "USD")
    assert yaml_table.quote(onprem) is not None and yaml_table.quote(cloud) is None
    csv_table = CustomPrices(table(tmp_path, "provider,hourly\n,0.5\n", "prices.csv"),
                             IntegrationStatus("custom"), "USD")
    assert csv_table.quote(onprem) is not None and csv_table.quote(cloud) is not None


@pytest.mark.parametrize("field", ["provider", "instance_type", "region", "capacity_type"])
def test_a_null_match_field_is_refused_naming_the_file_and_rule(tmp_path: Path, field: str) -> None:
    """`provider:` with no value was None, compared as the text "None": a rule that silently matched nothing."""
    path = table(tmp_path, f"prices:\n  - {{instance_type: m5.large, hourly: '0.1'}}\n  - {{{field}: , hourly: '0.1'}}\n")
    with pytest.raises(CustomTableError, match=rf"^{path}: prices\[1\]\.{field}: empty; give a value"):
        read_rules(path)
