"""MicroPython driver for tests/test_mqtt_client.py: a node-shaped user of MQTTClient.

Arguments are ``key=value`` (see OPTS). It connects with a Last Will, publishes a birth
message from on_connect, publishes ``count`` QoS 1 messages while keeping its own list of
unacknowledged ones (as store-and-forward will), optionally receives ``recv`` downlink
messages, then prints STATS and closes. Output lines are machine-readable:

  CONNECTED <n> <session_present>     DISCONNECTED <reason...>
  BACKOFF <retry index> <delay ms>    BIRTH <pid> (birth acknowledged)
  ACKED <index> <pid>
  MSG <topic> <payload hex> <retain> <dup>              READY
  STATS k=v ...                       DONE | TIMEOUT <what>
"""

import asyncio
import gc
import sys
from binascii import hexlify
from time import ticks_diff, ticks_ms

from firmware.mqtt import client as mq

OPTS = {
    "host": "127.0.0.1",
    "port": "1883",
    "id": "node-test",
    "ka": "60",
    "count": "0",
    "interval_ms": "0",
    "window": "4",
    "recv": "0",
    "sub": "",
    "hold": "0",
    "bmin": "200",
    "bmax": "2000",
    "connect_ms": "2000",
    "ack_ms": "10000",
    "deadline_ms": "30000",
    "ca": "",
    "cert": "",
    "key": "",
    "sni": "",
    "clean": "0",
    "attempts": "0",
    "connects": "1",
}
for a in sys.argv[1:]:
    k, v = a.split("=", 1)
    if k not in OPTS:
        raise SystemExit("unknown option " + k)
    OPTS[k] = v

NODE = OPTS["id"]
BASE = "ivgw/test/" + NODE
heap = [0]
births = [0]
inbox = []  # downlink messages, as the node's on_message hands them on


def on_message(topic, payload, retain, dup):
    inbox.append((topic, bytes(payload), retain, dup))


def out(*words):
    print(" ".join([str(w) for w in words]))


async def heap_monitor():
    # Live-heap high-water: gc.mem_alloc() right after a collection, sampled every 20 ms.
    while True:
        gc.collect()
        a = gc.mem_alloc()
        if a > heap[0]:
            heap[0] = a
        await asyncio.sleep_ms(20)


async def main():
    gc.collect()
    base = gc.mem_alloc()
    ctx = None
    if OPTS["ca"]:
        ctx = mq.tls_context(OPTS["ca"], OPTS["cert"] or None, OPTS["key"] or None)
    c = None

    async def on_connect(session_present):
        out("CONNECTED", c.connects, session_present)
        pid = await c.publish(BASE + "/birth", ("online:%d" % c.connects).encode(), 1)
        await c.wait_acked(pid)
        births[0] += 1
        out("BIRTH", pid)

    c = mq.MQTTClient(
        NODE,
        OPTS["host"],
        int(OPTS["port"]),
        keepalive=int(OPTS["ka"]),
        clean_session=OPTS["clean"] == "1",
        will=(BASE + "/status", b"offline", 1, False),
        ssl=ctx,
        server_hostname=OPTS["sni"] or None,
        window=int(OPTS["window"]),
        ack_timeout_ms=int(OPTS["ack_ms"]),
        connect_timeout_ms=int(OPTS["connect_ms"]),
        backoff_min_ms=int(OPTS["bmin"]),
        backoff_max_ms=int(OPTS["bmax"]),
        on_connect=on_connect,
        on_message=on_message,
        on_disconnect=lambda reason: out("DISCONNECTED", reason),
        on_backoff=lambda k, ms: out("BACKOFF", k, ms),
    )
    if OPTS["sub"]:
        c.subscribe(OPTS["sub"], 1)
    asyncio.create_task(heap_monitor())
    runner = asyncio.create_task(c.run())
    deadline = ticks_ms()
    limit = int(OPTS["deadline_ms"])

    def late():
        return ticks_diff(ticks_ms(), deadline) > limit

    want_attempts = int(OPTS["attempts"])
    if want_attempts:
        # Used with a broker that refuses us: show the attempts, never a connection.
        while c.attempts < want_attempts and not late():
            await asyncio.sleep_ms(20)
    else:
        # Wait for the birth of connection number ``connects`` (staged outages in between).
        while births[0] < int(OPTS["connects"]) and not late():
            await asyncio.sleep_ms(20)
        if births[0] < int(OPTS["connects"]):
            out("TIMEOUT", "connect", c.last_error)

    # The layer above: keep every message until its PUBACK, in its own bounded list.
    unacked = {}
    acked = [0]

    def on_puback(pid):
        i = unacked.pop(pid, None)
        if i is not None:
            acked[0] += 1
            out("ACKED", i, pid)

    c.on_puback = on_puback
    n = int(OPTS["count"])
    gap = int(OPTS["interval_ms"])
    for i in range(n):
        payload = ("%s:%d" % (NODE, i)).encode()
        pid = await c.publish(BASE + "/data", payload, 1)
        unacked[pid] = i
        if gap:
            await asyncio.sleep_ms(gap)
    while acked[0] < n and not late():
        await asyncio.sleep_ms(20)
    if acked[0] < n:
        out("TIMEOUT", "acks", acked[0], n)

    want = int(OPTS["recv"])
    while len(inbox) < want and not late():
        await asyncio.sleep_ms(20)
    for topic, payload, retain, dup in inbox[:want]:
        out("MSG", topic, hexlify(payload).decode(), retain, dup)
    if len(inbox) < want:
        out("TIMEOUT", "recv")

    if OPTS["hold"] == "1":
        out("READY")
        while True:
            await asyncio.sleep_ms(1000)

    out(
        "STATS",
        "connects=%d" % c.connects,
        "disconnects=%d" % c.disconnects,
        "attempts=%d" % c.attempts,
        "refused=%d" % c.refused,
        "retransmits=%d" % c.retransmits,
        "pubacks=%d" % c.pubacks,
        "received=%d" % c.received,
        "in_flight=%d" % c.in_flight(),
        "heap_base=%d" % base,
        "heap_peak=%d" % heap[0],
        "heap_size=%d" % (gc.mem_alloc() + gc.mem_free()),
    )
    out("LASTERROR", c.last_error)
    await c.close()
    await runner
    out("DONE", c.state)


asyncio.run(main())
