"""Asyncio MQTT 3.1.1 client for the node: the connectivity layer.

Framing lives in :mod:`firmware.mqtt.codec`; this module owns the socket (plain TCP or TLS
with a client certificate), the timers and the reconnect loop. Structure follows Peter Hinch's
``mqtt_as``, with two deliberate differences:

* Reconnects use exponential backoff with random jitter (``backoff_min_ms`` doubling to
  ``backoff_max_ms``), not a fixed loop, so a clinic full of nodes does not stampede a broker
  that has just come back.
* A QoS 1 message is never dropped. ``publish()`` waits for room in a bounded in-flight window
  instead of discarding the oldest entry; an entry leaves the window only on its PUBACK, and is
  resent with DUP=1 on every reconnect [MQTT-4.4.0-1] and after ``ack_timeout_ms``. The layer
  above (store-and-forward) keeps its own bounded buffer and deletes a record only when
  ``on_puback(pid)`` fires or ``wait_acked(pid)`` returns; the client keeps no unbounded queue.

Session choice: ``clean_session=False`` with a fixed client id (the default). The broker then
keeps our subscription and queues QoS 1 downlink while the node is briefly away, and the QoS 1
uplink retransmitted after a reconnect completes the original exchange [§4.1, MQTT-3.1.2-4].
Subscriptions are re-sent on every connect anyway, because a broker restarted without
persistence has forgotten the session (CONNACK session present = 0).

Only one task, the sender, ever writes to the socket. ``publish()`` and friends only touch
in-memory state, so an application task can never hang in a write on a dead link; the
supervisor cancels the connection's tasks when the link dies.

Usage::

    c = MQTTClient("node-7", "gw.local", 8883, ssl=tls_context(ca, cert, key),
                   will=("clinic/node-7/status", b"\\xa0", 1, True), on_connect=birth)
    asyncio.create_task(c.run())
    pid = await c.publish("clinic/node-7/data", cose_bytes)   # in the window
    await c.wait_acked(pid)                                       # PUBACK received
"""

import asyncio
from time import ticks_diff, ticks_ms

from firmware.mqtt import codec
from protocol._const import const

# MQTT numbers from firmware/mqtt/codec.py, as folded private copies: each imported name
# would be one more global on the node's heap (tests/test_const_copies.py checks them).
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_SUBACK = const(9)
_SUBACK_FAILURE = const(0x80)
_DEFAULT_MAX_PACKET = const(4096)

# Connection states (``client.state``).
STATE_IDLE = const(0)  # constructed; run() not started
STATE_CONNECTING = const(1)  # TCP/TLS connect + CONNECT/CONNACK in progress
STATE_CONNECTED = const(2)  # CONNACK accepted; the session is live
STATE_BACKOFF = const(3)  # link down; waiting before the next attempt
STATE_CLOSED = const(4)  # close() finished; run() has returned

_RBUF = const(128)  # socket read chunk; payloads go straight into their own buffer
_MAX_TICK_MS = const(250)  # supervisor period cap
_MAX_PUBACKS = const(16)  # pending PUBACKs before the reader waits for the sender
_STABLE_MS = const(30000)  # a link up this long resets the backoff
_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)


def _nodelay(stream):
    """TCP_NODELAY: a small packet (a stop's ack, an alarm) must not wait for the ACK of
    the previous one under Nagle's algorithm, which the peer may delay ~40 ms. Best effort:
    TLS streams and some ports do not expose the socket."""
    sock = getattr(stream, "s", None)
    if sock is None:
        return
    try:
        sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
    except (AttributeError, OSError, TypeError):
        pass


def _rand16():
    # Jitter must differ between nodes booted together: use the OS RNG where there is one.
    try:
        from os import urandom

        b = urandom(2)
        return (b[0] << 8) | b[1]
    except (ImportError, AttributeError, OSError):
        from random import getrandbits

        return getrandbits(16)


def backoff_delay_ms(attempt, lo_ms, hi_ms, r16):
    """Delay before retry ``attempt`` (0-based): "equal jitter" in [d/2, d], d = lo * 2**n.

    Half the delay is fixed so retries never collapse to zero; the other half is spread by
    ``r16`` (a random 16-bit value) so nodes that lost the broker together come back apart.
    """
    d = lo_ms
    while attempt > 0 and d < hi_ms:
        d <<= 1
        attempt -= 1
    if d > hi_ms:
        d = hi_ms
    return d // 2 + (d // 2) * r16 // 65535


def _der(path):
    # MicroPython's mbedTLS builds often leave out the PEM parser (this unix port does):
    # accept PEM files anyway by decoding the first BEGIN/END block to DER ourselves.
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"-----BEGIN"):
        return data
    from binascii import a2b_base64

    start = data.index(b"\n") + 1
    return a2b_base64(data[start : data.index(b"-----END", start)])


def tls_context(cafile, certfile=None, keyfile=None):
    """A client SSLContext that verifies the broker against ``cafile`` (one CA certificate)
    and, when given, presents ``certfile``/``keyfile`` for mutual TLS. Files may be PEM or
    DER. Pass ``server_hostname`` to :class:`MQTTClient` for the name to verify."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if certfile:
        ctx.load_cert_chain(_der(certfile), _der(keyfile))
    ctx.load_verify_locations(cadata=_der(cafile))
    ctx.verify_mode = ssl.CERT_REQUIRED  # type: ignore[attr-defined]  # not in the rp2 stubs
    return ctx


class MQTTClient:
    def __init__(
        self,
        client_id,
        host,
        port=1883,
        keepalive=60,
        clean_session=False,
        will=None,
        username=None,
        password=None,
        ssl=None,
        server_hostname=None,
        window=4,
        ack_timeout_ms=10000,
        connect_timeout_ms=10000,
        backoff_min_ms=500,
        backoff_max_ms=30000,
        max_packet=_DEFAULT_MAX_PACKET,
        on_connect=None,
        on_message=None,
        on_puback=None,
        on_disconnect=None,
        on_backoff=None,
        inbox=4,
    ):
        """``will``: ``(topic, payload, qos, retain)`` or None. ``ssl``: an SSLContext (see
        :func:`tls_context`) or None. ``window``: QoS 1 messages in flight at once.

        Callbacks: ``async on_connect(session_present)`` runs once per connection after the
        subscriptions are acknowledged (publish the birth message there). Plain functions,
        called from the client's tasks (keep them short): ``on_message(topic, payload,
        retain, dup)`` (payload is a bytearray), ``on_puback(pid)``, ``on_disconnect(reason)``
        and ``on_backoff(retry_index, delay_ms)``. Without ``on_message``, incoming messages
        wait in a bounded inbox of ``inbox`` entries, read with :meth:`recv`; when it is full
        the client stops reading the socket rather than drop one.
        """
        if will is not None:
            wt, wp, wq, wr = will
            self._connect_pkt = codec.encode_connect(
                client_id, keepalive, clean_session, wt, wp, wq, wr, username, password
            )
        else:
            self._connect_pkt = codec.encode_connect(
                client_id, keepalive, clean_session, None, b"", 0, False, username, password
            )
        self.client_id = client_id
        self.host = host
        self.port = port
        self._ssl = ssl
        self._server_hostname = server_hostname
        self._ka_ms = keepalive * 1000
        self._window = window
        self._ack_ms = ack_timeout_ms
        self._connect_ms = connect_timeout_ms
        self._bo_lo = backoff_min_ms
        self._bo_hi = backoff_max_ms
        self._max_packet = max_packet
        self.on_connect = on_connect
        self.on_message = on_message
        self.on_puback = on_puback
        self.on_disconnect = on_disconnect
        self.on_backoff = on_backoff
        self._inbox_max = inbox

        self.state = STATE_IDLE
        # Counters for the node's health report.
        self.connects = 0
        self.disconnects = 0
        self.attempts = 0
        self.backoff_ms = 0  # the last delay chosen before a reconnect attempt
        self.refused = 0
        self.retransmits = 0
        self.pubacks = 0
        self.received = 0
        self.sub_failures = 0
        self.callback_errors = 0
        self.last_error = None

        self._dec = codec.Decoder(max_packet)
        self._rbuf = bytearray(_RBUF)
        self._rmv = memoryview(self._rbuf)
        self._win = []  # [pid, packet, sent_gen, sent_ms]; sent_gen 0 = never, -1 = resend
        self._q0 = []  # QoS 0 packets not yet written
        self._acks = []  # PUBACK pids to send
        self._inbox = []
        self._subs = []  # [filter, qos]
        self._pid = 0
        self._sub_pid = 0
        self._sub_due = False
        self._ping_due = False
        self._disc_due = False
        self._gen = 0
        self._dead = None
        self._ready = False
        self._sp = 0
        self._rx_blocked = False
        self._closing = False
        self._last_rx = ticks_ms()
        self._last_ping = self._last_rx
        self._sub_t = self._last_rx
        self._stream = None  # the connection's StreamReader (also its writer in MicroPython)
        self._writer = None
        self._tasks = []
        self._wake = asyncio.Event()  # sender: something to write
        self._changed = asyncio.Event()  # pulsed: window / inbox / PUBACK queue shrank
        self._close_ev = asyncio.Event()

    # --- application API ----------------------------------------------------------------------

    def is_connected(self):
        return self.state == STATE_CONNECTED

    def in_flight(self):
        """Number of QoS 1 messages awaiting PUBACK."""
        return len(self._win)

    def is_in_flight(self, pid):
        for e in self._win:
            if e[0] == pid:
                return True
        return False

    async def publish(self, topic, payload, qos=1, retain=False):
        """Hand a message to the client; return its packet id (0 for QoS 0).

        Returns once the message is in the in-flight window (QoS 1) or the small QoS 0 queue,
        waiting while the window is full: the caller's own buffer provides the backlog.
        Raises :class:`MqttError` (``mqtt.bad_topic``, ``mqtt.bad_argument``,
        ``mqtt.too_large``) for a message that could never be sent.
        """
        if self._closing:
            raise OSError("client closed")
        # Encode first (validates the topic and size), patch the real packet id in later.
        pkt = codec.encode_publish(topic, payload, qos, retain, False, 1 if qos else 0)
        if len(pkt) > self._max_packet:
            raise codec.MqttError("mqtt.too_large", "%d-byte PUBLISH" % len(pkt))
        q = self._win if qos else self._q0
        while len(q) >= self._window:
            await self._changed.wait()
        if not qos:
            q.append(pkt)
            self._wake.set()
            return 0
        pid = self._next_pid()
        off = len(pkt) - len(payload) - 2  # packet id sits just before the payload [§3.3.2]
        pkt[off] = pid >> 8
        pkt[off + 1] = pid & 0xFF
        q.append([pid, pkt, 0, 0])
        self._wake.set()
        return pid

    async def wait_acked(self, pid):
        """Return once QoS 1 message ``pid`` is no longer in flight (its PUBACK arrived)."""
        while self.is_in_flight(pid):
            await self._changed.wait()

    def subscribe(self, topic_filter, qos=1):
        """Add a subscription; it is (re)sent on every connect, and now if connected."""
        f = topic_filter.encode() if isinstance(topic_filter, str) else topic_filter
        codec.check_topic_filter(f)
        if qos != 0 and qos != 1:
            raise codec.MqttError("mqtt.bad_argument", "qos %r" % (qos,))
        for s in self._subs:
            if s[0] == topic_filter:
                s[1] = qos
                break
        else:
            self._subs.append([topic_filter, qos])
        if self.state == STATE_CONNECTED:
            self._sub_pid = self._next_pid()
            self._sub_due = True
            self._wake.set()

    async def recv(self):
        """Next ``(topic, payload, retain, dup)`` from the inbox (when no ``on_message``)."""
        while not self._inbox:
            await self._changed.wait()
        m = self._inbox.pop(0)
        self._pulse()
        return m

    async def close(self, timeout_ms=2000):
        """Send DISCONNECT (the broker then discards our Will [MQTT-3.14.4-3]) and stop run().

        Unacknowledged messages stay in the window (``in_flight()``); they are the caller's
        to keep or persist.
        """
        self._closing = True
        self._close_ev.set()
        if self.state == STATE_IDLE:
            self.state = STATE_CLOSED
            return
        if self.state == STATE_CONNECTED:
            self._disc_due = True
            self._wake.set()
        t0 = ticks_ms()
        while self.state != STATE_CLOSED:
            if ticks_diff(ticks_ms(), t0) > timeout_ms:
                self._fail("close timeout")
            await asyncio.sleep_ms(20)

    # --- connection loop ----------------------------------------------------------------------

    async def run(self):
        """Connect, keep the session alive, reconnect with backoff; return after close().

        Run it as a task. A closed (or cancelled) client stays closed: make a new one.
        """
        try:
            await self._loop()
        finally:
            self.state = STATE_CLOSED

    async def _loop(self):
        attempt = 0
        while not self._closing:
            self.state = STATE_CONNECTING
            self.attempts += 1
            ack = None
            try:
                ack = await asyncio.wait_for_ms(self._handshake(), self._connect_ms)
            except asyncio.CancelledError:
                await self._drop()
                raise
            except Exception as e:  # noqa: BLE001 - OSError, EOFError, TimeoutError, MqttError
                self.last_error = "connect: " + _describe(e)
            if ack is not None and ack[2]:
                self.refused += 1  # [§3.2.2.3] e.g. 5 = not authorized
                self.last_error = "connect: CONNACK return code %d" % ack[2]
                ack = None
            if ack is None:
                await self._drop()
            else:
                up = ticks_ms()
                self.connects += 1
                self.state = STATE_CONNECTED
                try:
                    reason = await self._session(ack[1])
                except asyncio.CancelledError:
                    await self._drop()
                    raise
                except Exception as e:  # noqa: BLE001 - e.g. MemoryError: reconnect, not die
                    reason = "session: " + _describe(e)
                await self._drop()
                self.disconnects += 1
                if reason != "closed":
                    self.last_error = reason
                if self.on_disconnect is not None:
                    self._safe(self.on_disconnect, reason)
                if ticks_diff(ticks_ms(), up) >= _STABLE_MS:
                    attempt = 0
            if self._closing:
                break
            self.state = STATE_BACKOFF
            delay = backoff_delay_ms(attempt, self._bo_lo, self._bo_hi, _rand16())
            self.backoff_ms = delay
            if self.on_backoff is not None:
                self._safe(self.on_backoff, attempt, delay)
            attempt += 1
            try:
                await asyncio.wait_for_ms(self._close_ev.wait(), delay)
            except asyncio.TimeoutError:
                pass

    async def _handshake(self):
        # [MQTT-3.1.0-1] CONNECT is the first packet; [MQTT-3.2.0-1] CONNACK the first reply.
        self._stream = None
        r, w = await asyncio.open_connection(
            self.host, self.port, ssl=self._ssl, server_hostname=self._server_hostname
        )
        self._stream = r
        self._writer = w
        _nodelay(w)
        w.write(self._connect_pkt)
        await w.drain()
        data = await r.readexactly(4)  # a CONNACK is always exactly 4 bytes [§3.2]
        self._dec.reset()
        pkt, _ = self._dec.feed(data)
        if pkt is None or pkt[0] != _CONNACK:
            raise codec.MqttError("mqtt.unexpected", "first packet is not CONNACK")
        return pkt

    async def _drop(self):
        s = self._stream
        self._stream = None
        self._writer = None
        if s is not None:
            try:
                await s.wait_closed()  # MicroPython closes the socket here
            except Exception:  # noqa: BLE001 - closing a dead socket may fail; it is gone
                pass

    async def _session(self, session_present):
        self._gen += 1
        gen = self._gen
        self._dead = None
        self._acks = []  # PUBACKs owed on the old link: the broker resends those PUBLISHes
        self._ping_due = False
        self._disc_due = self._closing
        self._ready = False
        self._sp = session_present
        self._rx_blocked = False
        now = ticks_ms()
        self._last_rx = now
        self._last_ping = now
        self._dec.reset()
        if self._subs:
            self._sub_pid = self._next_pid()
            self._sub_due = True
        else:
            self._sub_pid = 0
            self._sub_due = False
        self._tasks = [
            asyncio.create_task(self._reader(self._stream)),
            asyncio.create_task(self._sender(self._writer, gen)),
        ]
        if not self._subs:
            self._connected()
        ka = self._ka_ms
        tick = ka // 4 if ka and ka // 4 < _MAX_TICK_MS else _MAX_TICK_MS
        try:
            while self._dead is None:
                await asyncio.sleep_ms(tick)
                now = ticks_ms()
                if ka:
                    # [MQTT-3.1.2-23] we must send something within each keepalive period:
                    # ping every ka/2. [MQTT-3.1.2-24] is the broker's side (1.5 x ka); we
                    # apply the same bound to the broker: silence for 1.5 x ka = dead link.
                    if ticks_diff(now, self._last_ping) >= ka // 2:
                        self._last_ping = now
                        self._ping_due = True
                        self._wake.set()
                    if not self._rx_blocked and ticks_diff(now, self._last_rx) > ka * 3 // 2:
                        self._fail("keepalive timeout")
                        break
                if self._ack_ms:
                    for e in self._win:
                        if e[2] == gen and ticks_diff(now, e[3]) >= self._ack_ms:
                            e[2] = -1  # resend with DUP=1 on this link
                            self._wake.set()
                    # Subscriptions sent at connect but never acknowledged: start over.
                    if not self._ready and not self._sub_due and self._sub_pid:
                        if ticks_diff(now, self._sub_t) >= self._ack_ms:
                            self._fail("SUBACK timeout")
        finally:
            for t in self._tasks:
                t.cancel()
            self._tasks = []
        return self._dead

    def _connected(self):
        # Subscriptions are in place: the application may announce itself (birth message).
        if self._ready:
            return
        self._ready = True
        if self.on_connect is not None:
            self._tasks.append(asyncio.create_task(self._call_on_connect()))

    async def _call_on_connect(self):
        try:
            await self.on_connect(self._sp)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - an application bug must not kill the link
            self.callback_errors += 1
            self.last_error = "on_connect: " + _describe(e)

    def _fail(self, reason):
        if self._dead is None:
            self._dead = reason

    def _pulse(self):
        # Wake every waiter once; Event.wait() does not re-check the flag after waking.
        self._changed.set()
        self._changed.clear()

    def _safe(self, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - an application bug must not kill the link
            self.callback_errors += 1
            self.last_error = "callback: " + _describe(e)

    def _next_pid(self):
        # [MQTT-2.3.1-2..4]: a new message takes an identifier not currently in use.
        pid = self._pid
        while True:
            pid = pid + 1 if pid < 65535 else 1
            if pid != self._sub_pid and not self.is_in_flight(pid):
                self._pid = pid
                return pid

    # --- the connection's tasks ---------------------------------------------------------------

    async def _reader(self, s):
        buf = self._rbuf
        mv = self._rmv
        dec = self._dec
        try:
            while True:
                n = await s.readinto(buf)
                if n is None:  # TLS: a record is not complete yet
                    continue
                if not n:
                    self._fail("closed by broker")
                    return
                self._last_rx = ticks_ms()
                i = 0
                while i < n:
                    pkt, i = dec.feed(mv, i, n)
                    if pkt is not None:
                        await self._dispatch(pkt)
        except Exception as e:  # noqa: BLE001 - OSError, MqttError, even MemoryError
            # Whatever kills this task must end the session: a session without its reader
            # would look alive until the keepalive ran out.
            self._fail("recv: " + _describe(e))

    async def _dispatch(self, pkt):
        t = pkt[0]
        if t == _PUBACK:
            pid = pkt[1]
            win = self._win
            for i in range(len(win)):
                if win[i][0] == pid:
                    win.pop(i)
                    self.pubacks += 1
                    self._pulse()
                    if self.on_puback is not None:
                        self._safe(self.on_puback, pid)
                    break
            # A PUBACK for a pid not in flight is a late duplicate after a resend: ignore.
        elif t == _PUBLISH:
            self.received += 1
            _, topic, payload, qos, retain, dup, pid = pkt
            if self.on_message is not None:
                self._safe(self.on_message, topic, payload, retain, dup)
            else:
                # Bounded inbox: wait (and let TCP push back on the broker) instead of dropping.
                while len(self._inbox) >= self._inbox_max:
                    self._rx_blocked = True
                    await self._changed.wait()
                self._rx_blocked = False
                self._inbox.append((topic, payload, retain, dup))
                self._pulse()
            if qos:
                # [MQTT-4.3.2-2] acknowledge after taking ownership of the message.
                while len(self._acks) >= _MAX_PUBACKS:
                    self._rx_blocked = True
                    await self._changed.wait()
                self._rx_blocked = False
                self._acks.append(pid)
                self._wake.set()
        elif t == _SUBACK:
            if pkt[1] == self._sub_pid:
                self._sub_pid = 0
                for c in pkt[2]:
                    if c == _SUBACK_FAILURE:  # [MQTT-3.9.3] e.g. denied by the broker's ACL
                        self.sub_failures += 1
                        self.last_error = "subscription refused"
                self._connected()
        elif t == _CONNACK:
            raise codec.MqttError("mqtt.unexpected", "second CONNACK")  # [MQTT-3.2.0-1]
        # PINGRESP, UNSUBACK: receiving them already refreshed _last_rx.

    async def _sender(self, s, gen):
        wake = self._wake
        try:
            while True:
                wake.clear()
                pkt = self._next_out(gen)
                while pkt is not None:
                    s.write(pkt)
                    await s.drain()
                    if pkt is codec.DISCONNECT_PACKET:
                        self._fail("closed")
                        return
                    pkt = self._next_out(gen)
                await wake.wait()
        except Exception as e:  # noqa: BLE001 - as in _reader: never leave a half session
            self._fail("send: " + _describe(e))

    def _next_out(self, gen):
        # One packet at a time, most urgent first; state is updated as the packet is chosen.
        if self._acks:
            pid = self._acks.pop(0)
            self._pulse()
            return codec.encode_puback(pid)
        if self._disc_due:
            self._disc_due = False
            return codec.DISCONNECT_PACKET
        if self._ping_due:
            self._ping_due = False
            return codec.PINGREQ_PACKET
        if self._sub_due:
            self._sub_due = False
            self._sub_t = ticks_ms()
            return codec.encode_subscribe(self._sub_pid, self._subs)
        for e in self._win:
            if e[2] != gen:
                if e[2]:  # sent before, on an older link or unacknowledged too long
                    codec.set_dup(e[1])  # [MQTT-3.3.1-1]
                    self.retransmits += 1
                e[2] = gen
                e[3] = ticks_ms()
                return e[1]
        if self._q0:
            pkt = self._q0.pop(0)
            self._pulse()
            return pkt
        return None


def _describe(e):
    r = getattr(e, "reason", None)
    if r:
        return r
    a = getattr(e, "args", None)
    return "%s %s" % (type(e).__name__, a[0] if a else "")
