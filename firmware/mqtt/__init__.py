"""MQTT 3.1.1 for the node.

``codec`` is the protocol layer (sans-IO, portable: also imported by CPython tests);
``client`` is the connectivity layer (MicroPython asyncio: sockets, TLS, timers, reconnects).
Nothing is imported here so that importing the codec never pulls in asyncio or sockets.
"""
