"""docs/backfill.md run as written: the ```sh block with `promtool tsdb create-blocks-from openmetrics` runs in
bash, word for word, against the local Athena, Debian's promtool makes the blocks, and a real Prometheus
started on a data directory holding them answers each node's billed cost of a day.

The exporter's cache is filled the way a running exporter fills it (the CUR source watching the cluster
hour by hour, tests/test_aws_billing.py's bill); `kubectl` is a stand-in for the exporter's pod: it checks
that it is asked to exec in deploy/node-cost-exporter in monitoring, maps the pod's config directory to a
local one, and runs the rest of the command here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from exporter.backfill import METRIC
from exporter.cache import PriceCache
from exporter.config.sources.aws import AwsCurSettings
from exporter.health import Health
from exporter.pricing.sources.aws.cur import AwsCurBilling
from fakes.athena_api import FakeAthena
from tests.conftest import FakeClock, context
from tests.test_aws_billing import NODES, NOW, ON_DEMAND, RESERVED, table_rows, truth
from tests.test_prometheus import Process, free_port, get, prometheus_binary, wait_for

pytestmark = pytest.mark.slow  # runs the exporter, promtool and Prometheus as processes

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "backfill.md"
POD_CONFIG_DIR = "/etc/node-cost-exporter"  # the ConfigMap's mount in deploy/base/deployment.yaml
FIRST, LAST = date(2024, 5, 29), date(2024, 6, 1)
CUR = {"database": "cur", "table": "data_exports", "retries": 0, "poll_interval_seconds": 0.01}


def doc_commands() -> str:
    """The one ```sh block of the doc that makes the blocks."""
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    (block,) = [b for b in blocks if "promtool tsdb create-blocks-from openmetrics" in b]
    return str(block)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return path


@pytest.fixture
def pod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working directory and the environment the doc's commands run in, with the exporter's config and a
    cache that saw the cluster from May 29 to June 3."""
    credentials = {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    }
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with FakeAthena() as athena:
        columns, rows = table_rows("2.0")
        athena.create_table("cur", "data_exports", columns, rows)
        health = Health()
        cache = PriceCache(str(tmp_path / "cache.sqlite"), health.integration("cache"))
        clock = FakeClock(datetime(2024, 5, 29, 0, 30, tzinfo=UTC))
        source = AwsCurBilling(
            AwsCurSettings(enabled=True, endpoint_url=athena.url, timeout_seconds=10.0, **CUR),
            context(clock, health=health, cache=cache),
        )
        while clock.now < NOW.timestamp():  # the exporter watched the cluster every hour
            source.wanted([n for n in NODES if n.created is not None and n.created <= clock.now])
            clock.now += 3600
        source.refresh()  # writes the hours seen to the cache
        cache.close()

        config_dir = tmp_path / "pod" / POD_CONFIG_DIR.lstrip("/")
        config_dir.mkdir(parents=True)
        config = {
            "cache": {"enabled": True, "path": str(tmp_path / "cache.sqlite")},
            "aws": {"cur": {"enabled": True, "endpoint_url": athena.url, "timeout_seconds": 10, **CUR}},
        }
        (config_dir / "config.yaml").write_text(yaml.safe_dump(config))
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        kubectl = bin_dir / "kubectl"
        kubectl.write_text(
            f"#!{sys.executable}\n"
            + textwrap.dedent(f"""\
                import os, sys
                pod = ["-n", "monitoring", "exec", "deploy/node-cost-exporter", "--"]
                if sys.argv[1:6] != pod:
                    sys.exit(f"kubectl stand-in: not an exec in the exporter's pod: {{sys.argv[1:]}}")
                args = [a.replace({POD_CONFIG_DIR!r}, {str(config_dir)!r}) for a in sys.argv[6:]]
                os.execvp(args[0], args)
                """)
        )
        kubectl.chmod(0o755)
        work = tmp_path / "work"
        work.mkdir()
        path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ["PATH"]])
        env = {k: v for k, v in os.environ.items() if not k.startswith("NODECOST_")}
        env |= {"PATH": path, "FROM": FIRST.isoformat(), "TO": LAST.isoformat(), **credentials}
        yield work, env


def test_the_doc_commands_make_blocks_prometheus_answers_the_bill_from(
    pod: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    promtool()
    binary = prometheus_binary()
    work, env = pod
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", doc_commands()],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    wrote = re.search(r"wrote (\d+) samples; skipped (\d+) days not settled yet", done.stderr)
    assert wrote is not None, done.stderr
    samples = [line for line in (work / "backfill.om").read_text().splitlines() if line.startswith(METRIC)]
    assert int(wrote[1]) == len(samples) > 0
    metas = [json.loads(meta.read_text()) for meta in (work / "blocks").glob("*/meta.json")]
    assert metas, "promtool made no block"
    assert sum(meta["stats"]["numSamples"] for meta in metas) == len(samples)

    data = tmp_path / "prometheus-data"
    data.mkdir()
    for block in (work / "blocks").iterdir():
        shutil.move(block, data / block.name)
    port = free_port()
    (tmp_path / "prometheus.yml").write_text("global: {}\n")
    prometheus = Process(
        "prometheus",
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            prometheus.check_alive()
            return get(f"{url}/-/ready").startswith(b"Prometheus Server is Ready")

        wait_for("Prometheus ready", ready)
        day = date(2024, 5, 31)
        at = datetime(2024, 5, 31, 23, 59, 59, tzinfo=UTC).timestamp()  # the day's 24 samples, no other
        for node in (ON_DEMAND, RESERVED):
            expr = f'sum_over_time({METRIC}{{node="{node.name}"}}[1d])'
            query = urllib.parse.urlencode({"query": expr, "time": f"{at:.0f}"})
            answer = json.loads(get(f"{url}/api/v1/query?{query}"))
            (series,) = answer["data"]["result"]
            assert series["metric"]["source"] == "aws_cur"
            billed, _ = truth(node.ref.instance_id, "amortized", [day])
            assert float(series["value"][1]) == pytest.approx(billed, rel=0.005), node.name
    finally:
        prometheus.stop()
