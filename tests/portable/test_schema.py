"""Message schema: every type validates; each kind of fault is rejected with its reason."""

from protocol import mdc
from protocol import schema as s
from protocol.errors import SchemaError
from tests.portable.harness import check_cases, raises


def telemetry():
    m = s.envelope(s.TELEMETRY, "chair-01", 3, 17, 60000)
    m[s.T_VITALS] = {
        mdc.SPO2: s.vital(97, 0, mdc.DIM_PERCENT, 59800),
        mdc.PULSE_OXIM: s.vital(72, 0, mdc.DIM_BEAT_PER_MIN, 59800),
        mdc.PERF_INDEX: s.vital(215, -2, mdc.DIM_PERCENT, 59800),
        mdc.NIBP_SYS: s.vital(128, 0, mdc.DIM_MMHG, 31000),
    }
    m[s.T_PUMP] = {s.P_STATE: s.PUMP_INFUSING, s.P_RATE: 52500, s.P_INFUSED: 1234,
                   s.P_VTBI: 35000, s.P_ALARMS: [], s.P_T: 59900, s.P_PROGRAM: 4}
    m[s.T_NODE] = {s.N_PERMIT_MS: 4200, s.N_LOCAL_TRIP: False, s.N_BUFFERED: 0,
                   s.N_DROPPED: 0, s.N_SERIAL_BAD: 2}
    return m


def birth():
    m = s.envelope(s.BIRTH, "chair-01", 3, 0, 10)
    m[s.B_FIRMWARE] = "0.1.0"
    m[s.B_DRIVERS] = [["pump", "ne1000"], ["oximeter", "radical7"], ["monitor", "datex-s5"]]
    m[s.B_CAPS] = ["permit", "local-interlock", "saf-watchdog"]
    m[s.B_BOARD] = "unix"
    m[s.B_PERMIT_MAX] = 10000
    return m


def command(kind, args):
    return s.make_command("chair-01", 2, 99, 5, kind, args, 3, 17)


def valid_messages():
    return [
        ("birth", birth()),
        ("telemetry", telemetry()),
        ("event", s.make_event("chair-01", 3, 18, 61000, "permit_lapsed", s.SEV_ALARM,
                               "no permit for 5000 ms", {1: 5000})),
        ("ack", s.make_ack("chair-01", 3, 19, 61010, 2, 99, s.ACK_OK)),
        ("ack-rejected", s.make_ack("chair-01", 3, 20, 61010, 2, 98, s.ACK_REJECTED, "stale")),
        ("death", s.envelope(s.DEATH, "chair-01", 3, 1, 10)),
        ("program", command(s.CMD_PROGRAM, {s.A_PROGRAM_ID: 4, s.A_RATE: 52500, s.A_VTBI: 35000,
                                            s.A_DIAMETER: 1485, s.A_DRUG: "ketamine"})),
        ("start", command(s.CMD_START, {s.A_PROGRAM_ID: 4})),
        ("stop", command(s.CMD_STOP, {s.A_REASON: "interlock SpO2"})),
        ("permit", command(s.CMD_PERMIT, {s.A_LIFETIME: 5000, s.A_PROGRAM_ID: 4})),
        ("config", command(s.CMD_CONFIG, {s.A_WALLTIME: 1795000000000, s.A_PERIOD: 1000})),
    ]


def test_valid_messages_validate():
    check_cases("schema valid", valid_messages(), lambda c: s.validate(c[1]), lambda c: c[0])


def test_type_must_match_topic():
    e = raises(SchemaError, s.validate, telemetry(), s.EVENT)
    assert e.reason == "schema.type_mismatch"
    assert s.validate(telemetry(), s.TELEMETRY)


def _mutated(fn):
    m = telemetry()
    fn(m)
    return m


def _set(path, value):
    def fn(m):
        target = m
        for k in path[:-1]:
            target = target[k]
        target[path[-1]] = value

    return fn


def _delete(path):
    def fn(m):
        target = m
        for k in path[:-1]:
            target = target[k]
        del target[path[-1]]

    return fn


BAD = [
    ("not a map", [1, 2], "schema.not_a_map"),
    ("unknown type", _set([s.K_TYPE], 99), "schema.bad_type"),
    ("bool type", _set([s.K_TYPE], True), "schema.bad_type"),
    ("missing seq", _delete([s.K_SEQ]), "schema.missing_key"),
    ("missing pump", _delete([s.T_PUMP]), "schema.missing_key"),
    ("negative seq", _set([s.K_SEQ], -1), "schema.bad_value"),
    ("seq too big", _set([s.K_SEQ], 1 << 32), "schema.bad_value"),
    ("dev not text", _set([s.K_DEV], b"chair"), "schema.bad_value"),
    ("dev too long", _set([s.K_DEV], "x" * 33), "schema.bad_value"),
    ("unknown key", _set([99], 1), "schema.unknown_key"),
    ("text key", _set(["x"], 1), "schema.unknown_key"),
    ("unknown vital", _set([s.T_VITALS, 12345], [1, 0, mdc.DIM_PERCENT, 1]), "schema.unknown_vital"),
    ("wrong unit", _set([s.T_VITALS, mdc.SPO2], [97, 0, mdc.DIM_MMHG, 1]), "schema.bad_unit"),
    ("vital not 4", _set([s.T_VITALS, mdc.SPO2], [97, 0, mdc.DIM_PERCENT]), "schema.bad_value"),
    ("exponent", _set([s.T_VITALS, mdc.SPO2], [97, 10, mdc.DIM_PERCENT, 1]), "schema.bad_value"),
    ("mantissa big", _set([s.T_VITALS, mdc.SPO2], [1 << 31, 0, mdc.DIM_PERCENT, 1]),
     "schema.bad_value"),
    ("pump state", _set([s.T_PUMP, s.P_STATE], 9), "schema.bad_value"),
    ("pump unknown key", _set([s.T_PUMP, 42], 1), "schema.unknown_key"),
    ("alarms not list", _set([s.T_PUMP, s.P_ALARMS], "A?S"), "schema.bad_value"),
    ("too many alarms", _set([s.T_PUMP, s.P_ALARMS], ["a"] * 9), "schema.bad_value"),
    ("local trip int", _set([s.T_NODE, s.N_LOCAL_TRIP], 1), "schema.bad_value"),
    ("permit missing", _delete([s.T_NODE, s.N_PERMIT_MS]), "schema.missing_key"),
]


def test_bad_messages_rejected_with_reason():
    def run(case):
        name, mut, reason = case
        msg = mut if not callable(mut) else _mutated(mut)
        e = raises(SchemaError, s.validate, msg)
        assert e.reason == reason, (e.reason, str(e))

    check_cases("schema rejects", BAD, run, lambda c: c[0])


def test_bad_commands_rejected():
    cases = [
        ("unknown kind", command(42, {}), "schema.bad_command"),
        ("program missing rate", command(s.CMD_PROGRAM, {s.A_PROGRAM_ID: 1, s.A_VTBI: 1,
                                                         s.A_DIAMETER: 1}), "schema.missing_key"),
        ("permit extra arg", command(s.CMD_PERMIT, {s.A_LIFETIME: 1, s.A_PROGRAM_ID: 1,
                                                    s.A_RATE: 5}), "schema.unknown_key"),
        ("ref not pair", s.make_command("c", 1, 1, 1, s.CMD_STOP, {}, 1, 1), None),
    ]
    bad_ref = cases[3][1]
    bad_ref[s.C_REF] = [1]
    cases[3] = ("ref not pair", bad_ref, "schema.bad_value")

    def run(case):
        e = raises(SchemaError, s.validate, case[1])
        assert e.reason == case[2], e.reason

    check_cases("schema command rejects", cases, run, lambda c: c[0])
