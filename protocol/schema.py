"""Message schema: the integer-keyed CBOR maps carried as COSE_Sign1 payloads.

Every message is one CBOR map. Keys 0-4 are the envelope, common to all types; keys from
10 up are the body of that type. Integer keys keep packets small (docs/protocol.md has the
size budget) and the table below is the single definition both sides use: the node builds
messages with the ``make_*`` helpers, the gateway validates with :func:`validate`.

Envelope (all messages)::

    0  type   uint   BIRTH=1 TELEMETRY=2 EVENT=3 COMMAND=4 ACK=5 DEATH=6
    1  dev    text   sender node id; for a COMMAND the *target* node id
    2  boot   uint   sender's persisted boot counter (the gateway's epoch for commands)
    3  seq    uint   per-boot sequence number, strictly increasing from 0
    4  t      uint   sender's uptime in ms when the message was made (no wall clock needed)

Numbers are integers only (the CBOR subset has no floats): measured values travel as a
decimal mantissa and exponent, volumes in microlitres, rates in microlitres per hour.
Unknown keys are rejected (``schema.unknown_key``): a new field means a new topic version.

Commands are checked by protocol/envelope.py, the part of the schema a node runs (the
command tables are there, and ``TYPE_NAMES`` and ``envelope``); this module adds the
types the gateway receives.
"""

from protocol import const, mdc
from protocol.envelope import TYPE_NAMES as TYPE_NAMES  # re-exported
from protocol.envelope import envelope as envelope  # re-exported
from protocol.envelope import validate_command
from protocol.errors import SchemaError

# Message types (envelope key 0)
BIRTH = const(1)
TELEMETRY = const(2)
EVENT = const(3)
COMMAND = const(4)
ACK = const(5)
DEATH = const(6)

# Envelope keys
K_TYPE = const(0)
K_DEV = const(1)
K_BOOT = const(2)
K_SEQ = const(3)
K_T = const(4)

# Birth body
B_FIRMWARE = const(10)  # text: firmware version
B_DRIVERS = const(11)  # list of [role text, model text]
B_CAPS = const(12)  # list of text: "permit", "local-interlock", "saf-watchdog", ...
B_BOARD = const(13)  # text: board / port name
B_PERMIT_MAX = const(14)  # uint: longest permit lifetime the node will honour, ms

# Telemetry body
T_VITALS = const(10)  # map MDC code -> [mantissa int, exponent int, unit MDC code, t uint]
T_PUMP = const(11)  # map, keys P_*
T_NODE = const(12)  # map, keys N_*

P_STATE = const(1)  # uint: PUMP_* below
P_RATE = const(2)  # uint: uL/h as reported by the pump
P_INFUSED = const(3)  # uint: uL dispensed in this program
P_VTBI = const(4)  # uint: uL volume to be infused
P_ALARMS = const(5)  # list of text: pump alarm codes, empty when none
P_T = const(6)  # uint: node uptime ms of the pump reply these values come from
P_PROGRAM = const(7)  # uint: program id the pump is set up with (0: none)

PUMP_UNKNOWN = const(0)  # no intact reply from the pump recently
PUMP_STOPPED = const(1)
PUMP_INFUSING = const(2)
PUMP_PAUSED = const(3)
PUMP_ALARM = const(4)
PUMP_STATE_NAMES = ("unknown", "stopped", "infusing", "paused", "alarm")

N_PERMIT_MS = const(1)  # uint: ms of run permit left (0: none)
N_LOCAL_TRIP = const(2)  # bool: node-local interlock latched
N_BUFFERED = const(3)  # uint: packets waiting in store-and-forward
N_DROPPED = const(4)  # uint: telemetry packets dropped by overflow since boot
N_SERIAL_BAD = const(5)  # uint: serial frames rejected (checksum/format) since boot

# Event body
E_KIND = const(10)  # text, e.g. "permit_lapsed", "local_interlock", "pump_alarm"
E_SEVERITY = const(11)  # uint: SEV_*
E_DETAIL = const(12)  # text
E_DATA = const(13)  # map of uint -> int|text (optional, kind-specific)

SEV_INFO = const(0)
SEV_WARNING = const(1)
SEV_ALARM = const(2)

# Command body
C_KIND = const(10)  # uint: CMD_*
C_ARGS = const(11)  # map, keys depend on kind
C_REF = const(12)  # [node boot, node seq]: a node message this command answers (freshness)

CMD_PROGRAM = const(1)
CMD_START = const(2)
CMD_STOP = const(3)
CMD_PERMIT = const(4)
CMD_CONFIG = const(5)
CMD_NAMES = {CMD_PROGRAM: "program", CMD_START: "start", CMD_STOP: "stop",
             CMD_PERMIT: "permit", CMD_CONFIG: "config"}

A_PROGRAM_ID = const(1)  # uint, program / start / permit
A_RATE = const(2)  # uint uL/h, program
A_VTBI = const(3)  # uint uL, program
A_DIAMETER = const(4)  # uint syringe inner diameter in 0.01 mm, program
A_DRUG = const(5)  # text, program (for the node's display/log only)
A_LIFETIME = const(6)  # uint ms, permit
A_REASON = const(7)  # text, stop
A_WALLTIME = const(8)  # uint unix ms, config
A_PERIOD = const(9)  # uint telemetry period ms, config

# Ack body
K_CMD = const(10)  # [gateway epoch, command seq] being answered
K_RESULT = const(11)  # uint: ACK_*
K_REASON = const(12)  # text: why rejected / failed ("" when ok)

ACK_OK = const(0)
ACK_REJECTED = const(1)  # not executed: bad signature, stale, replayed, invalid
ACK_FAILED = const(2)  # accepted but the pump did not confirm

_U32 = const(0xFFFFFFFF)
_U64 = const(0xFFFFFFFFFFFFFFFF)


def _fail(reason, detail):
    raise SchemaError(reason, detail)


# --- field validators: each takes (value, where) and raises SchemaError -------------

def _uint(v, where, hi=_U64):
    if not isinstance(v, int) or isinstance(v, bool) or v < 0 or v > hi:
        _fail("schema.bad_value", where + ": expected unsigned integer <= %d" % hi)


def _u32(v, where):
    _uint(v, where, _U32)


def _int32(v, where):
    if not isinstance(v, int) or isinstance(v, bool) or v < -0x80000000 or v > 0x7FFFFFFF:
        _fail("schema.bad_value", where + ": expected 32-bit integer")


def _bool(v, where):
    if v is not True and v is not False:
        _fail("schema.bad_value", where + ": expected bool")


def _text(maxlen):
    def check(v, where):
        if not isinstance(v, str) or len(v) > maxlen:
            _fail("schema.bad_value", where + ": expected text of at most %d" % maxlen)

    return check


def _list(item, maxlen):
    def check(v, where):
        if not isinstance(v, (list, tuple)) or len(v) > maxlen:
            _fail("schema.bad_value", where + ": expected list of at most %d" % maxlen)
        for i, x in enumerate(v):
            item(x, where + "[%d]" % i)

    return check


def _pair(a, b):
    def check(v, where):
        if not isinstance(v, (list, tuple)) or len(v) != 2:
            _fail("schema.bad_value", where + ": expected a pair")
        a(v[0], where + "[0]")
        b(v[1], where + "[1]")

    return check


def _struct(fields, required):
    """A map with the given integer keys; ``required`` keys must be present."""

    def check(v, where):
        if not isinstance(v, dict):
            _fail("schema.bad_value", where + ": expected map")
        for k in required:
            if k not in v:
                _fail("schema.missing_key", where + ": key %d is required" % k)
        for k in v:
            f = fields.get(k) if isinstance(k, int) and not isinstance(k, bool) else None
            if f is None:
                raise SchemaError("schema.unknown_key", where + ": key %r" % (k,))
            f(v[k], where + "." + str(k))

    return check


def _vital(v, where):
    if not isinstance(v, (list, tuple)) or len(v) != 4:
        _fail("schema.bad_value", where + ": expected [mantissa, exponent, unit, t]")
    _int32(v[0], where + "[0]")
    if not isinstance(v[1], int) or isinstance(v[1], bool) or v[1] < -9 or v[1] > 9:
        _fail("schema.bad_value", where + "[1]: exponent out of -9..9")
    _u32(v[2], where + "[2]")
    _uint(v[3], where + "[3]")


def _vitals(v, where):
    if not isinstance(v, dict) or len(v) > 32:
        _fail("schema.bad_value", where + ": expected map of at most 32 vitals")
    for code in v:
        if not isinstance(code, int) or isinstance(code, bool):
            _fail("schema.bad_value", where + ": vital key must be an MDC code")
        unit = mdc.UNITS.get(code)
        if unit is None:
            _fail("schema.unknown_vital", where + ": MDC code %r" % (code,))
        _vital(v[code], where + "." + str(code))
        if v[code][2] != unit:
            _fail("schema.bad_unit", where + ".%d: unit %r, expected %r" % (code, v[code][2], unit))


def _pump_state(v, where):
    _uint(v, where, PUMP_ALARM)


def _scalar(v, where):
    if isinstance(v, str):
        _text(64)(v, where)
    else:
        _int32(v, where)


def _data(v, where):
    if not isinstance(v, dict) or len(v) > 16:
        _fail("schema.bad_value", where + ": expected map of at most 16 entries")
    for k in v:
        _u32(k, where + " key")
        _scalar(v[k], where + "." + str(k))


_ENVELOPE = {K_TYPE: _uint, K_DEV: _text(32), K_BOOT: _u32, K_SEQ: _u32, K_T: _uint}
_REQUIRED = (K_TYPE, K_DEV, K_BOOT, K_SEQ, K_T)

_PUMP = _struct(
    {P_STATE: _pump_state, P_RATE: _u32, P_INFUSED: _u32, P_VTBI: _u32,
     P_ALARMS: _list(_text(16), 8), P_T: _uint, P_PROGRAM: _u32},
    (P_STATE, P_T),
)
_NODE = _struct(
    {N_PERMIT_MS: _u32, N_LOCAL_TRIP: _bool, N_BUFFERED: _u32, N_DROPPED: _u32,
     N_SERIAL_BAD: _u32},
    (N_PERMIT_MS,),
)
_BODIES = {
    BIRTH: ({B_FIRMWARE: _text(32), B_DRIVERS: _list(_pair(_text(16), _text(24)), 8),
             B_CAPS: _list(_text(24), 16), B_BOARD: _text(32), B_PERMIT_MAX: _u32},
            (B_FIRMWARE, B_DRIVERS, B_CAPS)),
    TELEMETRY: ({T_VITALS: _vitals, T_PUMP: _PUMP, T_NODE: _NODE}, (T_VITALS, T_PUMP, T_NODE)),
    EVENT: ({E_KIND: _text(32), E_SEVERITY: lambda v, w: _uint(v, w, SEV_ALARM),
             E_DETAIL: _text(128), E_DATA: _data},
            (E_KIND, E_SEVERITY)),
    ACK: ({K_CMD: _pair(_u32, _u32), K_RESULT: lambda v, w: _uint(v, w, ACK_FAILED),
           K_REASON: _text(64)},
          (K_CMD, K_RESULT)),
    DEATH: ({}, ()),
}


def validate(msg, expect_type=None):
    """Check a decoded payload against the schema; return it, or raise SchemaError.

    ``expect_type`` ties the message to its topic: a telemetry body arriving on the
    ``event`` topic is ``schema.type_mismatch``.
    """
    if not isinstance(msg, dict):
        _fail("schema.not_a_map", "payload must be a CBOR map")
    mtype = msg.get(K_TYPE)
    name = TYPE_NAMES.get(mtype) if isinstance(mtype, int) and not isinstance(mtype, bool) else None
    if name is None:
        raise SchemaError("schema.bad_type", "message type %r" % (mtype,))
    if expect_type is not None and mtype != expect_type:
        _fail("schema.type_mismatch", "%s message where %s expected"
              % (name, TYPE_NAMES.get(expect_type, expect_type)))
    if mtype == COMMAND:
        return validate_command(msg)
    fields, required = _BODIES[mtype]
    for k in _REQUIRED:
        if k not in msg:
            _fail("schema.missing_key", "envelope key %d is required" % k)
    for k in required:
        if k not in msg:
            _fail("schema.missing_key", name + ": key %d is required" % k)
    for k in msg:
        f = _ENVELOPE.get(k) if isinstance(k, int) and not isinstance(k, bool) else None
        if f is None:
            f = fields.get(k) if isinstance(k, int) and not isinstance(k, bool) else None
        if f is None:
            raise SchemaError("schema.unknown_key", name + ": key %r" % (k,))
        f(msg[k], name + "." + str(k))
    return msg


# --- builders (the node's side) ------------------------------------------------------

def vital(mantissa, exponent, unit, t):
    return [mantissa, exponent, unit, t]


def make_command(target, epoch, seq, t, kind, args, ref_boot, ref_seq):
    msg = envelope(COMMAND, target, epoch, seq, t)
    msg[C_KIND] = kind
    msg[C_ARGS] = args
    msg[C_REF] = [ref_boot, ref_seq]
    return msg


def make_ack(dev, boot, seq, t, cmd_epoch, cmd_seq, result, reason=""):
    msg = envelope(ACK, dev, boot, seq, t)
    msg[K_CMD] = [cmd_epoch, cmd_seq]
    msg[K_RESULT] = result
    if reason:
        msg[K_REASON] = reason
    return msg


def make_event(dev, boot, seq, t, kind, severity, detail="", data=None):
    msg = envelope(EVENT, dev, boot, seq, t)
    msg[E_KIND] = kind
    msg[E_SEVERITY] = severity
    if detail:
        msg[E_DETAIL] = detail
    if data:
        msg[E_DATA] = data
    return msg
