"""CPython-only test helpers: a real Mosquitto per test, a fault-injecting TCP proxy, a paho
peer, and a runner for MicroPython scripts. Imported by tests/, never by portable code."""
