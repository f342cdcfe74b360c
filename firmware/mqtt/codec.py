"""MQTT 3.1.1 packet codec: the protocol layer, with no I/O (sans-IO).

Encoders return the exact packet bytes to write; :class:`Decoder` consumes bytes as they
arrive (any split) and yields one parsed packet at a time. Nothing here touches a socket, a
clock or asyncio, so the same file runs under CPython (tests, gateway tools) and MicroPython.

Only what a QoS 0/1 client needs is implemented (a client never receives CONNECT, SUBSCRIBE,
PINGREQ...; QoS 2 is out of scope). Clause tags like [MQTT-3.3.1-4] refer to the OASIS
MQTT Version 3.1.1 standard; sections like "§2.2.3" to its numbered sections.

Memory: every encoder allocates exactly one buffer of the final packet size; the decoder never
buffers a packet before it has checked the length against ``max_packet``, and reads a PUBLISH
payload straight into its own right-sized bytearray (no second copy).

Footprint: on MicroPython this module's bytecode, function objects, names and strings live
in the node's heap (docs/firmware.md, "Footprint"), so the code is written as few functions
as reads well, numbers the node only uses internally are private ``const()`` (folded into the
bytecode), and one error detail serves every case it describes exactly (``"length %d of
type %d"`` for every packet type). Nothing only the tests need lives here.
"""

from protocol import const
from protocol.errors import ProtocolError


class MqttError(ProtocolError):
    """An MQTT packet we refuse to encode or decode (reasons ``mqtt.*``).

    Reasons: ``mqtt.malformed`` (bytes violate the 3.1.1 framing rules), ``mqtt.too_large``
    (over ``max_packet`` or the 268,435,455-byte Remaining Length limit), ``mqtt.unexpected``
    (a valid packet a QoS 0/1 client must never receive, including QoS 2 PUBLISH, and a
    CONNACK that is not the first packet [MQTT-3.2.0-1]), ``mqtt.bad_topic`` (empty, wildcard
    or NUL in a topic we would send, misplaced wildcard in a filter), ``mqtt.bad_argument``
    (a field out of range).
    """


# Control packet types, the high nibble of the first byte [§2.2.1]. The public names are the
# types Decoder returns (the client keeps folded copies: tests/test_const_copies.py); the ones
# a client only sends are private: CONNECT 1, SUBSCRIBE 8, PINGREQ 12, DISCONNECT 14.
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBACK = const(9)
UNSUBACK = const(11)
PINGRESP = const(13)

# CONNACK return codes [§3.2.2.3]: 0 accepted, 1..5 refusals, 6..255 reserved.
_CONNACK_MAX_RC = const(5)
SUBACK_FAILURE = const(0x80)

# §2.2.3: four length bytes at most, so the largest Remaining Length is 268,435,455 and the
# largest packet that plus the first byte and four length bytes.
_MAX_PACKET = const(268435460)
DEFAULT_MAX_PACKET = const(4096)

PINGREQ_PACKET = b"\xc0\x00"  # [MQTT-3.12] fixed header only
DISCONNECT_PACKET = b"\xe0\x00"  # [MQTT-3.14]

# The types a client may receive, as a bit mask (folded: no tuple object on the heap).
_FROM_SERVER = const(1 << CONNACK | 1 << PUBACK | 1 << SUBACK | 1 << UNSUBACK | 1 << PINGRESP)
_FLAG_DUP = const(0x08)
_FLAG_RETAIN = const(0x01)
_PLUS = const(0x2B)
_HASH = const(0x23)
_SLASH = const(0x2F)


# --- Encoders ---------------------------------------------------------------------------------


def _alloc(first, rem, limit=_MAX_PACKET):
    """The packet buffer (fixed header written) for ``rem`` bytes after the header [§2.2]:
    returns ``(buf, index of the first byte after the header)``. Raises ``mqtt.too_large``
    when the whole packet would exceed ``limit``; the default limit is the protocol's, which
    bounds Remaining Length to four bytes."""
    # §2.2.3 Remaining Length: 7 bits per byte, least significant group first, bit 7 = "more
    # bytes follow". n = the whole fixed header (type byte + length bytes).
    n = 2 if rem < 128 else 3 if rem < 16384 else 4 if rem < 2097152 else 5
    if n + rem > limit:
        raise MqttError("mqtt.too_large", "%d-byte packet, limit %d" % (n + rem, limit))
    buf = bytearray(n + rem)
    buf[0] = first
    pos = 1
    while rem > 0x7F:
        buf[pos] = (rem & 0x7F) | 0x80
        rem >>= 7
        pos += 1
    buf[pos] = rem
    return buf, pos + 1


def _field(s, what):
    # §1.5.3: strings are UTF-8 (binary fields as given) with a 2-byte length prefix, so at
    # most 65,535 bytes.
    b = s.encode() if isinstance(s, str) else bytes(s)
    if len(b) > 65535:
        raise MqttError("mqtt.bad_argument", what + " over 65535 bytes")
    return b


def _put_str(buf, pos, b):
    n = len(b)
    buf[pos] = n >> 8
    buf[pos + 1] = n & 0xFF
    buf[pos + 2 : pos + 2 + n] = b
    return pos + 2 + n


def _check_topic(b, is_filter, reason="mqtt.bad_topic"):
    """Raise ``MqttError(reason)`` unless ``b`` (encoded) is a valid topic filter for
    SUBSCRIBE [§4.7.1] or, with ``is_filter`` false, a valid topic name (PUBLISH, Will)."""
    n = len(b)
    if not n:
        raise MqttError(reason, "empty")  # [MQTT-4.7.3-1]
    for i in range(n):
        c = b[i]
        if c == 0:
            raise MqttError(reason, "NUL in topic")  # [MQTT-4.7.3-2]
        if c == _PLUS or c == _HASH:
            if not is_filter:
                raise MqttError(reason, "wildcard in topic name")  # [MQTT-3.3.2-2]
            # A wildcard occupies a whole level [MQTT-4.7.1-2, MQTT-4.7.1-3] and '#' is last.
            if (i and b[i - 1] != _SLASH) or (i + 1 < n and (c == _HASH or b[i + 1] != _SLASH)):
                raise MqttError(reason, "misplaced wildcard")


def _put_pid(buf, pos, pid):
    # [MQTT-2.3.1-1]: packet identifiers are non-zero 16-bit values.
    if not 0 < pid < 65536:
        raise MqttError("mqtt.bad_argument", "packet id %d" % pid)
    buf[pos] = pid >> 8
    buf[pos + 1] = pid & 0xFF
    return pos + 2


def _check_qos(qos):
    if qos != 0 and qos != 1:
        raise MqttError("mqtt.bad_argument", "qos %r (0 or 1 supported)" % (qos,))


def encode_connect(
    client_id, keepalive=60, clean_session=True, will=None, username=None, password=None
):
    """CONNECT [§3.1] for protocol level 4 (3.1.1). ``will``: ``(topic, payload, qos,
    retain)`` or None.

    A client encodes its CONNECT once, when it is made, and resends those bytes on every
    connect: the encoder is in firmware/mqtt/_setup.py, loaded for the call and unloaded
    after it, so that it does not stay in the node's heap."""
    from firmware.mqtt import _setup

    return _setup.encode_connect(client_id, keepalive, clean_session, will, username, password)


def encode_publish(topic, payload, qos=0, retain=False, dup=False, pid=0, max_packet=_MAX_PACKET):
    """PUBLISH [§3.3] as one bytearray (kept as is in the in-flight window for resends; a
    resend sets DUP in place, ``packet[0] |= 0x08`` [MQTT-3.3.1-1]). Raises ``mqtt.too_large``
    for a packet over ``max_packet`` bytes."""
    _check_qos(qos)
    if dup and not qos:
        raise MqttError("mqtt.bad_argument", "dup with qos 0")  # [MQTT-3.3.1-2]
    t = _field(topic, "topic")
    _check_topic(t, False)
    first = 0x30 | (qos << 1) | (_FLAG_DUP if dup else 0) | (_FLAG_RETAIN if retain else 0)
    buf, pos = _alloc(first, 2 + len(t) + (2 if qos else 0) + len(payload), max_packet)
    pos = _put_str(buf, pos, t)
    if qos:
        pos = _put_pid(buf, pos, pid)
    buf[pos:] = payload
    return buf


def encode_puback(pid):
    """PUBACK [§3.4]: fixed header 0x40, length 2, packet id."""
    buf, pos = _alloc(0x40, 2)
    _put_pid(buf, pos, pid)
    return buf


def encode_subscribe(pid, topics):
    """SUBSCRIBE [§3.8] for a sequence of ``(filter, qos)``; at least one [MQTT-3.8.3-3]."""
    if not topics:
        raise MqttError("mqtt.bad_argument", "no filters")
    rem = 2
    enc = []
    for f, qos in topics:
        _check_qos(qos)
        b = _field(f, "filter")
        _check_topic(b, True)
        enc.append(b)
        rem += 3 + len(b)
    buf, pos = _alloc(0x82, rem)  # [MQTT-3.8.1-1]: flags must be 0010
    pos = _put_pid(buf, pos, pid)
    for i in range(len(enc)):
        pos = _put_str(buf, pos, enc[i])
        buf[pos] = topics[i][1]
        pos += 1
    return buf


# --- Incremental decoder ----------------------------------------------------------------------

_ST_TYPE = const(0)  # expecting the first byte of a packet
_ST_LEN = const(1)  # inside Remaining Length
_ST_BODY = const(2)  # whole body of CONNACK, PUBACK, UNSUBACK, SUBACK
_ST_TOPIC_LEN = const(3)  # PUBLISH: 2-byte topic length
_ST_VAR_HDR = const(4)  # PUBLISH: topic (+ packet id)
_ST_PAYLOAD = const(5)  # PUBLISH: payload


class Decoder:
    """Turns a byte stream from the broker into packets, one at a time.

    Packets are tuples, first item the type:
      ``(CONNACK, session_present, return_code)``
      ``(PUBLISH, topic_str, payload_bytearray, qos, retain, dup, pid)`` (pid 0 for QoS 0)
      ``(PUBACK, pid)`` / ``(UNSUBACK, pid)``
      ``(SUBACK, pid, return_codes_bytes)``
      ``(PINGRESP,)``
    The first packet of a stream must be a CONNACK, and no later one may be [MQTT-3.2.0-1].
    After an :class:`MqttError` the stream cannot be resynchronised: the connection must be
    dropped [§4.8] and :meth:`reset` called before the next one.
    """

    def __init__(self, max_packet=DEFAULT_MAX_PACKET):
        self.max_packet = max_packet
        self._scratch = bytearray(2)  # 2-byte bodies and PUBLISH topic lengths land here
        self.reset()

    def reset(self):
        """Start a new stream (a new connection): the next packet must be its CONNACK."""
        self._st = _ST_TYPE
        self._first = 0  # first byte of the packet being read; 0 until the CONNACK
        self._buf = self._scratch  # the buffer being filled (_ST_BODY and after)
        self._topic = None  # a PUBLISH's topic and packet id while its payload is read
        self._pid = 0

    def feed(self, data, start=0, end=None):
        """Consume ``data[start:end]`` until one packet completes or the bytes run out.

        Returns ``(packet or None, index of the first unconsumed byte)``; call again from that
        index while it is below ``end``.
        """
        if end is None:
            end = len(data)
        mv = data if isinstance(data, memoryview) else memoryview(data)
        i = start
        while i < end:
            st = self._st
            if st == _ST_TYPE:
                b = mv[i]
                i += 1
                t = b >> 4
                if t == PUBLISH:
                    q = (b >> 1) & 3
                    if q > 1:  # 3 is malformed [MQTT-3.3.1-4]; 2 we never subscribe to
                        raise MqttError(
                            "mqtt.malformed" if q == 3 else "mqtt.unexpected", "qos %d" % q
                        )
                elif not (1 << t) & _FROM_SERVER:
                    # 0 and 15 are reserved [§2.2.1]; the others only a client sends.
                    raise MqttError(
                        "mqtt.malformed" if t == 0 or t == 15 else "mqtt.unexpected",
                        "type %d" % t,
                    )
                elif b & 0x0F:  # [MQTT-2.2.2-2]: reserved flags must be as in Table 2.2
                    raise MqttError("mqtt.malformed", "reserved flags in type %d" % t)
                if (t == CONNACK) == (self._first != 0):  # [MQTT-3.2.0-1]
                    raise MqttError("mqtt.unexpected", "type %d: CONNACK comes first, once" % t)
                self._first = b
                self._rem = 0
                self._nlen = 0
                self._st = _ST_LEN
            elif st == _ST_LEN:
                b = mv[i]
                i += 1
                n = self._nlen
                rem = self._rem | (b & 0x7F) << (7 * n)
                n += 1
                self._rem = rem
                self._nlen = n
                if b & 0x80:
                    if n == 4:  # §2.2.3 allows four length bytes
                        raise MqttError("mqtt.malformed", "remaining length over 4 bytes")
                    continue
                # Non-minimal ("overlong") lengths such as 80 00 for 0: 3.1.1 is silent, MQTT
                # 5.0 §1.5.5 forbids them, and two spellings of one length only help smuggling.
                if b == 0 and n > 1:
                    raise MqttError("mqtt.malformed", "overlong remaining length")
                # The size check happens before a single body byte is stored.
                if 1 + n + rem > self.max_packet:
                    raise MqttError(
                        "mqtt.too_large",
                        "%d-byte packet, limit %d" % (1 + n + rem, self.max_packet),
                    )
                t = self._first >> 4
                st = _ST_BODY
                if t == PUBLISH:
                    # Topic length (2) + topic (>= 1 [MQTT-4.7.3-1]) + packet id if QoS 1.
                    ok = rem >= (5 if self._first & 0x06 else 3)
                    st = _ST_TOPIC_LEN
                elif t == SUBACK:
                    ok = rem >= 3  # packet id + at least one return code [§3.9.3]
                elif t == PINGRESP:
                    ok = not rem  # §3.13
                else:  # CONNACK [§3.2], PUBACK [§3.4], UNSUBACK [§3.11]: exactly 2 bytes
                    ok = rem == 2
                if not ok:
                    raise MqttError("mqtt.malformed", "length %d of type %d" % (rem, t))
                if t == PINGRESP:
                    self._st = _ST_TYPE
                    return (PINGRESP,), i
                self._buf = bytearray(rem) if t == SUBACK else self._scratch
                self._got = 0
                self._st = st
            else:
                buf = self._buf
                got = self._got
                k = len(buf) - got
                if k > end - i:
                    k = end - i
                buf[got : got + k] = mv[i : i + k]
                i += k
                got += k
                self._got = got
                if got < len(buf):
                    continue  # the bytes ran out
                self._got = 0
                first = self._first
                if st == _ST_TOPIC_LEN:
                    tl = (buf[0] << 8) | buf[1]
                    n = tl + 2 if first & 0x06 else tl  # topic + packet id
                    if not tl or 2 + n > self._rem:
                        raise MqttError("mqtt.malformed", "PUBLISH topic length %d" % tl)
                    self._buf = bytearray(n)
                    self._st = _ST_VAR_HDR
                    continue
                if st == _ST_VAR_HDR:
                    n = len(buf)
                    pid = 0
                    if first & 0x06:
                        n -= 2
                        pid = (buf[n] << 8) | buf[n + 1]
                        if not pid:
                            raise MqttError(
                                "mqtt.malformed", "packet id %d" % pid
                            )  # [MQTT-2.3.1-1]
                    name = buf[:n] if pid else buf
                    _check_topic(name, False, "mqtt.malformed")
                    try:
                        self._topic = str(name, "utf-8")  # [MQTT-1.5.3-1]
                    except UnicodeError:
                        raise MqttError("mqtt.malformed", "bad UTF-8") from None
                    self._pid = pid
                    n = self._rem - 2 - len(buf)
                    self._buf = bytearray(n)
                    self._st = _ST_PAYLOAD
                    if n:
                        continue
                    buf = self._buf
                    st = _ST_PAYLOAD
                # A packet is complete.
                self._st = _ST_TYPE
                self._buf = self._scratch  # drop our reference to the packet's buffer
                if st == _ST_PAYLOAD:
                    topic = self._topic
                    self._topic = None
                    return (
                        PUBLISH,
                        topic,
                        buf,
                        (first >> 1) & 3,
                        first & 1,
                        (first >> 3) & 1,
                        self._pid,
                    ), i
                t = first >> 4
                if t == CONNACK:
                    sp = buf[0]
                    rc = buf[1]
                    if sp & 0xFE:  # §3.2.2.1: bits 7-1 reserved, 0
                        raise MqttError("mqtt.malformed", "ack flags")
                    if rc > _CONNACK_MAX_RC:  # §3.2.2.3: 6-255 reserved
                        raise MqttError("mqtt.malformed", "return code %d of type %d" % (rc, t))
                    if rc and sp:  # [MQTT-3.2.2-4]
                        raise MqttError("mqtt.malformed", "session present on refusal")
                    return (CONNACK, sp, rc), i
                pid = (buf[0] << 8) | buf[1]
                if not pid:
                    raise MqttError("mqtt.malformed", "packet id %d" % pid)  # [MQTT-2.3.1-1]
                if t == SUBACK:
                    codes = bytes(buf[2:])
                    for c in codes:
                        if c > 2 and c != SUBACK_FAILURE:  # [MQTT-3.9.3-2]
                            raise MqttError("mqtt.malformed", "return code %d of type %d" % (c, t))
                    return (SUBACK, pid, codes), i
                return (t, pid), i
        return None, i
