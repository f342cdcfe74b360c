"""Node entry point: ``micropython -m firmware.main CONFIG_DIR`` (unix port), or main.py on
a board (CONFIG_DIR defaults to the board's root, where ``ivgw flash`` copies the bundle).

Two phases: firmware/boot.py builds the node (configuration first, then the boot counter,
keys, drivers and the MQTT client); then the boot code is unloaded and firmware/runner.py
runs the node. Unloading gives the code's heap back: on the unix port, and on a board that
runs .mpy files from its filesystem, loaded bytecode lives in the heap.

The GC runs early (``gc.threshold``) rather than only when an allocation fails: MicroPython
never moves objects, and a heap left to fill up before each collection ends up in pieces
too small for the few hundred contiguous bytes a signed packet needs (docs/firmware.md,
"Footprint").
"""

import gc
import sys

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio  # type: ignore

from firmware import log, unload


def main(base="."):
    gc.threshold(4096)  # boot: loading code fragments the heap most
    from firmware import boot
    from firmware.hal.storage import ConfigError

    try:
        node, client, downlink, watchdog = boot.build(base)
    except (ConfigError, ValueError, OSError) as e:
        log.info("CONFIG ERROR: %s" % e)
        sys.exit(2)
    unload(boot.BOOT_ONLY)
    del boot, ConfigError  # the last references to boot-only code
    gc.collect()
    # Running: collect once half of the free heap is used. A node with little headroom
    # collects often (measured: a full session then passes in an 8 KiB smaller heap; at
    # 152 KiB that costs about 0.03 s of CPU a second on this machine), one with plenty
    # almost never.
    gc.threshold(max(4096, gc.mem_free() // 2))
    from firmware import runner

    asyncio.run(runner.run(node, client, downlink, watchdog))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
