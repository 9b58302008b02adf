"""`node-cost-exporter snapshot` writes an offline table from a live price list that the exporter then reads."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from exporter.inventory.node import ProviderRef
from exporter.pricing.sources.offline import OfflinePrices
from fakes.azure_api import REAL_EASTUS_D2S_V3, FakeRetailPricesAPI
from tests.conftest import node

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # runs the snapshot command as a process


def snapshot(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "snapshot", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **env},
    )


def test_writes_a_table_the_offline_source_reads(tmp_path: Path) -> None:
    out = tmp_path / "offline.csv"
    out.write_text(
        "provider,region,instance_type,os,hourly,currency,as_of,source,notes\n"
        "aws,us-east-1,m5.large,linux,0.096,USD,2026-01-19,earlier snapshot,\n"
    )
    with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
        result = snapshot(
            "--provider",
            "azure",
            "--regions",
            "eastus",
            "--types",
            "Standard_D2s_v3,Standard_X9_v9",
            "--out",
            str(out),
            env={"NODECOST_AZURE__RETAIL__ENDPOINT_URL": fake.url},
        )
    assert result.returncode == 0, result.stderr
    assert "no linux on-demand price for eastus/Standard_X9_v9" in result.stderr
    table = OfflinePrices.load(str(out))
    aks = node(ref=ProviderRef("azure", "sub"), instance_type="Standard_D2s_v3", region="eastus")
    assert table.quote(aks).hourly == Decimal("0.096")  # type: ignore[union-attr]
    assert table.quote(node(instance_type="m5.large")).hourly == Decimal("0.096")  # type: ignore[union-attr]
    lines = out.read_text().splitlines()
    today = datetime.datetime.now(datetime.UTC).date().isoformat()
    assert lines[1].startswith("aws,us-east-1,m5.large,")  # kept, sorted
    assert (
        lines[2]
        == f"azure,eastus,Standard_D2s_v3,linux,0.096,USD,{today},Azure Retail Prices API (api/retail/prices),node-cost-exporter snapshot"
    )


def test_a_failing_price_list_writes_nothing_and_exits_non_zero(tmp_path: Path) -> None:
    out = tmp_path / "offline.csv"
    with FakeRetailPricesAPI(REAL_EASTUS_D2S_V3) as fake:
        fake.fail_next(10, 503)
        result = snapshot(
            "--provider",
            "azure",
            "--regions",
            "eastus",
            "--types",
            "Standard_D2s_v3",
            "--out",
            str(out),
            env={"NODECOST_AZURE__RETAIL__ENDPOINT_URL": fake.url, "NODECOST_AZURE__RETAIL__RETRIES": "0"},
        )
    assert result.returncode == 1
    assert "azure_retail failed" in result.stderr
    assert not out.exists()


def test_aws_needs_usd(tmp_path: Path) -> None:
    result = snapshot(
        "--provider",
        "aws",
        "--regions",
        "us-east-1",
        "--types",
        "m5.large",
        "--out",
        str(tmp_path / "x.csv"),
        env={"NODECOST_PRICING__CURRENCY": "EUR"},
    )
    assert result.returncode == 2
    assert "pricing.currency" in result.stderr and "USD" in result.stderr
