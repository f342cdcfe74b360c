"""Wi-Fi bring-up on boards with a ``network`` module (Pico W, ESP32); a no-op elsewhere."""

import time


def connect(ssid, password, timeout_ms=20000):
    """Join ``ssid``; return the IP address, or raise OSError naming the reason."""
    try:
        import network
    except ImportError:
        return None  # unix port: the host's network is already up
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if not wlan.isconnected():
        wlan.connect(ssid, password)
        start = time.ticks_ms()
        while not wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_ms:
                raise OSError("wifi: could not join %r within %d ms (status %r)"
                              % (ssid, timeout_ms, wlan.status()))
            time.sleep_ms(100)
    return wlan.ifconfig()[0]
