"""A paho-mqtt (CallbackAPIVersion.VERSION2) peer that records what it receives.

It plays the gateway side in client tests: subscribes (again on every reconnect), collects
messages thread-safely, publishes downlink, and ``close()`` stops its network thread.
"""

import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


class Peer:
    def __init__(
        self, host, port, subscribe=(), client_id="", clean_session=True, tls=None, timeout=10.0
    ):
        self._subs = list(subscribe)
        self.messages = []  # (topic, payload, qos, retain)
        self._cv = threading.Condition()
        self._subscribed = 0
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if tls:
            self.c.tls_set(**tls)
        self.c.on_connect = self._on_connect
        self.c.on_subscribe = self._on_subscribe
        self.c.on_message = self._on_message
        self.c.reconnect_delay_set(0.1, 1)
        self.c.connect(host, port, keepalive=30)
        self.c.loop_start()
        if self._subs:
            self.wait(lambda: self._subscribed > 0, timeout, "paho SUBACK")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if not reason_code.is_failure and self._subs:
            client.subscribe([(t, 1) for t in self._subs])

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._cv:
            self._subscribed += 1
            self._cv.notify_all()

    def _on_message(self, client, userdata, msg):
        with self._cv:
            self.messages.append((msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)))
            self._cv.notify_all()

    def wait(self, predicate, timeout, what):
        """Wait until ``predicate()`` (called under the lock) holds; AssertionError if not."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out waiting for " + what)
                self._cv.wait(min(left, 0.2))

    def payloads(self, topic):
        with self._cv:
            return [m[1] for m in self.messages if m[0] == topic]

    def publish(self, topic, payload, qos=1, timeout=10.0):
        info = self.c.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout)
        assert info.is_published(), "paho publish to %s not acknowledged" % topic

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()
