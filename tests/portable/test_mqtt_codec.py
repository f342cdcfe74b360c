"""MQTT 3.1.1 codec: exact bytes, Remaining Length edge cases, split feeds, rejections.

Expected bytes are written out by hand from the OASIS MQTT 3.1.1 packet layouts (§3.1,
§3.3, §3.4, §3.8, §2.2.3), not produced by the code under test.

The codec keeps no test-only helpers (its code lives in the node's heap): Remaining Length
is checked through the encoders' header writer ``_alloc`` and through the Decoder.
"""

import sys
from binascii import hexlify, unhexlify

from firmware.mqtt import codec
from firmware.mqtt.codec import MqttError
from tests.portable.harness import check_cases, raises


def _h(s):
    return unhexlify(s.replace(" ", ""))


def _hex(b):
    return hexlify(bytes(b)).decode()


def _reason(reason, fn, *args):
    e = raises(MqttError, fn, *args)
    assert e.reason == reason, "expected %s, got %s (%s)" % (reason, e.reason, e)


def test_connect_with_will_and_credentials_exact_bytes():
    will = ("n/status", b"\x00dead", 1, True)
    got = codec.encode_connect("node-1", 30, False, will, "user", b"pw")
    want = _h(
        "10 2d"  # CONNECT, remaining length 45
        " 0004 4d515454 04"  # protocol name "MQTT", level 4
        " ec"  # user | password | will retain | will qos 1 | will flag; clean session 0
        " 001e"  # keepalive 30 s
        " 0006 6e6f64652d31"  # client id "node-1"
        " 0008 6e2f737461747573"  # will topic "n/status"
        " 0005 0064656164"  # will message 00 "dead"
        " 0004 75736572"  # username "user"
        " 0002 7077"  # password "pw"
    )
    assert bytes(got) == want, _hex(got)


def test_connect_minimal_clean_session():
    got = codec.encode_connect("id", 60, True)
    assert bytes(got) == _h("10 0e 0004 4d515454 04 02 003c 0002 6964"), _hex(got)


def test_connect_will_qos0_no_retain_flags():
    got = codec.encode_connect("c", 0, True, ("w", b"", 0, False))
    # flags = will flag 0x04 | clean 0x02; will message may be empty.
    assert bytes(got) == _h("10 12 0004 4d515454 04 06 0000 0001 63 0001 77 0000"), _hex(got)


def test_publish_qos1_dup_retain_exact_bytes():
    got = codec.encode_publish("a/b", b"\x01\x02", 1, True, True, 0x1234)
    # 0x30 | dup 0x08 | qos1 0x02 | retain 0x01; length 9; topic; packet id; payload.
    assert bytes(got) == _h("3b 09 0003 612f62 1234 0102"), _hex(got)


def test_dup_set_in_place_marks_a_resend():
    # The client resends the packet it keeps in its window with ``packet[0] |= 0x08``
    # [MQTT-3.3.1-1] (firmware/mqtt/client.py, _FLAG_DUP): the result is the DUP packet.
    pkt = codec.encode_publish("a/b", b"\x01\x02", 1, False, False, 7)
    assert pkt[0] == 0x32
    pkt[0] |= 0x08
    assert bytes(pkt) == _h("3a 09 0003 612f62 0007 0102"), _hex(pkt)
    assert pkt == codec.encode_publish("a/b", b"\x01\x02", 1, False, True, 7)


def test_publish_qos0_has_no_packet_id():
    got = codec.encode_publish("t", b"xyz", 0)
    assert bytes(got) == _h("30 06 0001 74 78797a"), _hex(got)


def test_publish_two_byte_remaining_length():
    got = codec.encode_publish("t", bytes(200), 0)
    assert bytes(got[:5]) == _h("30 cb01 0001"), _hex(got[:5])  # 203 = 0x4b | 0x80, 0x01
    assert len(got) == 206


def test_small_packets_exact_bytes():
    assert codec.encode_puback(0xBEEF) == _h("40 02 beef")
    assert codec.PINGREQ_PACKET == _h("c0 00")
    assert codec.DISCONNECT_PACKET == _h("e0 00")
    got = codec.encode_subscribe(10, [("a/+", 1), ("#", 0)])
    assert bytes(got) == _h("82 0c 000a 0003 612f2b 01 0001 23 00"), _hex(got)


_VARINTS = [
    (0, "00"),
    (127, "7f"),
    (128, "8001"),
    (16383, "ff7f"),
    (16384, "808001"),
    (2097151, "ffff7f"),
    (2097152, "80808001"),
    (268435455, "ffffff7f"),
]
# The encoder allocates the whole packet: edges up to 2 MiB under CPython, 16 KiB under
# MicroPython (a 2 MiB heap); the 4-byte maximum only through the decoder.
_ENCODE_MAX = 16384 if sys.implementation.name == "micropython" else 2097152


def _connacked(max_packet=4096):
    """A Decoder past the CONNACK every stream starts with [MQTT-3.2.0-1]."""
    d = codec.Decoder(max_packet)
    pkt, i = d.feed(_h("20 02 0000"))
    assert pkt == (codec.CONNACK, 0, 0) and i == 4
    return d


def test_remaining_length_round_trip_edges():
    def case(c):
        n, hx = c
        enc = _h(hx)
        if n <= _ENCODE_MAX:
            buf, pos = codec._alloc(0x30, n)
            assert len(buf) == 1 + len(enc) + n and pos == 1 + len(enc)
            assert buf[0] == 0x30 and bytes(buf[1:pos]) == enc, _hex(buf[:pos])
        # Decoding: the packet is exactly 1 + len(enc) + n bytes, so a limit of that size
        # accepts the header (and waits for the body), one byte less refuses it.
        if n == 0:
            assert _connacked().feed(b"\xd0" + enc) == ((codec.PINGRESP,), 2)
        else:
            size = 1 + len(enc) + n
            assert _connacked(size).feed(b"\x30" + enc) == (None, 1 + len(enc))
            _reason("mqtt.too_large", _connacked(size - 1).feed, b"\x30" + enc)

    check_cases("mqtt_varint", _VARINTS, case, lambda c: str(c[0]))


class _Huge:
    # A payload that claims to be 268,435,455 bytes: the size check must fire before any
    # allocation or copy.
    def __len__(self):
        return 268435455


def test_remaining_length_rejections():
    # Encoder: over the 4-byte Remaining Length limit [§2.2.3], and over a caller's limit.
    _reason("mqtt.too_large", codec.encode_publish, "t", _Huge(), 0)
    _reason("mqtt.too_large", codec.encode_publish, "t", bytes(60), 0, False, False, 0, 64)
    assert len(codec.encode_publish("t", bytes(59), 0, False, False, 0, 64)) == 64
    # Decoder: five length bytes, and overlong (non-minimal) encodings.
    for hx in ("ffffffff7f", "8080808001", "8000", "ff8000"):
        _reason("mqtt.malformed", _connacked(1 << 29).feed, _h("30" + hx))
    # A length split over feeds waits for its next byte (the decoder's "truncated" case).
    d = _connacked()
    assert d.feed(_h("30 ff")) == (None, 2)
    assert d.feed(_h("01")) == (None, 1)  # 255
    pkt, i = d.feed(_h("0001 74") + bytes(252))
    assert i == 255 and pkt[:2] == (codec.PUBLISH, "t") and len(pkt[2]) == 252


def test_decoder_rejects_bad_lengths_incrementally():
    def feed(data):
        return _connacked(1 << 29).feed(data)

    _reason("mqtt.malformed", feed, _h("30 ffffffff7f"))  # fifth length byte
    _reason("mqtt.malformed", feed, _h("d0 8000"))  # overlong PINGRESP length
    # A fourth length byte that still says "more follows" is rejected before a fifth arrives.
    _reason("mqtt.malformed", feed, _h("30 ffffffff"))


# A broker-side stream: every packet kind the decoder supports, multi-byte lengths included.
_BIG = bytes(range(256))
_STREAM = (
    _h("20 02 01 00")  # CONNACK session present
    + _h("90 05 0001 01 80 00")  # SUBACK pid 1: qos1, failure, qos0
    + _h("32 0a 0003 612f62 0005 c0ffee")  # PUBLISH qos1 pid 5
    + _h("31 05 0003 612f62")  # PUBLISH qos0 retain, empty payload
    + _h("3a 8502 0001 78 0102")  # PUBLISH qos1 dup, 261-byte body (2-byte length)
    + _BIG
    + _h("40 02 1234")  # PUBACK
    + _h("b0 02 0009")  # UNSUBACK
    + _h("d0 00")  # PINGRESP
)
_EXPECT = [
    (codec.CONNACK, 1, 0),
    (codec.SUBACK, 1, b"\x01\x80\x00"),
    (codec.PUBLISH, "a/b", b"\xc0\xff\xee", 1, 0, 0, 5),
    (codec.PUBLISH, "a/b", b"", 0, 1, 0, 0),
    (codec.PUBLISH, "x", _BIG, 1, 0, 1, 0x0102),
    (codec.PUBACK, 0x1234),
    (codec.UNSUBACK, 9),
    (codec.PINGRESP,),
]


def _drain(dec, data, out):
    i = 0
    while i < len(data):
        pkt, i = dec.feed(data, i)
        if pkt is not None:
            out.append(pkt)


def _same(got, want):
    assert len(got) == len(want), "%d packets, want %d" % (len(got), len(want))
    for i in range(len(want)):  # no zip(strict=): MicroPython has none
        g, w = got[i], want[i]
        assert len(g) == len(w), repr(g)
        for j in range(len(w)):
            a, b = g[j], w[j]
            if isinstance(b, bytes):
                assert bytes(a) == b, repr(g)
            else:
                assert a == b, "%r != %r" % (g, w)


def test_decoder_whole_stream():
    out = []
    _drain(codec.Decoder(), _STREAM, out)
    _same(out, _EXPECT)


def test_decoder_split_at_every_byte_boundary():
    def case(k):
        d = codec.Decoder()
        out = []
        _drain(d, _STREAM[:k], out)
        _drain(d, memoryview(_STREAM)[k:], out)
        _same(out, _EXPECT)

    check_cases("mqtt_split", list(range(len(_STREAM) + 1)), case)


def test_decoder_one_byte_at_a_time_and_end_index():
    d = codec.Decoder()
    out = []
    for i in range(len(_STREAM)):
        pkt, nxt = d.feed(_STREAM, i, i + 1)
        assert nxt == i + 1
        if pkt is not None:
            out.append(pkt)
    _same(out, _EXPECT)


def test_decoder_rejects_oversize_from_the_header_alone():
    # Only the fixed header is supplied: the limit is enforced before any body is buffered.
    d = _connacked(64)
    _reason("mqtt.too_large", d.feed, _h("30 3f"))  # 1 + 1 + 63 = 65 > 64
    _reason("mqtt.too_large", _connacked(64).feed, _h("30 ffffff7f"))
    _reason("mqtt.too_large", _connacked(4096).feed, _h("90 ff7f"))
    d = _connacked(64)
    pkt, i = d.feed(_h("30 3e 0001 74") + bytes(59))  # exactly 64 bytes: accepted
    assert pkt[0] == codec.PUBLISH and len(pkt[2]) == 59 and i == 64


def test_decoder_rejects_malformed_packets():
    cases = [
        ("00 00", "mqtt.malformed"),  # reserved type 0
        ("f0 00", "mqtt.malformed"),  # reserved type 15
        ("21 02 0000", "mqtt.malformed"),  # CONNACK reserved flag bits
        ("20 03 000000", "mqtt.malformed"),  # CONNACK length
        ("20 02 0200", "mqtt.malformed"),  # CONNACK reserved ack flags
        ("20 02 0006", "mqtt.malformed"),  # CONNACK return code 6 is reserved
        ("20 02 0105", "mqtt.malformed"),  # session present with a refusal
        ("40 03 000100", "mqtt.malformed"),  # PUBACK length
        ("40 02 0000", "mqtt.malformed"),  # packet id 0
        ("d0 01 00", "mqtt.malformed"),  # PINGRESP length
        ("90 02 0001", "mqtt.malformed"),  # SUBACK without return codes
        ("90 03 0001 03", "mqtt.malformed"),  # SUBACK return code 3
        ("36 05 0001 61 0001", "mqtt.malformed"),  # PUBLISH qos 3
        ("34 05 0001 61 0001", "mqtt.unexpected"),  # PUBLISH qos 2
        ("30 02 0000", "mqtt.malformed"),  # PUBLISH too short for a topic
        ("30 03 0000 61", "mqtt.malformed"),  # empty topic
        ("30 04 0005 6161", "mqtt.malformed"),  # topic longer than the packet
        ("32 05 0001 61 0000", "mqtt.malformed"),  # qos 1 packet id 0
        ("32 04 0001 61 00", "mqtt.malformed"),  # qos 1 without room for packet id
        ("30 05 0003 612f2b", "mqtt.malformed"),  # wildcard in a topic name
        ("30 05 0003 61002f", "mqtt.malformed"),  # NUL in a topic name
        ("30 04 0002 c328", "mqtt.malformed"),  # invalid UTF-8 topic
        ("10 00", "mqtt.unexpected"),  # CONNECT from the server
        ("82 00", "mqtt.unexpected"),  # SUBSCRIBE from the server
        ("c0 00", "mqtt.unexpected"),  # PINGREQ from the server
        ("60 02 0001", "mqtt.unexpected"),  # PUBREL: no QoS 2 here
    ]

    def case(c):
        hx, reason = c
        # CONNACK cases are a stream's first packet; the others follow an accepted CONNACK.
        d = codec.Decoder() if hx[0] == "2" else _connacked()
        _reason(reason, d.feed, _h(hx))

    check_cases("mqtt_malformed", cases, case, lambda c: c[0])


def test_decoder_connack_comes_first_and_once():
    # [MQTT-3.2.0-1]: the server's first packet is a CONNACK, and there is only one.
    for hx in ("40 02 0001", "d0 00", "30 03 0001 61", "90 03 0001 00", "b0 02 0001"):
        _reason("mqtt.unexpected", codec.Decoder().feed, _h(hx))
    d = _connacked()
    _reason("mqtt.unexpected", d.feed, _h("20 02 0000"))
    # reset() starts a new stream (a new connection): a CONNACK first again.
    d.reset()
    assert d.feed(_h("20 02 0100")) == ((codec.CONNACK, 1, 0), 4)
    assert d.feed(_h("d0 00")) == ((codec.PINGRESP,), 2)


def test_encoders_reject_bad_arguments():
    _reason("mqtt.bad_topic", codec.encode_publish, "", b"", 0)
    _reason("mqtt.bad_topic", codec.encode_publish, "a/+", b"", 0)
    _reason("mqtt.bad_topic", codec.encode_publish, "a/#", b"", 0)
    _reason("mqtt.bad_topic", codec.encode_publish, "a\x00b", b"", 0)
    _reason("mqtt.bad_argument", codec.encode_publish, "t", b"", 2, False, False, 1)
    _reason("mqtt.bad_argument", codec.encode_publish, "t", b"", 1, False, False, 0)
    _reason("mqtt.bad_argument", codec.encode_publish, "t", b"", 1, False, False, 65536)
    _reason("mqtt.bad_argument", codec.encode_publish, "t", b"", 0, False, True, 0)
    _reason("mqtt.bad_argument", codec.encode_puback, 0)
    _reason("mqtt.bad_argument", codec.encode_subscribe, 1, [])
    _reason("mqtt.bad_argument", codec.encode_subscribe, 1, [("a", 2)])
    _reason("mqtt.bad_argument", codec.encode_connect, "", 60, False)
    _reason("mqtt.bad_argument", codec.encode_connect, "c", 65536, True)
    _reason("mqtt.bad_argument", codec.encode_connect, "c", 1, True, None, None, b"p")
    _reason("mqtt.bad_topic", codec.encode_connect, "c", 1, True, ("w/#", b"", 0, False))
    _reason("mqtt.bad_argument", codec.encode_connect, "c", 1, True, ("w", b"", 2, False))
    _reason("mqtt.bad_argument", codec.encode_connect, "c", 1, True, ("w", bytes(65536), 0, 0))
    _reason("mqtt.bad_argument", codec.encode_connect, "c", 1, True, None, "u", bytes(65536))
    _reason("mqtt.bad_argument", codec.encode_publish, "x" * 65536, b"", 0)


def test_topic_filters():
    good = ["a", "a/+/b", "+", "#", "a/#", "+/+", "/", "a//b", "+/#"]
    bad = ["", "a#", "a/#/b", "a+", "+a", "a/b+", "##", "a\x00"]

    # Checked where the node checks them: encoding the SUBSCRIBE (MQTTClient.subscribe too).
    def ok(f):
        codec.encode_subscribe(1, [(f, 0)])

    def rejected(f):
        _reason("mqtt.bad_topic", codec.encode_subscribe, 1, [(f, 0)])

    check_cases("mqtt_filters", good, ok, lambda f: repr(f))
    check_cases("mqtt_filters", bad, rejected, lambda f: repr(f))
