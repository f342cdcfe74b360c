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
from protocol import const

# MQTT numbers from firmware/mqtt/codec.py, as folded private copies: each imported name
# would be one more global on the node's heap (tests/test_const_copies.py checks them).
_CONNACK = const(2)
_PUBLISH = const(3)
_PUBACK = const(4)
_SUBACK = const(9)
_SUBACK_FAILURE = const(0x80)
_DEFAULT_MAX_PACKET = const(4096)
_FLAG_DUP = const(0x08)  # PUBLISH first byte: a redelivery [MQTT-3.3.1-1]

# Connection states (``client.state``); private constants, folded into the bytecode.
_STATE_IDLE = const(0)  # constructed; run() not started
_STATE_CONNECTING = const(1)  # TCP/TLS connect + CONNECT/CONNACK in progress
_STATE_CONNECTED = const(2)  # CONNACK accepted; the session is live
_STATE_BACKOFF = const(3)  # link down; waiting before the next attempt
_STATE_CLOSED = const(4)  # close() finished; run() has returned

# Control packets the sender owes the broker (bits of ``_due``), besides PUBACKs and PUBLISHes.
_DUE_SUB = const(1)  # SUBSCRIBE (all subscriptions, packet id ``_sub_pid``)
_DUE_PING = const(2)  # PINGREQ
_DUE_DISC = const(4)  # DISCONNECT, then the session ends

_RBUF = const(128)  # socket read chunk; payloads go straight into their own buffer
_MAX_TICK_MS = const(250)  # supervisor period cap
_MAX_PUBACKS = const(16)  # pending PUBACKs before the reader waits for the sender
_STABLE_MS = const(30000)  # a link up this long resets the backoff
_IPPROTO_TCP = const(6)
_TCP_NODELAY = const(1)


def tls_context(cafile, certfile=None, keyfile=None):
    """A client SSLContext that verifies the broker against ``cafile`` (one CA certificate)
    and, when given, presents ``certfile``/``keyfile`` for mutual TLS. Files may be PEM or
    DER. Pass ``server_hostname`` to :class:`MQTTClient` for the name to verify.

    The work is done by firmware/mqtt/_setup.py, loaded for the call and unloaded after it:
    the node builds its context once, at boot."""
    from firmware.mqtt import _setup

    return _setup.tls_context(cafile, certfile, keyfile)


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
    ):
        """``will``: ``(topic, payload, qos, retain)`` or None. ``ssl``: an SSLContext (see
        :func:`tls_context`) or None. ``window``: QoS 1 messages in flight at once.
        ``max_packet`` bounds packets both ways (a larger PUBLISH raises ``mqtt.too_large``).

        Callbacks: ``async on_connect(session_present)`` runs once per connection after the
        subscriptions are acknowledged (publish the birth message there). Plain functions,
        called from the client's tasks (keep them short): ``on_message(topic, payload,
        retain, dup)`` (payload is a bytearray), ``on_puback(pid)``, ``on_disconnect(reason)``
        and ``on_backoff(retry_index, delay_ms)``. Set ``on_message`` before subscribing:
        a message that arrives without one is acknowledged and dropped (it still counts in
        ``received``). There is no inbox: the node handles each command as it arrives, and
        a queue here would be one more buffer to bound.
        """
        # Footprint (docs/firmware.md): every attribute is a slot in this instance's
        # dictionary and every distinct name a qstr, so the configuration is kept as the
        # sender needs it (the encoded CONNECT, one address tuple) and timers the supervisor
        # alone uses are its local variables.
        self._connect_pkt = codec.encode_connect(
            client_id, keepalive, clean_session, will, username, password
        )
        self._addr = (host, port, ssl, server_hostname)
        self._ka_ms = keepalive * 1000
        self._window = window
        self._ack_ms = ack_timeout_ms
        self._connect_ms = connect_timeout_ms
        self._bo_lo = backoff_min_ms
        self._bo_hi = backoff_max_ms
        self.on_connect = on_connect
        self.on_message = on_message
        self.on_puback = on_puback
        self.on_disconnect = on_disconnect
        self.on_backoff = on_backoff

        self.state = _STATE_IDLE
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

        self._dec = codec.Decoder(max_packet)  # its max_packet also bounds what we send
        self._rbuf = memoryview(bytearray(_RBUF))  # one read buffer for every connection
        self._win = []  # [pid, packet, sent_gen, sent_ms]; sent_gen 0 = never, -1 = resend
        self._q0 = []  # QoS 0 packets not yet written
        self._acks = []  # PUBACK pids to send
        self._subs = []  # [filter, qos]
        self._pid = 0
        self._sub_pid = 0  # the SUBSCRIBE awaiting its SUBACK (0: none)
        self._due = 0  # _DUE_* bits
        self._gen = 0  # connection number: which link a window entry was last sent on
        self._dead = None  # why the current session ended: the first reason set wins
        self._rx_blocked = False  # the reader waits for room: not a silent broker
        self._last_rx = ticks_ms()
        self._stream = None  # the connection's Stream (reader and writer in MicroPython)
        self._wake = asyncio.Event()  # sender: something to write
        # Pulsed (set, then clear at once: Event.wait() does not re-check the flag after
        # waking, so every waiter wakes once) when the window, the QoS 0 queue or the PUBACK
        # queue shrank, or a SUBACK arrived.
        self._changed = asyncio.Event()
        self._close_ev = asyncio.Event()  # set by close(): the client is closing

    # --- application API ----------------------------------------------------------------------

    def is_connected(self):
        return self.state == _STATE_CONNECTED

    def in_flight(self):
        """Number of QoS 1 messages awaiting PUBACK."""
        return len(self._win)

    async def publish(self, topic, payload, qos=1, retain=False):
        """Hand a message to the client; return its packet id (0 for QoS 0).

        Returns once the message is in the in-flight window (QoS 1) or the small QoS 0 queue,
        waiting while the window is full: the caller's own buffer provides the backlog.
        Raises :class:`MqttError` (``mqtt.bad_topic``, ``mqtt.bad_argument``,
        ``mqtt.too_large``) for a message that could never be sent.
        """
        if self._close_ev.is_set():
            raise OSError("client closed")
        # Encode first (validates the topic, QoS and size); packet id 1 (QoS 1) or none
        # (QoS 0) for now, the real id is patched in below.
        pkt = codec.encode_publish(topic, payload, qos, retain, False, qos, self._dec.max_packet)
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
        while True:
            for e in self._win:
                if e[0] == pid:
                    break
            else:
                return
            await self._changed.wait()

    def subscribe(self, topic_filter, qos=1):
        """Add a subscription; it is (re)sent on every connect, and now if connected."""
        # Validate the filter and QoS the way they will be sent (raises MqttError).
        codec.encode_subscribe(1, ((topic_filter, qos),))
        for s in self._subs:
            if s[0] == topic_filter:
                s[1] = qos
                break
        else:
            self._subs.append([topic_filter, qos])
        if self.state == _STATE_CONNECTED:
            self._sub_pid = self._next_pid()
            self._due |= _DUE_SUB
            self._wake.set()

    async def close(self, timeout_ms=2000):
        """Send DISCONNECT (the broker then discards our Will [MQTT-3.14.4-3]) and stop run().

        Unacknowledged messages stay in the window (``in_flight()``); they are the caller's
        to keep or persist.
        """
        self._close_ev.set()
        if self.state == _STATE_IDLE:
            self.state = _STATE_CLOSED
            return
        if self.state == _STATE_CONNECTED:
            self._due |= _DUE_DISC
            self._wake.set()
        t0 = ticks_ms()
        while self.state != _STATE_CLOSED:
            if ticks_diff(ticks_ms(), t0) > timeout_ms:
                if self._dead is None:  # the first reason wins
                    self._dead = "close timeout"
            await asyncio.sleep_ms(20)

    # --- connection loop ----------------------------------------------------------------------

    async def run(self):
        """Connect, keep the session alive, reconnect with backoff; return after close().

        Run it as a task. A closed (or cancelled) client stays closed: make a new one.
        """
        closing = self._close_ev
        attempt = 0
        try:
            while not closing.is_set():
                self.state = _STATE_CONNECTING
                self.attempts += 1
                reason = None
                ack = None
                try:
                    try:
                        ack = await asyncio.wait_for_ms(self._handshake(), self._connect_ms)
                    except Exception as e:  # noqa: BLE001 - OSError, EOFError, TimeoutError, MqttError
                        self.last_error = _describe("connect", e)
                    if ack is not None and ack[2]:
                        self.refused += 1  # [§3.2.2.3] e.g. 5 = not authorized
                        self.last_error = "connect: CONNACK return code %d" % ack[2]
                    elif ack is not None:
                        up = ticks_ms()
                        self.connects += 1
                        self.state = _STATE_CONNECTED
                        try:
                            reason = await self._session(ack[1])
                        except Exception as e:  # noqa: BLE001 - e.g. MemoryError: reconnect, not die
                            reason = _describe("session", e)
                finally:
                    # Also when cancelled: MicroPython closes the socket in wait_closed().
                    s = self._stream
                    self._stream = None
                    if s is not None:
                        try:
                            await s.wait_closed()
                        except Exception:  # noqa: BLE001 - closing a dead socket may fail; it is gone
                            pass
                if reason is not None:
                    self.disconnects += 1
                    if reason != "closed":
                        self.last_error = reason
                    if self.on_disconnect is not None:
                        self._safe(self.on_disconnect, reason)
                    if ticks_diff(ticks_ms(), up) >= _STABLE_MS:
                        attempt = 0
                if closing.is_set():
                    break
                # Backoff: "equal jitter" in [d/2, d], d = backoff_min_ms * 2**attempt capped at
                # backoff_max_ms. Half the delay is fixed so retries never collapse to zero;
                # the other half is random so nodes that lost the broker together come back
                # apart (a clinic full of nodes must not stampede a broker that just came back).
                self.state = _STATE_BACKOFF
                d = self._bo_lo
                k = attempt
                while k > 0 and d < self._bo_hi:
                    d <<= 1
                    k -= 1
                if d > self._bo_hi:
                    d = self._bo_hi
                # Jitter must differ between nodes booted together: the OS RNG where there is one.
                try:
                    from os import urandom

                    b = urandom(2)
                    r = (b[0] << 8) | b[1]
                except (ImportError, AttributeError, OSError):
                    from random import getrandbits

                    r = getrandbits(16)
                d = d // 2 + (d // 2) * r // 65535
                self.backoff_ms = d
                if self.on_backoff is not None:
                    self._safe(self.on_backoff, attempt, d)
                attempt += 1
                try:
                    await asyncio.wait_for_ms(closing.wait(), d)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.state = _STATE_CLOSED

    async def _handshake(self):
        # [MQTT-3.1.0-1] CONNECT is the first packet. [MQTT-3.2.0-1] CONNACK is the first reply:
        # the decoder, reset for the new stream, refuses anything else first (and any later
        # CONNACK), so a packet it returns here is the CONNACK.
        host, port, ssl, sni = self._addr
        r, w = await asyncio.open_connection(host, port, ssl=ssl, server_hostname=sni)
        self._stream = w  # MicroPython's open_connection returns one Stream twice
        # TCP_NODELAY: a small packet (a stop's ack, an alarm) must not wait for the ACK of
        # the previous one under Nagle's algorithm, which the peer may delay ~40 ms. Best
        # effort: TLS streams and some ports do not expose the socket.
        sock = getattr(w, "s", None)
        if sock is not None:
            try:
                sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
            except (AttributeError, OSError, TypeError):
                pass
        w.write(self._connect_pkt)
        await w.drain()
        dec = self._dec
        dec.reset()
        # A CONNACK is always exactly 4 bytes [§3.2]: the decoder returns it or raises.
        return dec.feed(await r.readexactly(4))[0]

    async def _session(self, session_present):
        self._gen += 1
        gen = self._gen
        self._dead = None
        self._acks = []  # PUBACKs owed on the old link: the broker resends those PUBLISHes
        self._due = _DUE_DISC if self._close_ev.is_set() else 0
        self._rx_blocked = False
        now = ticks_ms()
        self._last_rx = now
        last_ping = sub_t = now
        # The decoder stays as the handshake left it: just after the CONNACK.
        self._sub_pid = 0
        if self._subs:
            self._sub_pid = self._next_pid()
            self._due |= _DUE_SUB
        s = self._stream
        tasks = [
            asyncio.create_task(self._reader(s)),
            asyncio.create_task(self._sender(s, gen)),
        ]
        if self.on_connect is not None:
            tasks.append(asyncio.create_task(self._call_on_connect(session_present)))
        ka = self._ka_ms
        ack_ms = self._ack_ms
        tick = ka // 4 if ka and ka // 4 < _MAX_TICK_MS else _MAX_TICK_MS
        try:
            while self._dead is None:
                await asyncio.sleep_ms(tick)
                now = ticks_ms()
                if ka:
                    # [MQTT-3.1.2-23] we must send something within each keepalive period:
                    # ping every ka/2. [MQTT-3.1.2-24] is the broker's side (1.5 x ka); we
                    # apply the same bound to the broker: silence for 1.5 x ka = dead link.
                    if ticks_diff(now, last_ping) >= ka // 2:
                        last_ping = now
                        self._due |= _DUE_PING
                        self._wake.set()
                    if not self._rx_blocked and ticks_diff(now, self._last_rx) > ka * 3 // 2:
                        if self._dead is None:  # the first reason wins
                            self._dead = "keepalive timeout"
                        break
                if ack_ms:
                    for e in self._win:
                        if e[2] == gen and ticks_diff(now, e[3]) >= ack_ms:
                            e[2] = -1  # resend with DUP=1 on this link
                            self._wake.set()
                    # A SUBSCRIBE sent but never acknowledged: start over. sub_t is the last
                    # tick none was outstanding, so the wait is measured to within one tick.
                    if not self._sub_pid or self._due & _DUE_SUB:
                        sub_t = now
                    elif ticks_diff(now, sub_t) >= ack_ms:
                        if self._dead is None:  # the first reason wins
                            self._dead = "SUBACK timeout"
        finally:
            for t in tasks:
                t.cancel()
        return self._dead

    async def _call_on_connect(self, session_present):
        # The application announces itself (birth message) once the subscriptions are in
        # place: a SUBACK clears _sub_pid and pulses _changed.
        try:
            while self._sub_pid:
                await self._changed.wait()
            await self.on_connect(session_present)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - an application bug must not kill the link
            self.callback_errors += 1
            self.last_error = _describe("on_connect", e)

    def _safe(self, fn, *args):
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 - an application bug must not kill the link
            self.callback_errors += 1
            self.last_error = _describe("callback", e)

    def _next_pid(self):
        # [MQTT-2.3.1-2..4]: a new message takes an identifier not currently in use.
        pid = self._pid
        while True:
            pid = pid + 1 if pid < 65535 else 1
            if pid != self._sub_pid:
                for e in self._win:
                    if e[0] == pid:
                        break
                else:
                    self._pid = pid
                    return pid

    # --- the connection's tasks ---------------------------------------------------------------

    async def _reader(self, s):
        mv = self._rbuf
        dec = self._dec
        try:
            while True:
                n = await s.readinto(mv)
                if n is None:  # TLS: a record is not complete yet
                    continue
                if not n:
                    if self._dead is None:  # the first reason wins
                        self._dead = "closed by broker"
                    return
                self._last_rx = ticks_ms()
                i = 0
                while i < n:
                    pkt, i = dec.feed(mv, i, n)
                    if pkt is None:
                        continue
                    t = pkt[0]
                    if t == _PUBACK:
                        pid = pkt[1]
                        win = self._win
                        for k in range(len(win)):
                            if win[k][0] == pid:
                                win.pop(k)
                                self.pubacks += 1
                                self._changed.set()  # pulse
                                self._changed.clear()
                                if self.on_puback is not None:
                                    self._safe(self.on_puback, pid)
                                break
                        # A PUBACK for a pid not in flight is a late duplicate after a
                        # resend: ignore it.
                    elif t == _PUBLISH:
                        self.received += 1
                        _, topic, payload, qos, retain, dup, pid = pkt
                        if self.on_message is not None:
                            self._safe(self.on_message, topic, payload, retain, dup)
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
                                if c == _SUBACK_FAILURE:  # [MQTT-3.9.3] e.g. denied by the ACL
                                    self.sub_failures += 1
                                    self.last_error = "subscription refused"
                            self._changed.set()  # pulse: on_connect may run now
                            self._changed.clear()
                    # PINGRESP, UNSUBACK: receiving them already refreshed _last_rx. A second
                    # CONNACK never gets here: the decoder refuses it [MQTT-3.2.0-1].
        except Exception as e:  # noqa: BLE001 - OSError, MqttError, even MemoryError
            # Whatever kills this task must end the session: a session without its reader
            # would look alive until the keepalive ran out.
            if self._dead is None:  # the first reason wins
                self._dead = _describe("recv", e)

    async def _sender(self, s, gen):
        # One packet at a time, most urgent first; state is updated as the packet is chosen.
        wake = self._wake
        try:
            while True:
                wake.clear()
                while True:
                    due = self._due
                    pkt = None
                    if self._acks:
                        pkt = codec.encode_puback(self._acks.pop(0))
                        self._changed.set()  # pulse
                        self._changed.clear()
                    elif due & _DUE_DISC:
                        pkt = codec.DISCONNECT_PACKET
                    elif due & _DUE_PING:
                        self._due = due & ~_DUE_PING
                        pkt = codec.PINGREQ_PACKET
                    elif due & _DUE_SUB:
                        self._due = due & ~_DUE_SUB
                        pkt = codec.encode_subscribe(self._sub_pid, self._subs)
                    else:
                        for e in self._win:
                            if e[2] != gen:
                                if e[2]:  # sent before, on an older link or unacked too long
                                    e[1][0] |= _FLAG_DUP  # [MQTT-3.3.1-1]
                                    self.retransmits += 1
                                e[2] = gen
                                e[3] = ticks_ms()
                                pkt = e[1]
                                break
                        else:
                            if self._q0:
                                pkt = self._q0.pop(0)
                                self._changed.set()  # pulse
                                self._changed.clear()
                    if pkt is None:
                        break
                    s.write(pkt)
                    await s.drain()
                    if pkt is codec.DISCONNECT_PACKET:
                        if self._dead is None:  # the first reason wins
                            self._dead = "closed"
                        return
                await wake.wait()
        except Exception as e:  # noqa: BLE001 - as in _reader: never leave a half session
            if self._dead is None:  # the first reason wins
                self._dead = _describe("send", e)


def _describe(where, e):
    # "where: reason" for a ProtocolError (its stable code), else "where: Type message".
    r = getattr(e, "reason", None)
    if not r:
        a = getattr(e, "args", None)
        r = "%s %s" % (type(e).__name__, a[0] if a else "")
    return where + ": " + r
