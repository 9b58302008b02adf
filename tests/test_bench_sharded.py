"""The sharded benchmark (bench/sharded.py, report §10): its union check, and a small run end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import sharded_section, sharded_summary_rows
from bench.sharded import check_union, info_nodes, run_sharded

# Two replicas' bodies as the exporter renders them (families in order, `node` the first label), trimmed to
# the node families. `ip-10-0-0-2` is in both, `ip-10-0-0-4` in neither, `ip-10-0-0-9` is not in the API.
REPLICA_A = b"""# HELP nodecost_node_info Node facts used for pricing; value is always 1.
# TYPE nodecost_node_info gauge
nodecost_node_info{node="ip-10-0-0-1.ec2.internal",provider="aws",instance_type="m5.large",capacity_type="on_demand",topology_region="us-east-1",topology_zone="us-east-1a",provider_id="aws:///us-east-1a/i-0a1b2c3d4e5f60718",os="linux",arch="amd64",gpu_model=""} 1
nodecost_node_info{node="ip-10-0-0-2.ec2.internal",provider="aws",instance_type="m5.large",capacity_type="spot",topology_region="us-east-1",topology_zone="us-east-1b",provider_id="aws:///us-east-1b/i-0a1b2c3d4e5f60719",os="linux",arch="amd64",gpu_model=""} 1
# HELP nodecost_node_hourly_cost Hourly cost of the node in the currency label, after any configured discount.
# TYPE nodecost_node_hourly_cost gauge
nodecost_node_hourly_cost{node="ip-10-0-0-4.ec2.internal",source="offline",price_basis="on_demand",currency="USD"} 0.096
"""
REPLICA_B = b"""# HELP nodecost_node_info Node facts used for pricing; value is always 1.
# TYPE nodecost_node_info gauge
nodecost_node_info{node="ip-10-0-0-2.ec2.internal",provider="aws",instance_type="m5.large",capacity_type="spot",topology_region="us-east-1",topology_zone="us-east-1b",provider_id="aws:///us-east-1b/i-0a1b2c3d4e5f60719",os="linux",arch="amd64",gpu_model=""} 1
nodecost_node_info{node="ip-10-0-0-3.ec2.internal",provider="aws",instance_type="m5.xlarge",capacity_type="on_demand",topology_region="us-east-1",topology_zone="us-east-1c",provider_id="aws:///us-east-1c/i-0a1b2c3d4e5f6071a",os="linux",arch="amd64",gpu_model=""} 1
nodecost_node_info{node="ip-10-0-0-9.ec2.internal",provider="aws",instance_type="m5.xlarge",capacity_type="on_demand",topology_region="us-east-1",topology_zone="us-east-1c",provider_id="aws:///us-east-1c/i-0a1b2c3d4e5f6071b",os="linux",arch="amd64",gpu_model=""} 1
nodecost_exporter_info{version="0.1.0",shard="1",total_shards="2"} 1
"""
API_NODES = [f"ip-10-0-0-{i}.ec2.internal" for i in (1, 2, 3, 4)]


def test_info_nodes_reads_the_node_label_of_info_samples_only() -> None:
    assert list(info_nodes(REPLICA_A)) == ["ip-10-0-0-1.ec2.internal", "ip-10-0-0-2.ec2.internal"]
    # Wherever the label stands; a value that merely contains node= is no label.
    assert list(info_nodes(b'nodecost_node_info{provider_id="x,node=y",node="b"} 1\n')) == ["b"]


def test_the_union_check_reports_a_duplicate_a_missing_and_an_unknown_node() -> None:
    union = check_union([REPLICA_A, REPLICA_B], API_NODES)
    assert union.expected == 4 and union.samples == 5
    assert union.duplicates == ["ip-10-0-0-2.ec2.internal"]
    assert union.missing == ["ip-10-0-0-4.ec2.internal"]  # its hourly cost sample does not count
    assert union.unexpected == ["ip-10-0-0-9.ec2.internal"]
    assert not union.exact


def test_the_union_check_passes_a_partition() -> None:
    union = check_union([REPLICA_A, REPLICA_B], [*API_NODES[:3], "ip-10-0-0-9.ec2.internal"])
    assert union.duplicates == ["ip-10-0-0-2.ec2.internal"] and not union.exact
    b_without_the_duplicate = b"\n".join(line for line in REPLICA_B.splitlines() if b"0-0-2." not in line)
    union = check_union(iter([REPLICA_A, b_without_the_duplicate]), [*API_NODES[:3], "ip-10-0-0-9.ec2.internal"])
    assert union.exact and union.samples == union.expected == 4


@pytest.mark.slow
def test_run_sharded_partitions_the_cluster_and_a_restart_loses_no_node(tmp_path: Path) -> None:
    result = run_sharded(3000, 3, workdir=tmp_path)

    assert [r.shard for r in result.replicas] == [0, 1, 2]
    assert sum(r.start.info_lines for r in result.replicas) == 3000
    assert all(0 < r.start.info_lines < 3000 and r.start.lists == 1 for r in result.all_replicas)
    assert all(set(r.scrapes) == {"ours plain", "static plain", "ours gzip", "static gzip"} for r in result.replicas)
    assert all(r.peak >= r.memory["ready"][1] > 0 and r.cpu > 0 for r in result.all_replicas)
    assert result.union.exact and result.union.samples == result.union.expected == 3000

    restart = result.restart
    assert restart.replica.shard == 1
    assert restart.added != restart.deleted
    assert restart.union.exact and restart.union.expected == 3000  # one node added, one deleted
    # The restarted replica lists its shard anew: one node more and one less than before, the same count.
    assert restart.replica.start.info_lines == result.replicas[1].start.info_lines

    section = sharded_section(result)
    assert section.startswith("## 10. Sharded: 3,000 nodes over 3 replicas\n")
    assert "| shard 1, restarted | " in section
    assert f"`{restart.added}`" in section and f"`{restart.deleted}`" in section
    rows = {name: cell for name, _, cell in sharded_summary_rows(result)}
    assert rows["14. sharded: union of `nodecost_node_info` over the replicas"] == (
        "3,000 samples, 3,000 nodes: 0 duplicated, 0 missing, 0 not in the API PASS"
    )
    assert rows["14. sharded: that union after a replica's restart"].endswith(" PASS")
    assert all(cell.endswith(("PASS", "**MISS**")) for cell in rows.values())
