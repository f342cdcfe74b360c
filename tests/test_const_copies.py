"""The node's private copies of wire numbers equal the public definitions.

protocol/envelope.py, firmware/node.py, firmware/commands.py, firmware/boot.py and firmware/mqtt/client.py
repeat numbers of protocol/schema.py and firmware/mqtt/codec.py as ``_NAME = const(n)``, so
MicroPython folds them into the bytecode: the node then never imports protocol.schema, and
the client holds no global per imported name, each of which would cost heap
(docs/firmware.md, "Footprint"). These tests keep the copies in step with the one public
definition. The sources are parsed rather than imported: the MQTT client needs MicroPython.
"""

import ast
from pathlib import Path

import pytest

from firmware.mqtt import codec
from protocol import envelope, mdc, schema, topics

ROOT = Path(__file__).resolve().parent.parent
COPIES = {
    "protocol/envelope.py": schema,
    "firmware/node.py": schema,
    "firmware/commands.py": schema,
    "firmware/mqtt/client.py": codec,
    "firmware/boot.py": schema,
}
# Copies checked per file at least (a parse that finds fewer means the check is broken);
# boot.py repeats a single number (DEATH, for the Last Will it signs).
MIN_CHECKED = {"firmware/boot.py": 1}


def _private_consts(path):
    """{NAME: value} for every module-level ``_NAME = const(<int>)`` of a source file."""
    out = {}
    for node in ast.parse((ROOT / path).read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id.startswith("_")
            and isinstance(node.value, ast.Call)
            and getattr(node.value.func, "id", "") == "const"
        ):
            out[node.targets[0].id[1:]] = ast.literal_eval(node.value.args[0])
    return out


@pytest.mark.parametrize("path", sorted(COPIES))
def test_private_consts_equal_the_public_names(path):
    public = COPIES[path]
    checked = 0
    for name, value in _private_consts(path).items():
        if hasattr(public, name):
            assert value == getattr(public, name), "%s: _%s" % (path, name)
            checked += 1
    assert checked >= MIN_CHECKED.get(path, 3)


def test_node_tables_equal_the_public_ones():
    from firmware import node

    assert node._UNITS == mdc.UNITS
    assert {i: n for i, n in enumerate(node._CMD_NAMES) if n} == schema.CMD_NAMES
    for name, state in node._PUMP_STATES.items():
        assert schema.PUMP_STATE_NAMES[state] == name
    assert node.KINDS == topics.UP_KINDS
    assert envelope.TYPE_NAMES == {
        schema.BIRTH: "birth",
        schema.TELEMETRY: "telemetry",
        schema.EVENT: "event",
        schema.COMMAND: "command",
        schema.ACK: "ack",
        schema.DEATH: "death",
    }


def test_ed25519_setup_uses_the_same_comb_geometry():
    setup = _private_consts("protocol/_ed25519_setup.py")
    main = _private_consts("protocol/ed25519.py")
    assert setup and all(main[name] == value for name, value in setup.items())
