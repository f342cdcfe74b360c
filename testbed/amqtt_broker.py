"""The demo's embedded broker: amqtt (pure Python, asyncio) in a background thread.

For ``ivgw demo`` only: no root, no packages, no service. It speaks MQTT 3.1.1 only and
carries about 1,000 QoS 1 messages/s (platform.md) - plenty for a few chairs, never for
production or load tests, where Mosquitto is used (testbed/mosquitto.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from testbed.mosquitto import _accepts, free_port


class AmqttBroker:
    host = "127.0.0.1"
    mqtt_protocol = "3.1.1"

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_path = str(self.dir / "amqtt.log")
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 15.0) -> None:
        from amqtt.broker import Broker

        self.port = free_port()
        handler = logging.FileHandler(self.log_path)
        logging.getLogger("amqtt").addHandler(handler)
        logging.getLogger("amqtt").propagate = False
        config = {"listeners": {"default": {"type": "tcp",
                                            "bind": "%s:%d" % (self.host, self.port)}},
                  "auth": {"allow-anonymous": True}, "sys_interval": 0}

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                self._broker = Broker(config, loop=loop)
                loop.run_until_complete(self._broker.start())
            except BaseException as e:  # noqa: BLE001 - reported to start()
                self._error = e
                self._ready.set()
                return
            self._ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None:
            raise RuntimeError("embedded MQTT broker failed to start: %s" % self._error)
        deadline = time.monotonic() + timeout
        while not _accepts(self.host, self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("embedded MQTT broker is not accepting connections")
            time.sleep(0.05)

    def close(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is not None and broker is not None and loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
            try:
                fut.result(10)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    stop = close
