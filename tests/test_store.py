import gzip
import random
import zlib
from decimal import Decimal

import pytest

from exporter.inventory.node import CapacityType, ProviderRef
from exporter.metrics.store import BLOCK_NODES, NodeMetricsStore, _crc32_combine
from exporter.pricing.quote import Basis, NodePrice
from tests.conftest import node, node_text

PRICED = node()
GPU = node(
    "gke-ml-gpu-pool-1c2d3e4f-abcd",
    uid="uid-gpu",
    provider_id="gce://acme-ml/us-central1-a/gke-ml-gpu-pool-1c2d3e4f-abcd",
    ref=ProviderRef("gcp", "acme-ml", "us-central1-a", "gke-ml-gpu-pool-1c2d3e4f-abcd"),
    instance_type="n1-standard-8",
    region="us-central1",
    zone="us-central1-a",
    capacity_type=CapacityType.SPOT,
    cpu_cores=8.0,
    memory_bytes=30 * 2**30,
    gpu_count=1,
    gpu_model="nvidia-tesla-t4",
)
ONPREM = node(
    "rack3-worker-07",
    uid="uid-rack",
    provider_id="",
    ref=ProviderRef(""),
    instance_type="",
    region="",
    zone="",
)
PRICE = NodePrice(
    Decimal("0.192"), "USD", "offline", Basis.ON_DEMAND, Decimal("0.0313"), Decimal("0.0042"), None,
    list_hourly=Decimal("0.192"), list_source="offline",
)
GPU_PRICE = NodePrice(
    Decimal("0.1247"),
    "USD",
    "gcp_catalog",
    Basis.SPOT,
    Decimal("0.0067"),
    Decimal("0.0009"),
    Decimal("0.0745"),
)

GOLDEN_TEXT = """\
# HELP nodecost_node_info Node facts used for pricing; value is always 1.
# TYPE nodecost_node_info gauge
nodecost_node_info{node="ip-10-0-12-87.ec2.internal",provider="aws",instance_type="m5.xlarge",capacity_type="on_demand",topology_region="us-east-1",topology_zone="us-east-1a",provider_id="aws:///us-east-1a/i-0fea4fd46592d050b",os="linux",arch="amd64",gpu_model=""} 1.0
nodecost_node_info{node="gke-ml-gpu-pool-1c2d3e4f-abcd",provider="gcp",instance_type="n1-standard-8",capacity_type="spot",topology_region="us-central1",topology_zone="us-central1-a",provider_id="gce://acme-ml/us-central1-a/gke-ml-gpu-pool-1c2d3e4f-abcd",os="linux",arch="amd64",gpu_model="nvidia-tesla-t4"} 1.0
nodecost_node_info{node="rack3-worker-07",provider="",instance_type="",capacity_type="on_demand",topology_region="",topology_zone="",provider_id="",os="linux",arch="amd64",gpu_model=""} 1.0
# HELP nodecost_node_hourly_cost Hourly cost of the node in the currency label, after any configured discount.
# TYPE nodecost_node_hourly_cost gauge
nodecost_node_hourly_cost{node="ip-10-0-12-87.ec2.internal",source="offline",price_basis="on_demand",currency="USD"} 0.192
nodecost_node_hourly_cost{node="gke-ml-gpu-pool-1c2d3e4f-abcd",source="gcp_catalog",price_basis="spot",currency="USD"} 0.1247
# HELP nodecost_node_list_hourly_cost On-demand list price of the node's type per hour, before discount; what spot or billed prices save on.
# TYPE nodecost_node_list_hourly_cost gauge
nodecost_node_list_hourly_cost{node="ip-10-0-12-87.ec2.internal",source="offline",currency="USD"} 0.192
# HELP nodecost_node_cpu_core_hourly_cost Hourly cost of one CPU core of the node.
# TYPE nodecost_node_cpu_core_hourly_cost gauge
nodecost_node_cpu_core_hourly_cost{node="ip-10-0-12-87.ec2.internal",source="offline",currency="USD"} 0.0313
nodecost_node_cpu_core_hourly_cost{node="gke-ml-gpu-pool-1c2d3e4f-abcd",source="gcp_catalog",currency="USD"} 0.0067
# HELP nodecost_node_memory_gibibyte_hourly_cost Hourly cost of one GiB of the node's memory.
# TYPE nodecost_node_memory_gibibyte_hourly_cost gauge
nodecost_node_memory_gibibyte_hourly_cost{node="ip-10-0-12-87.ec2.internal",source="offline",currency="USD"} 0.0042
nodecost_node_memory_gibibyte_hourly_cost{node="gke-ml-gpu-pool-1c2d3e4f-abcd",source="gcp_catalog",currency="USD"} 0.0009
# HELP nodecost_node_gpu_hourly_cost Hourly cost of one GPU of the node (GPU nodes only).
# TYPE nodecost_node_gpu_hourly_cost gauge
nodecost_node_gpu_hourly_cost{node="gke-ml-gpu-pool-1c2d3e4f-abcd",source="gcp_catalog",currency="USD"} 0.0745
# HELP nodecost_node_unpriced 1 for a node no price source could price (no cost series for it).
# TYPE nodecost_node_unpriced gauge
nodecost_node_unpriced{node="rack3-worker-07",reason="no_provider_id"} 1.0
# HELP nodecost_node_billed_daily_cost Billed cost of the node on each complete UTC day its billed rate averages: final, reconciled figures.
# TYPE nodecost_node_billed_daily_cost gauge
# HELP nodecost_node_network_hourly_cost Network (data transfer) cost the bill attributes to the node, per billed hour.
# TYPE nodecost_node_network_hourly_cost gauge
# HELP nodecost_node_commitment_coverage_ratio Share (0-1) of the node's billed usage over its billed days that a commitment covered: a reserved instance, savings plan, committed use discount or reservation.
# TYPE nodecost_node_commitment_coverage_ratio gauge
"""


def filled() -> NodeMetricsStore:
    store = NodeMetricsStore()
    store.set(PRICED, PRICE)
    store.set(GPU, GPU_PRICE)
    store.set(ONPREM, None, "no_provider_id")
    return store


def test_golden_text_exposition() -> None:
    assert node_text(filled(), openmetrics=False) == GOLDEN_TEXT


def test_openmetrics_differs_only_in_the_info_family_header() -> None:
    expected = GOLDEN_TEXT.replace(
        "# HELP nodecost_node_info Node facts used for pricing; value is always 1.\n# TYPE nodecost_node_info gauge\n",
        "# HELP nodecost_node Node facts used for pricing; value is always 1.\n# TYPE nodecost_node info\n",
    )
    assert node_text(filled(), openmetrics=True) == expected


def test_gzip_body_is_one_stream_of_the_plain_body_and_the_tail() -> None:
    store = filled()
    tail = b"# HELP nodecost_ready x\n# TYPE nodecost_ready gauge\nnodecost_ready 1.0\n"
    for _ in range(2):  # the second scrape reuses the cached compressed prefix
        body = b"".join(store.gzip_body(openmetrics=False, tail=tail))
        single = zlib.decompressobj(31)  # what curl and browsers do: one gzip member only
        assert single.decompress(body) == GOLDEN_TEXT.encode() + tail
        assert single.eof and single.unused_data == b""
    assert gzip.decompress(b"".join(store.gzip_body(openmetrics=True, tail=b"# EOF\n"))).endswith(b"# EOF\n")


def test_unchanged_body_is_reused_and_a_change_rebuilds_it() -> None:
    store = filled()
    first = store.body(openmetrics=False)
    store.set(PRICED, PRICE)  # same node, same price: nothing to re-render
    assert store.body(openmetrics=False) is first
    store.set(PRICED, NodePrice(Decimal("0.17"), "USD", "custom", Basis.CUSTOM, None, None, None))
    body = node_text(store, openmetrics=False)
    assert (
        'nodecost_node_hourly_cost{node="ip-10-0-12-87.ec2.internal",source="custom",price_basis="custom",currency="USD"} 0.17'
        in body
    )
    assert 'node="ip-10-0-12-87.ec2.internal",source="offline"' not in body
    assert store.source_counts() == {"custom": 1, "gcp_catalog": 1, "unpriced": 1}


def test_delete_and_retain_drop_every_line_of_the_node() -> None:
    store = filled()
    store.delete(GPU.uid)
    store.delete("no-such-uid")
    assert "gke-ml-gpu-pool" not in node_text(store, openmetrics=False)
    store.retain({ONPREM.uid})
    body = node_text(store, openmetrics=False)
    assert "ip-10-0-12-87" not in body and "rack3-worker-07" in body
    assert len(store) == 1 and store.source_counts() == {"unpriced": 1}


def test_label_values_are_escaped_and_garbage_is_cut() -> None:
    weird = node('we"ird\\node', uid="w", instance_type="x" * 10_000, labels={"k": "v" * 10_000})
    store = NodeMetricsStore()
    store.set(weird, None)
    body = node_text(store, openmetrics=False)
    assert 'node="we\\"ird\\\\node"' in body
    assert f'instance_type="{"x" * 512}"' in body
    assert "x" * 513 not in body


def test_gzip_tail_of_any_size_keeps_one_valid_stream() -> None:
    store = filled()
    for size in (0, 1, 65_535, 65_536, 200_000):
        tail = bytes(i % 251 for i in range(size))
        body = b"".join(store.gzip_body(openmetrics=False, tail=tail))
        single = zlib.decompressobj(31)
        assert single.decompress(body) == GOLDEN_TEXT.encode() + tail, size
        assert single.eof and single.unused_data == b""
        assert gzip.decompress(body) == GOLDEN_TEXT.encode() + tail  # CRC and length checked


def _price(cents: int) -> NodePrice:
    return NodePrice(Decimal(cents) / 100, "USD", "offline", Basis.ON_DEMAND, None, None, None)


def _fresh(nodes: dict[str, tuple[str, int]]) -> NodeMetricsStore:
    """A store filled at once, in the same order: what an incrementally kept one must serve."""
    store = NodeMetricsStore()
    for uid, (name, cents) in nodes.items():
        store.set(node(name, uid=uid), _price(cents))
    return store


def test_blocks_kept_through_changes_deletions_and_arrivals_serve_what_a_fresh_store_does() -> None:
    rng = random.Random(14)
    store, nodes = NodeMetricsStore(), {}  # uid → (name, price in cents), in arrival order
    for k in range(3 * BLOCK_NODES + 100):
        nodes[f"u{k}"] = (f"node-{k}", 10 + k % 7)
        store.set(node(f"node-{k}", uid=f"u{k}"), _price(10 + k % 7))
    tail = b"nodecost_ready 1.0\n"
    for round_ in range(6):
        for uid in rng.sample(sorted(nodes), 40):  # price changes anywhere
            name, _ = nodes[uid]
            nodes[uid] = (name, rng.randrange(1, 500))
            store.set(node(name, uid=uid), _price(nodes[uid][1]))
        for uid in rng.sample(sorted(nodes), 30 if round_ < 4 else 600):  # deletions, then most of a block
            del nodes[uid]
            store.delete(uid)
        for k in range(20):  # arrivals
            uid = f"r{round_}-{k}"
            nodes[uid] = (f"new-{round_}-{k}", 99)
            store.set(node(nodes[uid][0], uid=uid), _price(99))
        expected = _fresh(nodes)
        for openmetrics in (False, True):
            plain = b"".join(store.body(openmetrics=openmetrics))
            assert plain == b"".join(expected.body(openmetrics=openmetrics)), round_
            body = b"".join(store.gzip_body(openmetrics=openmetrics, tail=tail))
            assert gzip.decompress(body) == plain + tail, round_  # one valid stream, CRC and length checked
    assert len(store) == len(nodes)


def test_a_change_rebuilds_only_its_block() -> None:
    store = NodeMetricsStore()
    for k in range(2 * BLOCK_NODES):
        store.set(node(f"node-{k}", uid=f"u{k}"), _price(10))
    before = store.body(openmetrics=False)
    store.set(node("node-0", uid="u0"), _price(11))  # in the first block
    after = store.body(openmetrics=False)
    assert after is not before and len(after) == len(before)
    lines = [i for i, chunk in enumerate(after) if not chunk.startswith(b"# HELP")]
    first_block = [i for i in lines if b'node="node-0"' in after[i]]
    assert first_block and all(b'node="node-600"' not in after[i] for i in first_block)
    assert [i for i in lines if after[i] is not before[i]] == first_block  # the second block's were kept


@pytest.mark.parametrize("sizes", [(0, 10), (5, 0), (1000, 70_000), (3, 3 * 2**20 + 17)])
def test_crc32_combine_equals_the_crc_of_the_joined_text(sizes: tuple[int, int]) -> None:
    first, second = (random.Random(n).randbytes(n) for n in sizes)
    assert _crc32_combine(zlib.crc32(first), zlib.crc32(second), len(second)) == zlib.crc32(first + second)
