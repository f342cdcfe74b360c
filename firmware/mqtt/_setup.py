"""What the MQTT client needs once, when it is made: its TLS context and its CONNECT packet.

firmware/mqtt/client.py ``tls_context`` and firmware/mqtt/codec.py ``encode_connect`` import
this module for one call, and the call forgets the module (``firmware.unload``) before it
returns, the way firmware/boot.py drops its other boot-only code (protocol/_ed25519_setup.py
is the same idea): the running node never reads a certificate file or encodes a CONNECT
again (it resends the bytes it got here on every connect), so this code need not stay in
its heap (docs/firmware.md, "Footprint").
"""

from firmware import unload
from firmware.mqtt.codec import MqttError, _alloc, _check_qos, _check_topic, _field, _put_str


def tls_context(cafile, certfile, keyfile):
    """See :func:`firmware.mqtt.client.tls_context`."""
    import ssl
    from binascii import a2b_base64

    try:
        # MicroPython's mbedTLS builds often leave out the PEM parser (this unix port
        # does): accept PEM files anyway by decoding the first BEGIN/END block to DER.
        der = []
        for path in (cafile, certfile, keyfile):
            data = b""
            if path:
                with open(path, "rb") as f:
                    data = f.read()
                if data.startswith(b"-----BEGIN"):
                    start = data.index(b"\n") + 1
                    data = a2b_base64(data[start : data.index(b"-----END", start)])
            der.append(data)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if certfile:
            ctx.load_cert_chain(der[1], der[2])
        ctx.load_verify_locations(cadata=der[0])
        ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # not in rp2 stubs
        return ctx
    finally:
        unload((__name__,))


def encode_connect(client_id, keepalive, clean_session, will, username, password):
    """See :func:`firmware.mqtt.codec.encode_connect`."""
    try:
        if not 0 <= keepalive <= 65535:  # [MQTT-3.1.2-24] 16-bit seconds
            raise MqttError("mqtt.bad_argument", "keepalive")
        cid = _field(client_id, "client id")
        if not cid and not clean_session:
            # [MQTT-3.1.3-7]: a zero-byte client id requires CleanSession=1.
            raise MqttError("mqtt.bad_argument", "empty client id needs clean_session")
        flags = 0x02 if clean_session else 0  # [MQTT-3.1.2-4..6]
        # Payload order is fixed [MQTT-3.1.3-1]: id, will topic, will message, username, password.
        fields = [cid]
        if will is not None:
            topic, payload, qos, retain = will
            _check_qos(qos)
            topic = _field(topic, "will topic")
            _check_topic(topic, False)
            fields.append(topic)
            fields.append(_field(payload, "will payload"))  # §3.1.3.3: 2-byte length
            # [MQTT-3.1.2-8, 3.1.2-14, 3.1.2-15]: Will flag, Will QoS, Will retain.
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if username is not None:
            fields.append(_field(username, "username"))
            flags |= 0x80  # [MQTT-3.1.2-19]
        if password is not None:
            if username is None:  # [MQTT-3.1.2-22]
                raise MqttError("mqtt.bad_argument", "password without username")
            fields.append(_field(password, "password"))  # §3.1.3.5: binary, 2-byte length
            flags |= 0x40
        rem = 10
        for f in fields:
            rem += 2 + len(f)
        buf, pos = _alloc(0x10, rem)
        # Variable header [§3.1.2]: protocol name "MQTT", level 4, flags, keepalive.
        buf[pos : pos + 7] = b"\x00\x04MQTT\x04"
        buf[pos + 7] = flags
        buf[pos + 8] = keepalive >> 8
        buf[pos + 9] = keepalive & 0xFF
        pos += 10
        for f in fields:
            pos = _put_str(buf, pos, f)
        return buf
    finally:
        unload((__name__,))
