"""The node's asyncio wiring: the step loop, the uplink pump, commands from MQTT.

Three concerns, three tasks:

* the step loop (``run`` itself): every ``step_ms`` the node core moves serial bytes, guards
  the pump and makes telemetry; it also feeds the hardware watchdog, so a hung loop resets
  the board;
* ``_uplink``: sends the oldest outbox packet and removes it only after its PUBACK
  (one in flight keeps the order the gateway's replay window needs);
* the MQTT client's own tasks (connect, keepalive, retransmit, reconnect with backoff);
  commands arrive through ``on_message`` and are executed at once.
"""

import asyncio
import time

from firmware import log


async def _uplink(node, client):
    box = node.outbox
    wake = asyncio.Event()
    node.wake = wake
    while True:
        head = box.peek()
        if head is None:
            wake.clear()
            try:  # woken by the node when it queues a packet; the timeout is a safety net
                await asyncio.wait_for_ms(wake.wait(), 200)
            except asyncio.TimeoutError:
                pass
            continue
        if not client.is_connected():
            await asyncio.sleep_ms(20)
            continue
        kind, packet, _ = head
        pid = await client.publish(node.topics[kind], packet, qos=1)
        await client.wait_acked(pid)
        box.pop()


async def run(node, client, downlink, watchdog, step_ms=10):
    """Hook the node's birth and command handling into the client, start the client and
    the uplink, then run the step loop for good."""

    async def on_connect(session_present):
        log.info("connected to broker (session present: %d)" % session_present)
        node.birth(time.ticks_ms())

    def on_message(topic, payload, retain, dup):
        if topic != downlink:
            return
        node.on_command(payload, time.ticks_ms())

    client.on_connect = on_connect
    client.on_message = on_message
    client.subscribe(downlink, 1)
    asyncio.create_task(client.run())
    asyncio.create_task(_uplink(node, client))
    while True:
        node.step(time.ticks_ms())
        watchdog.feed()
        await asyncio.sleep_ms(step_ms)
