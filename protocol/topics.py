"""The MQTT topic namespace, built and parsed in one place for the node and the gateway.

Layout (docs/protocol.md, "Topics"; MQTT 3.1.1 §4.7 topic rules)::

    ivgw/v1/node/{node}/up/{kind}      signed uplink, published by the node only
                                       kind: birth | telemetry | event | ack | death
    ivgw/v1/node/{node}/down/cmd       signed commands, published by the gateway only
    ivgw/v1/out/{site}/{chair}/state   normalized chair state for central systems (retained JSON)
    ivgw/v1/out/{site}/{chair}/event   normalized event stream (JSON)
    ivgw/v1/out/gateway/status         gateway online/offline (retained, also its Last Will)

The node id is the first thing a broker ACL keys on (``%c``/``%u``), so it is one topic
level and may contain only ``[A-Za-z0-9_-]``: no wildcard, separator or ``$`` can sneak in.
"""

from protocol import const
from protocol.errors import TopicError

PREFIX = "ivgw/v1"
_MAX_ID = const(32)

UP_KINDS = ("birth", "telemetry", "event", "ack", "death")

# What a parsed topic is.
UPLINK = "uplink"
DOWNLINK = "downlink"


def _valid_id(name):
    if not name or len(name) > _MAX_ID:
        return False
    for ch in name:
        o = ord(ch)
        if not (48 <= o <= 57 or 65 <= o <= 90 or 97 <= o <= 122 or ch == "-" or ch == "_"):
            return False
    return True


def check_id(name, what="node id"):
    """Return ``name`` if it is a valid id level, else raise TopicError."""
    if not isinstance(name, str) or not _valid_id(name):
        raise TopicError("topic.bad_id", "%s %r: use 1-32 of A-Z a-z 0-9 - _" % (what, name))
    return name


def uplink(node, kind):
    if kind not in UP_KINDS:
        raise TopicError("topic.bad_kind", "uplink kind %r" % (kind,))
    return PREFIX + "/node/" + check_id(node) + "/up/" + kind


def downlink(node):
    return PREFIX + "/node/" + check_id(node) + "/down/cmd"


def uplink_filter(node="+"):
    """Subscription filter for uplinks of one node, or of all nodes by default."""
    return PREFIX + "/node/" + (node if node == "+" else check_id(node)) + "/up/+"


def chair_state(site, chair):
    return PREFIX + "/out/" + check_id(site, "site") + "/" + check_id(chair, "chair") + "/state"


def chair_event(site, chair):
    return PREFIX + "/out/" + check_id(site, "site") + "/" + check_id(chair, "chair") + "/event"


GATEWAY_STATUS = PREFIX + "/out/gateway/status"


def parse(topic):
    """Split a node topic into (UPLINK|DOWNLINK, node, kind); raise TopicError otherwise.

    Only node topics are parsed: they are what arrives signed and must be attributed to a
    node. The node id in the topic is later checked against the packet's key id.
    """
    parts = topic.split("/")
    if len(parts) < 6 or parts[0] != "ivgw" or parts[1] != "v1" or parts[2] != "node":
        raise TopicError("topic.unknown", topic[:80])
    node = parts[3]
    if not _valid_id(node):
        raise TopicError("topic.bad_id", topic[:80])
    if len(parts) == 6 and parts[4] == "up" and parts[5] in UP_KINDS:
        return UPLINK, node, parts[5]
    if len(parts) == 6 and parts[4] == "down" and parts[5] == "cmd":
        return DOWNLINK, node, "cmd"
    raise TopicError("topic.unknown", topic[:80])
