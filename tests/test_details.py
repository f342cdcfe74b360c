"""The detail catalog (protocol/details.py) and the modules that raise with its numbers.

cbor.py, cose.py and envelope.py raise with a detail number and arguments, formatted only
when read. A wrong number or argument count would surface only when the gateway audits a
rejection, far from the raise, so these tests check every call site statically, the texts
of representative rejections, and that the node's command gate never loads the catalog.
"""

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest

from gateway import firmware_build
from gateway.selfcheck import micropython_path
from protocol import cbor, cose, details, envelope
from protocol.errors import DecodeError, ProtocolError, SchemaError, SignatureError

ROOT = Path(__file__).resolve().parent.parent
RAISERS = ("protocol/cbor.py", "protocol/cose.py", "protocol/envelope.py")
_PLACEHOLDER = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[diouxXeEfFgGcrsa]")


def _detail_consts(tree):
    return {
        node.targets[0].id: node.value.args[0].value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.startswith("_D_")
    }


def _call_sites(path):
    """(detail number, arguments the template receives) for every raise with a number."""
    tree = ast.parse((ROOT / path).read_text())
    consts = _detail_consts(tree)
    sites = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        for i, arg in enumerate(node.args):
            if isinstance(arg, ast.Name) and arg.id in consts:
                given = len(node.args) - i - 1
                # cbor's _fail(reason, pos, detail, [arg]) appends the byte offset
                if path.endswith("cbor.py") and getattr(node.func, "id", "") == "_fail":
                    given += 1
                sites.append((arg.id, consts[arg.id], given))
    return consts, sites


@pytest.mark.parametrize("path", RAISERS)
def test_every_call_site_names_an_entry_with_its_argument_count(path):
    consts, sites = _call_sites(path)
    assert sites, path
    for name, number, given in sites:
        assert number in details.TEXT, "%s: %s = %d is not in the catalog" % (path, name, number)
        wanted = len(_PLACEHOLDER.findall(details.TEXT[number]))
        assert wanted == given, "%s: %s passes %d argument(s), %r takes %d" % (
            path, name, given, details.TEXT[number], wanted)
    tree = ast.parse((ROOT / path).read_text())
    used = {
        consts[n.id]
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id in consts
    }
    assert set(consts.values()) == used, "%s: detail numbers defined but never raised" % path


def test_every_entry_belongs_to_exactly_one_raising_module():
    owners = {}
    for path in RAISERS:
        for number in _detail_consts(ast.parse((ROOT / path).read_text())).values():
            assert number not in owners, "%d used by %s and %s" % (number, owners[number], path)
            owners[number] = path
    # cbor's default detail ("at byte %d") is used through _fail's default argument
    assert set(owners) == set(details.TEXT)


def test_text_never_raises():
    assert details.text(10, (7,)) == "at byte 7"
    assert details.text(10, ()) == "at byte %d ()"  # wrong count: shown, not raised
    assert details.text(9999, (1,)) == "detail 9999 (1,)"


@pytest.mark.parametrize(
    "data, reason, text",
    [
        (b"\x1c", "cbor.malformed", "initial byte 0x1c at byte 0"),
        (b"\x18\x05", "cbor.not_deterministic", "non-shortest head at byte 0"),
        (b"\x62a", "cbor.truncated", "string of 2 bytes at byte 1"),
        (b"\xa2\x02\x00\x01\x00", "cbor.not_deterministic", "map keys not in bytewise order at byte 3"),
        (b"\x00\x00", "cbor.trailing_bytes", "at byte 1"),
        (b"\xc1\x00", "cbor.tag_unsupported", "tag 1 at byte 0"),
        (b"\xf8\x10", "cbor.malformed", "two-byte simple value below 32 at byte 0"),
    ],
)
def test_cbor_details(data, reason, text):
    with pytest.raises(DecodeError) as ei:
        cbor.loads(data)
    assert (ei.value.reason, ei.value.detail) == (reason, text)
    assert str(ei.value) == reason + ": " + text


def test_cbor_encode_and_cose_details():
    with pytest.raises(cbor.EncodeError) as ei:
        cbor.dumps(1.5)
    assert str(ei.value) == "cbor.unencodable: unsupported type float"
    with pytest.raises(SignatureError) as ei:
        cose.decode("text")
    assert str(ei.value) == "cose.malformed: message must be bytes"
    with pytest.raises(SignatureError) as ei:
        cose.decode(bytes(3000))
    assert str(ei.value) == "cose.too_large: 3000 bytes > 2048"
    with pytest.raises(SignatureError) as ei:
        cose.verify(cbor.dumps(cbor.Tag(18, [b"", {}, b"p", b"s"])), lambda kid: None)
    assert ei.value.reason == "cose.no_alg" and ei.value.detail == "alg header missing"


def test_envelope_details():
    with pytest.raises(SchemaError) as ei:
        envelope.validate_command({0: 4, 1: "n", 2: 1, 3: 1, 4: 0, 10: 1, 11: [], 12: [1, 2]})
    assert str(ei.value) == "schema.bad_value: command.args: expected map"


def test_text_details_still_work():
    e = ProtocolError("topic.bad_id", "node 'x y'")
    assert (e.reason, e.detail, str(e)) == ("topic.bad_id", "node 'x y'", "topic.bad_id: node 'x y'")
    assert str(ProtocolError("x.y")) == "x.y"


_GATE = """
import sys
from firmware.commands import CommandGate, Rejected
from firmware.sentlog import SentLog
from protocol import cbor, cose
pub = cose.Ed25519Signer(bytes(range(32, 64))).public
gate = CommandGate("chair-01", cose.Ed25519Verifier(pub), b"gateway",
                   SentLog(32), 5000)
bad = [b"", b"\\x1c", bytes(3000), cbor.dumps(cbor.Tag(18, [b"", {}, b"p", b"s"])),
       cbor.dumps(cbor.Tag(18, [cbor.dumps({1: -8, 4: b"gateway"}), {}, b"p", bytes(64)]))]
reasons = []
for wire in bad:
    try:
        gate.check(wire, 1, 0)
    except Rejected as e:
        reasons.append(e.reason)
print(",".join(reasons))
print("details loaded:", "protocol.details" in sys.modules)
"""


@pytest.mark.skipif(not os.path.exists(micropython_path()), reason="needs micropython")
def test_the_node_rejects_commands_without_loading_the_catalog(tmp_path):
    build = firmware_build.build(tmp_path / "mpy")
    r = subprocess.run(
        [micropython_path(), "-c", _GATE],
        cwd=str(build),
        env=dict(os.environ, MICROPYPATH=".:.frozen"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split(",") == [
        "cose.malformed", "cose.malformed", "cose.too_large", "cose.no_alg", "cose.bad_signature"
    ], r.stdout
    assert lines[1] == "details loaded: False"
