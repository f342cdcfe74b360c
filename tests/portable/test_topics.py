"""Topic namespace: builders and the parser agree, and nothing outside it parses."""

from protocol import topics
from protocol.errors import TopicError
from tests.portable.harness import check_cases, raises


def test_uplink_roundtrip_for_every_kind():
    for kind in topics.UP_KINDS:
        t = topics.uplink("chair-01", kind)
        assert t == "ivgw/v1/node/chair-01/up/" + kind
        assert topics.parse(t) == (topics.UPLINK, "chair-01", kind)


def test_downlink_roundtrip():
    t = topics.downlink("n_7")
    assert t == "ivgw/v1/node/n_7/down/cmd"
    assert topics.parse(t) == (topics.DOWNLINK, "n_7", "cmd")


def test_outputs():
    assert topics.chair_state("north", "c3") == "ivgw/v1/out/north/c3/state"
    assert topics.chair_event("north", "c3") == "ivgw/v1/out/north/c3/event"
    assert topics.GATEWAY_STATUS == "ivgw/v1/out/gateway/status"
    assert topics.uplink_filter() == "ivgw/v1/node/+/up/+"


def test_bad_ids_rejected():
    bad = ["", "a/b", "+", "#", "a+b", "$SYS", "x" * 33, "sp ace", "é", None, 7]

    def run(name):
        e = raises(TopicError, topics.uplink, name, "telemetry")
        assert e.reason == "topic.bad_id"

    check_cases("topic bad ids", bad, run, repr)


def test_unknown_topics_rejected():
    bad = [
        "ivgw/v1/node/a/up/bogus",
        "ivgw/v1/node/a/up",
        "ivgw/v2/node/a/up/birth",
        "ivgw/v1/node/a/down/other",
        "ivgw/v1/node/a/up/birth/extra",
        "ivgw/v1/out/s/c/state",
        "ivgw/v1/node/a+/up/birth",
        "",
    ]

    def run(t):
        e = raises(TopicError, topics.parse, t)
        assert e.reason in ("topic.unknown", "topic.bad_id")

    check_cases("topic unknown", bad, run, repr)
