"""Node metric families one at a time: a node and its price in, the family's samples and lines out."""

from decimal import Decimal

from exporter.metrics import families
from exporter.metrics.families import MAX_LABEL_VALUE, NODE_FAMILIES, Family, billing_tags_family
from exporter.pricing.quote import Basis, BillFacts, NodePrice
from tests.conftest import node

FAMILIES = {family.name: family for family in NODE_FAMILIES}
NODE = node()
SPOT = NodePrice(
    Decimal("0.0712"),
    "USD",
    "aws_spot",
    Basis.SPOT,
    None,
    None,
    None,
    list_hourly=Decimal("0.192"),
    list_source="aws_pricing",
)
BILLED = NodePrice(
    Decimal("0.1304"),
    "EUR",
    "aws_cur",
    Basis.BILLED,
    None,
    None,
    None,
    billed=BillFacts(
        "aws_cur",
        0.1304,
        0.0,
        48.0,
        ("2024-06-01", "2024-06-02"),
        (3.1296, 3.0),
        0.0021,
        (("team", "ml platform"), ("cost-center", "4711")),
    ),
)


def test_hourly_cost_names_source_and_basis_and_is_absent_for_an_unpriced_node() -> None:
    hourly = FAMILIES["nodecost_node_hourly_cost"]
    assert hourly.samples(NODE, SPOT) == (
        (("ip-10-0-12-87.ec2.internal", "aws_spot", "spot", "USD"), Decimal("0.0712")),
    )
    assert hourly.render(NODE, SPOT) == (
        b'nodecost_node_hourly_cost{node="ip-10-0-12-87.ec2.internal",source="aws_spot",'
        b'price_basis="spot",currency="USD"} 0.0712\n'
    )
    assert hourly.render(NODE, None) == b""


def test_list_price_is_labelled_with_the_source_that_listed_it_not_the_one_that_priced_the_node() -> None:
    assert FAMILIES["nodecost_node_list_hourly_cost"].render(NODE, SPOT) == (
        b'nodecost_node_list_hourly_cost{node="ip-10-0-12-87.ec2.internal",source="aws_pricing",'
        b'currency="USD"} 0.192\n'
    )
    assert FAMILIES["nodecost_node_list_hourly_cost"].render(NODE, BILLED) == b""


def test_billed_daily_cost_has_one_line_per_complete_day_in_order() -> None:
    assert FAMILIES["nodecost_node_billed_daily_cost"].render(NODE, BILLED) == (
        b'nodecost_node_billed_daily_cost{node="ip-10-0-12-87.ec2.internal",day="2024-06-01",'
        b'source="aws_cur",currency="EUR"} 3.1296\n'
        b'nodecost_node_billed_daily_cost{node="ip-10-0-12-87.ec2.internal",day="2024-06-02",'
        b'source="aws_cur",currency="EUR"} 3.0\n'
    )
    assert FAMILIES["nodecost_node_billed_daily_cost"].render(NODE, SPOT) == b""


def test_unpriced_is_the_exact_complement_of_hourly_cost() -> None:
    unpriced, hourly = FAMILIES["nodecost_node_unpriced"], FAMILIES["nodecost_node_hourly_cost"]
    for price in (SPOT, BILLED, None):
        assert bool(unpriced.samples(NODE, price)) != bool(hourly.samples(NODE, price))


def test_billing_tags_come_from_the_bill_a_node_label_of_the_same_key_wins() -> None:
    tags = billing_tags_family(("team", "cost-center", "env"))
    assert tags.labels == ("node", "tag_team", "tag_cost_center", "tag_env")
    labelled = node(labels={"team": "payments"})
    assert tags.render(labelled, BILLED) == (
        b'nodecost_node_billing_tags_info{node="ip-10-0-12-87.ec2.internal",tag_team="payments",'
        b'tag_cost_center="4711",tag_env=""} 1.0\n'
    )
    assert tags.render(NODE, BILLED).startswith(
        b'nodecost_node_billing_tags_info{node="ip-10-0-12-87.ec2.internal",tag_team="ml platform",'
    )
    assert tags.render(NODE, SPOT) == b"", "no line for a node without any of the tags"


def test_a_new_family_is_one_entry_and_its_values_are_escaped() -> None:
    zone = Family(
        "nodecost_test_zone", "gauge", "Test.", ("node", "zone"), lambda n, p: (((n.name, n.zone), 2.5),)
    )
    assert zone.render(node('we"ird\\node', zone="a\nb"), None) == (
        b'nodecost_test_zone{node="we\\"ird\\\\node",zone="a\\nb"} 2.5\n'
    )
    assert (
        zone.header(openmetrics=True) == b"# HELP nodecost_test_zone Test.\n# TYPE nodecost_test_zone gauge\n"
    )


def test_only_a_value_over_the_limit_is_cut_however_long_the_line() -> None:
    """Values are checked for escaping all at once; the cut must still apply to each value alone."""
    pair = Family("nodecost_test_pair", "gauge", "Test.", ("a", "b"), lambda n, p: (((n.name, n.zone), 1.0),))
    under, over = "a" * 400, "b" * 600  # together over MAX_LABEL_VALUE; only `over` is beyond it
    assert (
        pair.render(node(under, zone=under), None)
        == f'nodecost_test_pair{{a="{under}",b="{under}"}} 1.0\n'.encode()
    )
    assert pair.render(node(under, zone=over), None) == (
        f'nodecost_test_pair{{a="{under}",b="{"b" * MAX_LABEL_VALUE}"}} 1.0\n'.encode()
    )


def test_a_price_is_written_as_the_float_nearest_it_and_zero_keeps_its_sign() -> None:
    zone = Family("nodecost_test_value", "gauge", "Test.", ("node",), lambda n, p: (((n.name,), p),))
    for value in ("0.1", "0.10", "1E-1", "0.0236712328767123287671232876", "-0", "0", "3"):
        for _ in range(2):  # the second time from what was remembered
            line = zone.render(node("n"), Decimal(value))
            assert line == f'nodecost_test_value{{node="n"}} {float(Decimal(value))!r}\n'.encode()
    assert zone.render(node("n"), 2.5) == b'nodecost_test_value{node="n"} 2.5\n'


def test_remembered_value_texts_stay_bounded() -> None:
    zone = Family("nodecost_test_value", "gauge", "Test.", ("node",), lambda n, p: (((n.name,), p),))
    for i in range(3 * families._MAX_REMEMBERED):
        value = Decimal(i) / 7
        assert zone.render(node("n"), value) == f'nodecost_test_value{{node="n"}} {float(value)!r}\n'.encode()
    assert 0 < len(families._TEXT_OF) <= families._MAX_REMEMBERED


def test_a_lone_surrogate_in_any_label_value_is_replaced_so_the_line_is_utf8() -> None:
    price = NodePrice(Decimal("0.1"), "USD", "custom\udc80", Basis.CUSTOM, None, None, None)
    line = FAMILIES["nodecost_node_hourly_cost"].render(node(), price)
    assert 'source="custom\ufffd"'.encode() in line
