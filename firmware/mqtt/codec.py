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
"""

from protocol._const import const
from protocol.errors import ProtocolError


class MqttError(ProtocolError):
    """An MQTT packet we refuse to encode or decode (reasons ``mqtt.*``).

    Reasons: ``mqtt.malformed`` (bytes violate the 3.1.1 framing rules), ``mqtt.too_large``
    (over ``max_packet`` or the 268,435,455-byte protocol limit), ``mqtt.unexpected`` (a valid
    packet a QoS 0/1 client must never receive, including QoS 2 PUBLISH), ``mqtt.bad_topic``
    (empty, wildcard or NUL in a topic we would send), ``mqtt.bad_argument`` (a field out of
    range), ``mqtt.truncated`` (``decode_remaining_length`` ran out of bytes).
    """


# Control packet types, the high nibble of the first byte [§2.2.1].
CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

# CONNACK return codes [§3.2.2.3]; 1..5 are refusals, 6..255 reserved.
CONNACK_ACCEPTED = const(0)
_CONNACK_MAX_RC = const(5)
SUBACK_FAILURE = const(0x80)

# §2.2.3: four length bytes at most, so this is the largest Remaining Length.
MAX_REMAINING_LENGTH = const(268435455)
DEFAULT_MAX_PACKET = const(4096)

PINGREQ_PACKET = b"\xc0\x00"  # [MQTT-3.12] fixed header only
DISCONNECT_PACKET = b"\xe0\x00"  # [MQTT-3.14]

_FLAG_DUP = const(0x08)
_FLAG_RETAIN = const(0x01)
_PLUS = const(0x2B)
_HASH = const(0x23)
_SLASH = const(0x2F)


# --- Remaining Length varint [§2.2.3] ---------------------------------------------------------


def varint_size(n):
    """Bytes needed to encode Remaining Length ``n``."""
    if n < 0 or n > MAX_REMAINING_LENGTH:
        raise MqttError("mqtt.too_large", "remaining length %d" % n)
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2097152:
        return 3
    return 4


def _put_varint(buf, pos, n):
    # §2.2.3: 7 bits per byte, least significant group first, bit 7 = "more bytes follow".
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[pos] = b | 0x80
            pos += 1
        else:
            buf[pos] = b
            return pos + 1


def encode_remaining_length(n):
    buf = bytearray(varint_size(n))
    _put_varint(buf, 0, n)
    return bytes(buf)


def decode_remaining_length(buf, start=0):
    """Return ``(value, index after the varint)`` from ``buf[start:]``.

    Rejects a fifth length byte (§2.2.3 allows four) and non-minimal ("overlong") encodings
    such as ``80 00`` for 0: 3.1.1 is silent on the latter, MQTT 5.0 §1.5.5 forbids it, and
    accepting two spellings of one length only helps smuggling. The :class:`Decoder` applies
    the same rules incrementally.
    """
    value = 0
    shift = 0
    i = start
    while True:
        if i >= len(buf):
            raise MqttError("mqtt.truncated", "remaining length")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and i - start > 1:
                raise MqttError("mqtt.malformed", "overlong remaining length")
            return value, i
        shift += 7
        if shift >= 28:
            raise MqttError("mqtt.malformed", "remaining length over 4 bytes")


# --- Encoders ---------------------------------------------------------------------------------


def _utf8(s, what):
    # §1.5.3: strings are UTF-8 with a 2-byte length prefix, so at most 65,535 bytes.
    b = s.encode() if isinstance(s, str) else bytes(s)
    if len(b) > 65535:
        raise MqttError("mqtt.bad_argument", what + " over 65535 bytes")
    return b


def check_topic_name(b):
    """Raise unless ``b`` (encoded) is a valid topic *name* for PUBLISH / Will."""
    if not b:
        raise MqttError("mqtt.bad_topic", "empty")  # [MQTT-4.7.3-1]
    for c in b:
        if c == _PLUS or c == _HASH:
            raise MqttError("mqtt.bad_topic", "wildcard in topic name")  # [MQTT-3.3.2-2]
        if c == 0:
            raise MqttError("mqtt.bad_topic", "NUL in topic")  # [MQTT-4.7.3-2]


def check_topic_filter(b):
    """Raise unless ``b`` (encoded) is a valid topic *filter* for SUBSCRIBE [§4.7.1]."""
    if not b:
        raise MqttError("mqtt.bad_topic", "empty filter")  # [MQTT-4.7.3-1]
    n = len(b)
    for i in range(n):
        c = b[i]
        if c == 0:
            raise MqttError("mqtt.bad_topic", "NUL in filter")  # [MQTT-4.7.3-2]
        if c == _PLUS or c == _HASH:
            # A wildcard occupies a whole level [MQTT-4.7.1-2, MQTT-4.7.1-3] and '#' is last.
            if (i > 0 and b[i - 1] != _SLASH) or (i + 1 < n and (c == _HASH or b[i + 1] != _SLASH)):
                raise MqttError("mqtt.bad_topic", "misplaced wildcard")


def _put_str(buf, pos, b):
    n = len(b)
    buf[pos] = n >> 8
    buf[pos + 1] = n & 0xFF
    buf[pos + 2 : pos + 2 + n] = b
    return pos + 2 + n


def _check_pid(pid):
    # [MQTT-2.3.1-1]: packet identifiers are non-zero 16-bit values.
    if not 0 < pid < 65536:
        raise MqttError("mqtt.bad_argument", "packet id %d" % pid)


def _check_qos(qos):
    if qos != 0 and qos != 1:
        raise MqttError("mqtt.bad_argument", "qos %r (0 or 1 supported)" % (qos,))


def _alloc(ptype_byte, rem):
    buf = bytearray(1 + varint_size(rem) + rem)
    buf[0] = ptype_byte
    return buf, _put_varint(buf, 1, rem)


def encode_connect(
    client_id,
    keepalive=60,
    clean_session=True,
    will_topic=None,
    will_payload=b"",
    will_qos=0,
    will_retain=False,
    username=None,
    password=None,
):
    """CONNECT [§3.1] for protocol level 4 (3.1.1)."""
    if not 0 <= keepalive <= 65535:  # [MQTT-3.1.2-24] 16-bit seconds
        raise MqttError("mqtt.bad_argument", "keepalive")
    cid = _utf8(client_id, "client id")
    if not cid and not clean_session:
        # [MQTT-3.1.3-7]: a zero-byte client id requires CleanSession=1.
        raise MqttError("mqtt.bad_argument", "empty client id needs clean_session")
    flags = 0x02 if clean_session else 0  # [MQTT-3.1.2-4..6]
    rem = 10 + 2 + len(cid)
    if will_topic is not None:
        _check_qos(will_qos)
        wt = _utf8(will_topic, "will topic")
        check_topic_name(wt)
        wp = bytes(will_payload)
        if len(wp) > 65535:  # §3.1.3.3: Will Message has a 2-byte length
            raise MqttError("mqtt.bad_argument", "will payload over 65535 bytes")
        # [MQTT-3.1.2-8, 3.1.2-14, 3.1.2-15]: Will flag, Will QoS, Will retain.
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        rem += 4 + len(wt) + len(wp)
    if username is not None:
        un = _utf8(username, "username")
        flags |= 0x80  # [MQTT-3.1.2-19]
        rem += 2 + len(un)
    if password is not None:
        if username is None:  # [MQTT-3.1.2-22]
            raise MqttError("mqtt.bad_argument", "password without username")
        pw = bytes(password)
        flags |= 0x40
        rem += 2 + len(pw)
    buf, pos = _alloc(0x10, rem)
    # Variable header [§3.1.2]: protocol name "MQTT", level 4, flags, keepalive.
    buf[pos : pos + 7] = b"\x00\x04MQTT\x04"
    buf[pos + 7] = flags
    buf[pos + 8] = keepalive >> 8
    buf[pos + 9] = keepalive & 0xFF
    pos += 10
    # Payload order is fixed [MQTT-3.1.3-1]: id, will topic, will message, username, password.
    pos = _put_str(buf, pos, cid)
    if will_topic is not None:
        pos = _put_str(buf, pos, wt)
        pos = _put_str(buf, pos, wp)
    if username is not None:
        pos = _put_str(buf, pos, un)
    if password is not None:
        pos = _put_str(buf, pos, pw)
    return buf


def encode_publish(topic, payload, qos=0, retain=False, dup=False, pid=0):
    """PUBLISH [§3.3] as one bytearray (kept as is in the in-flight window for resends)."""
    _check_qos(qos)
    if qos:
        _check_pid(pid)
    elif dup:
        raise MqttError("mqtt.bad_argument", "dup with qos 0")  # [MQTT-3.3.1-2]
    t = _utf8(topic, "topic")
    check_topic_name(t)
    rem = 2 + len(t) + (2 if qos else 0) + len(payload)
    first = 0x30 | (qos << 1) | (_FLAG_DUP if dup else 0) | (_FLAG_RETAIN if retain else 0)
    buf, pos = _alloc(first, rem)
    pos = _put_str(buf, pos, t)
    if qos:
        buf[pos] = pid >> 8
        buf[pos + 1] = pid & 0xFF
        pos += 2
    buf[pos:] = payload
    return buf


def set_dup(packet):
    """Mark an encoded QoS 1 PUBLISH as a redelivery, in place [MQTT-3.3.1-1]."""
    packet[0] |= _FLAG_DUP


def encode_puback(pid):
    """PUBACK [§3.4]: fixed header 0x40, length 2, packet id."""
    _check_pid(pid)
    return bytes((0x40, 2, pid >> 8, pid & 0xFF))


def encode_subscribe(pid, topics):
    """SUBSCRIBE [§3.8] for a sequence of ``(filter, qos)``; at least one [MQTT-3.8.3-3]."""
    _check_pid(pid)
    if not topics:
        raise MqttError("mqtt.bad_argument", "no topic filters")
    rem = 2
    enc = []
    for f, qos in topics:
        _check_qos(qos)
        b = _utf8(f, "topic filter")
        check_topic_filter(b)
        enc.append(b)
        rem += 3 + len(b)
    buf, pos = _alloc(0x82, rem)  # [MQTT-3.8.1-1]: flags must be 0010
    buf[pos] = pid >> 8
    buf[pos + 1] = pid & 0xFF
    pos += 2
    for i in range(len(enc)):
        pos = _put_str(buf, pos, enc[i])
        buf[pos] = topics[i][1]
        pos += 1
    return buf


# --- Incremental decoder ----------------------------------------------------------------------

_ST_TYPE = const(0)
_ST_LEN = const(1)
_ST_FILL = const(2)

_PH_BODY = const(0)  # whole body of a non-PUBLISH packet
_PH_TOPIC_LEN = const(1)  # PUBLISH: 2-byte topic length
_PH_VAR_HDR = const(2)  # PUBLISH: topic (+ packet id)
_PH_PAYLOAD = const(3)  # PUBLISH: payload


class Decoder:
    """Turns a byte stream from the broker into packets, one at a time.

    Packets are tuples, first item the type:
      ``(CONNACK, session_present, return_code)``
      ``(PUBLISH, topic_str, payload_bytearray, qos, retain, dup, pid)`` (pid 0 for QoS 0)
      ``(PUBACK, pid)`` / ``(UNSUBACK, pid)``
      ``(SUBACK, pid, return_codes_bytes)``
      ``(PINGRESP,)``
    After an :class:`MqttError` the stream cannot be resynchronised: the connection must be
    dropped [§4.8] and :meth:`reset` called before the next one.
    """

    def __init__(self, max_packet=DEFAULT_MAX_PACKET):
        self.max_packet = max_packet
        self._scratch = bytearray(2)  # 2-byte bodies and PUBLISH topic lengths land here
        self.reset()

    def reset(self):
        self._st = _ST_TYPE
        self._first = 0
        self._rem = 0
        self._shift = 0
        self._nlen = 0
        self._buf = self._scratch
        self._need = 0
        self._got = 0
        self._phase = _PH_BODY
        self._topic = None
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
                self._type_byte(mv[i])
                i += 1
            elif st == _ST_LEN:
                b = mv[i]
                i += 1
                self._rem |= (b & 0x7F) << self._shift
                self._nlen += 1
                if b & 0x80:
                    self._shift += 7
                    if self._shift >= 28:
                        raise MqttError("mqtt.malformed", "remaining length over 4 bytes")
                    continue
                if b == 0 and self._nlen > 1:
                    raise MqttError("mqtt.malformed", "overlong remaining length")
                pkt = self._length_done()
                if pkt is not None:
                    return pkt, i
            else:
                k = self._need - self._got
                if k > end - i:
                    k = end - i
                self._buf[self._got : self._got + k] = mv[i : i + k]
                self._got += k
                i += k
                if self._got == self._need:
                    pkt = self._filled()
                    if pkt is not None:
                        return pkt, i
        return None, i

    def _type_byte(self, b):
        t = b >> 4
        flags = b & 0x0F
        if t == PUBLISH:
            qos = (flags >> 1) & 3
            if qos == 3:
                raise MqttError("mqtt.malformed", "PUBLISH qos 3")  # [MQTT-3.3.1-4]
            if qos == 2:
                raise MqttError("mqtt.unexpected", "PUBLISH qos 2 (we subscribe at qos <= 1)")
        elif t in (CONNACK, PUBACK, SUBACK, UNSUBACK, PINGRESP):
            if flags:  # [MQTT-2.2.2-2]: reserved flags must be as in Table 2.2
                raise MqttError("mqtt.malformed", "reserved flags in type %d" % t)
        elif t == 0 or t == 15:
            raise MqttError("mqtt.malformed", "reserved packet type %d" % t)  # §2.2.1
        else:
            raise MqttError("mqtt.unexpected", "packet type %d from server" % t)
        self._first = b
        self._rem = 0
        self._shift = 0
        self._nlen = 0
        self._st = _ST_LEN

    def _fill(self, buf, need, phase):
        self._buf = buf
        self._need = need
        self._got = 0
        self._phase = phase
        self._st = _ST_FILL

    def _length_done(self):
        t = self._first >> 4
        rem = self._rem
        # The size check happens before a single body byte is stored.
        if 1 + self._nlen + rem > self.max_packet:
            raise MqttError("mqtt.too_large", "%d-byte packet, limit %d" % (rem, self.max_packet))
        if t == PINGRESP:
            if rem:
                raise MqttError("mqtt.malformed", "PINGRESP length")  # §3.13
            self._st = _ST_TYPE
            return (PINGRESP,)
        if t == SUBACK:
            if rem < 3:  # packet id + at least one return code [§3.9.3]
                raise MqttError("mqtt.malformed", "SUBACK length")
            self._fill(bytearray(rem), rem, _PH_BODY)
        elif t == PUBLISH:
            # Topic length (2) + topic (>= 1 [MQTT-4.7.3-1]) + packet id if QoS 1.
            if rem < (5 if self._first & 0x06 else 3):
                raise MqttError("mqtt.malformed", "PUBLISH length")
            self._fill(self._scratch, 2, _PH_TOPIC_LEN)
        else:  # CONNACK [§3.2], PUBACK [§3.4], UNSUBACK [§3.11]: exactly 2 bytes
            if rem != 2:
                raise MqttError("mqtt.malformed", "length of type %d" % t)
            self._fill(self._scratch, 2, _PH_BODY)
        return None

    def _filled(self):
        t = self._first >> 4
        buf = self._buf
        ph = self._phase
        if ph == _PH_TOPIC_LEN:
            tl = (buf[0] << 8) | buf[1]
            pidlen = 2 if self._first & 0x06 else 0
            if tl == 0 or 2 + tl + pidlen > self._rem:
                raise MqttError("mqtt.malformed", "PUBLISH topic length")
            self._fill(bytearray(tl + pidlen), tl + pidlen, _PH_VAR_HDR)
            return None
        if ph == _PH_VAR_HDR:
            tl = self._need
            pid = 0
            if self._first & 0x06:
                tl -= 2
                pid = (buf[tl] << 8) | buf[tl + 1]
                if not pid:
                    raise MqttError("mqtt.malformed", "packet id 0")  # [MQTT-2.3.1-1]
            name = buf[:tl] if tl < len(buf) else buf
            try:
                check_topic_name(name)
            except MqttError as e:
                raise MqttError("mqtt.malformed", e.detail) from None
            try:
                self._topic = str(name, "utf-8")  # [MQTT-1.5.3-1]
            except UnicodeError:
                raise MqttError("mqtt.malformed", "topic not UTF-8") from None
            self._pid = pid
            plen = self._rem - 2 - self._need
            self._fill(bytearray(plen), plen, _PH_PAYLOAD)
            if plen:
                return None
            buf = self._buf
            ph = _PH_PAYLOAD
        self._st = _ST_TYPE
        self._buf = self._scratch  # drop our reference to the packet's buffer
        if ph == _PH_PAYLOAD:
            f = self._first
            topic = self._topic
            self._topic = None
            return (PUBLISH, topic, buf, (f >> 1) & 3, f & 1, (f >> 3) & 1, self._pid)
        if t == SUBACK:
            pid = (buf[0] << 8) | buf[1]
            codes = bytes(buf[2:])
            for c in codes:
                if c > 2 and c != SUBACK_FAILURE:  # [MQTT-3.9.3-2]
                    raise MqttError("mqtt.malformed", "SUBACK return code %d" % c)
            return (SUBACK, pid, codes)
        if t == CONNACK:
            sp = buf[0]
            rc = buf[1]
            if sp & 0xFE:  # §3.2.2.1: bits 7-1 reserved, 0
                raise MqttError("mqtt.malformed", "CONNACK flags")
            if rc > _CONNACK_MAX_RC:  # §3.2.2.3: 6-255 reserved
                raise MqttError("mqtt.malformed", "CONNACK return code %d" % rc)
            if rc and sp:  # [MQTT-3.2.2-4]
                raise MqttError("mqtt.malformed", "session present on refusal")
            return (CONNACK, sp, rc)
        pid = (buf[0] << 8) | buf[1]
        if not pid:
            raise MqttError("mqtt.malformed", "packet id 0")  # [MQTT-2.3.1-1]
        return (t, pid)
