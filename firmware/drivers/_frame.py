"""Empty: the receive buffers of the framed drivers (ne1000, datex) are now part of each
driver (a bytearray, a count and, for ne1000, a memoryview to shift the tail down), which
costs less heap than a shared class (docs/firmware.md, "Footprint").

No driver imports this module any more. It stays only because bench/footprint.py still
lists ``firmware.drivers._frame`` among the runtime modules it imports; it can be deleted
together with that entry.
"""
