"""protocol/envelope.py (the node's command check, compact tables) decides exactly as the
table-of-validators form of protocol/schema.py would: same result, same reason, same detail.

The reference below is the COMMAND part of the schema written with protocol.schema's own
validator closures (the form every other message type uses). Hypothesis feeds both valid
commands, mutated ones and arbitrary maps.
"""

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import envelope
from protocol import schema as s
from protocol.errors import SchemaError

_ENVELOPE = {
    s.K_TYPE: s._uint,
    s.K_DEV: s._text(32),
    s.K_BOOT: s._u32,
    s.K_SEQ: s._u32,
    s.K_T: s._uint,
}
_BODY = {s.C_KIND: s._u32, s.C_ARGS: lambda v, w: None, s.C_REF: s._pair(s._u32, s._u32)}
_ARGS = {
    s.CMD_PROGRAM: s._struct(
        {
            s.A_PROGRAM_ID: s._u32,
            s.A_RATE: s._u32,
            s.A_VTBI: s._u32,
            s.A_DIAMETER: s._u32,
            s.A_DRUG: s._text(32),
        },
        (s.A_PROGRAM_ID, s.A_RATE, s.A_VTBI, s.A_DIAMETER),
    ),
    s.CMD_START: s._struct({s.A_PROGRAM_ID: s._u32}, (s.A_PROGRAM_ID,)),
    s.CMD_STOP: s._struct({s.A_REASON: s._text(64)}, ()),
    s.CMD_PERMIT: s._struct(
        {s.A_LIFETIME: s._u32, s.A_PROGRAM_ID: s._u32}, (s.A_LIFETIME, s.A_PROGRAM_ID)
    ),
    s.CMD_CONFIG: s._struct({s.A_WALLTIME: s._uint, s.A_PERIOD: s._u32}, ()),
}


def _int_key(k):
    return isinstance(k, int) and not isinstance(k, bool)


def reference(msg):
    """schema.validate(msg, COMMAND) in the table-of-closures form."""
    if not isinstance(msg, dict):
        raise SchemaError("schema.not_a_map", "payload must be a CBOR map")
    mtype = msg.get(s.K_TYPE)
    name = s.TYPE_NAMES.get(mtype) if _int_key(mtype) else None
    if name is None:
        raise SchemaError("schema.bad_type", "message type %r" % (mtype,))
    if mtype != s.COMMAND:
        raise SchemaError("schema.type_mismatch", "%s message where command expected" % name)
    for k in (s.K_TYPE, s.K_DEV, s.K_BOOT, s.K_SEQ, s.K_T):
        if k not in msg:
            raise SchemaError("schema.missing_key", "envelope key %d is required" % k)
    for k in (s.C_KIND, s.C_ARGS, s.C_REF):
        if k not in msg:
            raise SchemaError("schema.missing_key", "command: key %d is required" % k)
    for k in msg:
        f = (_ENVELOPE.get(k) or _BODY.get(k)) if _int_key(k) else None
        if f is None:
            raise SchemaError("schema.unknown_key", "command: key %r" % (k,))
        f(msg[k], "command." + str(k))
    check = _ARGS.get(msg.get(s.C_KIND))
    if check is None:
        raise SchemaError(
            "schema.bad_command", "command: unknown command kind %r" % (msg.get(s.C_KIND),)
        )
    check(msg[s.C_ARGS], "command.args")
    return msg


def _outcome(fn, msg):
    try:
        return ("ok", fn(msg) is msg)
    except SchemaError as e:
        return (e.reason, e.detail)


VALID_ARGS = {
    s.CMD_PROGRAM: {
        s.A_PROGRAM_ID: 4,
        s.A_RATE: 52500,
        s.A_VTBI: 35000,
        s.A_DIAMETER: 1485,
        s.A_DRUG: "ketamine",
    },
    s.CMD_START: {s.A_PROGRAM_ID: 4},
    s.CMD_STOP: {s.A_REASON: "interlock"},
    s.CMD_PERMIT: {s.A_LIFETIME: 5000, s.A_PROGRAM_ID: 4},
    s.CMD_CONFIG: {s.A_WALLTIME: 1795000000000, s.A_PERIOD: 1000},
}

scalars = st.one_of(
    st.integers(min_value=-2, max_value=70),
    st.sampled_from([2**32 - 1, 2**32, 2**64 - 1, 2**64, -(2**63)]),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, width=32),
    st.text(max_size=70),
    st.binary(max_size=4),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(scalars, st.integers(0, 13)), inner, max_size=3),
    ),
    max_leaves=6,
)
keys = st.one_of(st.integers(min_value=-1, max_value=14), st.booleans(), st.text(max_size=2))


@st.composite
def commands(draw):
    kind = draw(st.sampled_from(sorted(VALID_ARGS)))
    args = dict(VALID_ARGS[kind])
    msg = s.make_command("chair-01", 7, 12, 99, kind, args, 3, 17)
    for _ in range(draw(st.integers(0, 3))):
        target = args if draw(st.booleans()) else msg
        op = draw(st.sampled_from(["drop", "set", "add"]))
        if op == "drop" and target:
            target.pop(draw(st.sampled_from(list(target))), None)
        elif op == "set" and target:
            target[draw(st.sampled_from(list(target)))] = draw(values)
        else:
            target[draw(keys)] = draw(values)
    return msg


@settings(max_examples=1500, deadline=None)
@given(commands())
def test_mutated_commands_are_judged_like_the_table_form(msg):
    want = _outcome(reference, msg)
    assert _outcome(envelope.validate_command, msg) == want
    assert _outcome(lambda m: s.validate(m, s.COMMAND), msg) == want


@settings(max_examples=300, deadline=None)
@given(st.one_of(values, st.dictionaries(keys, values, max_size=8)))
def test_arbitrary_values_are_judged_like_the_table_form(msg):
    assert _outcome(envelope.validate_command, msg) == _outcome(reference, msg)


def test_every_valid_command_passes():
    for kind, args in VALID_ARGS.items():
        msg = s.make_command("chair-01", 7, 12, 99, kind, dict(args), 3, 17)
        assert envelope.validate_command(msg) is msg
        assert s.validate(msg) is msg and s.validate(msg, s.COMMAND) is msg
