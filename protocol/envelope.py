"""The envelope and command checks: the part of the message schema that a node runs.

A node validates one kind of message, the gateway's commands, and builds the envelope of
the ones it sends. protocol/schema.py (the gateway's full schema, every message type)
validates commands with this module too, so both ends share one definition of a command.
protocol.schema documents the field meanings and keeps their public names.

Written for the node's heap (docs/firmware.md, "Footprint"): the tables are dictionaries of
small integers read by one checker, not a validator closure per field (protocol.schema's
form, about twice the heap). Keys and type numbers are private ``const()`` copies, which the
compiler folds into the bytecode; tests/test_const_copies.py checks that they equal
protocol.schema's public names, and tests/test_envelope.py that every result and error
(reason and detail) equals the table-driven form's.
"""

from protocol import const
from protocol.errors import SchemaError

_K_TYPE = const(0)
_K_DEV = const(1)
_K_BOOT = const(2)
_K_SEQ = const(3)
_K_T = const(4)
_COMMAND = const(4)
_C_KIND = const(10)
_C_ARGS = const(11)
_C_REF = const(12)

# Detail numbers in protocol/details.py (private copies, checked by tests/test_details.py).
_D_TEXT_LEN = const(60)
_D_PAIR = const(61)
_D_UNSIGNED = const(62)
_D_MAP = const(63)
_D_REQUIRED = const(64)
_D_UNKNOWN_KEY = const(65)
_D_NOT_A_MAP = const(66)
_D_TYPE = const(67)
_D_TYPE_MISMATCH = const(68)
_D_ENVELOPE_KEY = const(69)
_D_COMMAND_KIND = const(70)

_U32_MAX = const(0xFFFFFFFF)
_U64_MAX = const(0xFFFFFFFFFFFFFFFF)

# Field kinds in the tables below; a positive number n is "text of at most n characters".
_U64 = const(-1)  # unsigned integer < 2**64
_U32 = const(-2)  # unsigned integer < 2**32
_REF = const(-3)  # [u32, u32]
_ARGS = const(-4)  # the args map: checked last, against the command kind

TYPE_NAMES = {1: "birth", 2: "telemetry", 3: "event", 4: "command", 5: "ack", 6: "death"}

# key -> kind: the envelope (every message), then the COMMAND body (protocol/schema.py)
_FIELDS = {
    _K_TYPE: _U64,
    _K_DEV: 32,
    _K_BOOT: _U32,
    _K_SEQ: _U32,
    _K_T: _U64,
    _C_KIND: _U32,
    _C_ARGS: _ARGS,
    _C_REF: _REF,
}
# command kind -> ({arg key: kind}, required arg keys); see schema.CMD_* and schema.A_*
_COMMANDS = {
    1: ({1: _U32, 2: _U32, 3: _U32, 4: _U32, 5: 32}, (1, 2, 3, 4)),  # program
    2: ({1: _U32}, (1,)),  # start
    3: ({7: 64}, ()),  # stop
    4: ({6: _U32, 1: _U32}, (6, 1)),  # permit
    5: ({8: _U64, 9: _U32}, ()),  # config
}


def _fail(reason, detail, *args):
    raise SchemaError(reason, detail, *args)


def _key(k):
    """An integer map key (bool is an int on CPython, never a key here), or None."""
    return k if isinstance(k, int) and not isinstance(k, bool) else None


def _check(v, where, kind):
    if kind > 0:
        if not isinstance(v, str) or len(v) > kind:
            _fail("schema.bad_value", _D_TEXT_LEN, where, kind)
    elif kind == _REF:
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            _fail("schema.bad_value", _D_PAIR, where)
        _check(v[0], where + "[0]", _U32)
        _check(v[1], where + "[1]", _U32)
    elif kind != _ARGS:
        hi = _U32_MAX if kind == _U32 else _U64_MAX
        if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > hi:
            _fail("schema.bad_value", _D_UNSIGNED, where, hi)


def _map(v, where, fields, required):
    """A map of integer keys: the required ones present, each value of its field's kind."""
    if not isinstance(v, dict):
        _fail("schema.bad_value", _D_MAP, where)
    for k in required:
        if k not in v:
            _fail("schema.missing_key", _D_REQUIRED, where, k)
    for k in v:
        kind = fields.get(_key(k))
        if kind is None:
            _fail("schema.unknown_key", _D_UNKNOWN_KEY, where, k)
        _check(v[k], where + "." + str(k), kind)


def validate_command(msg):
    """``protocol.schema.validate(msg, COMMAND)``: return msg or raise SchemaError."""
    if not isinstance(msg, dict):
        _fail("schema.not_a_map", _D_NOT_A_MAP)
    mtype = msg.get(_K_TYPE)
    name = TYPE_NAMES.get(_key(mtype))
    if name is None:
        _fail("schema.bad_type", _D_TYPE, mtype)
    if mtype != _COMMAND:
        _fail("schema.type_mismatch", _D_TYPE_MISMATCH, name)
    for k in (_K_TYPE, _K_DEV, _K_BOOT, _K_SEQ, _K_T):
        if k not in msg:
            _fail("schema.missing_key", _D_ENVELOPE_KEY, k)
    _map(msg, "command", _FIELDS, (_C_KIND, _C_ARGS, _C_REF))
    args = _COMMANDS.get(msg[_C_KIND])
    if args is None:
        raise SchemaError("schema.bad_command", _D_COMMAND_KIND, msg[_C_KIND])
    _map(msg[_C_ARGS], "command.args", args[0], args[1])
    return msg


def envelope(mtype, dev, boot, seq, t):
    return {_K_TYPE: mtype, _K_DEV: dev, _K_BOOT: boot, _K_SEQ: seq, _K_T: t}
