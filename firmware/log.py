"""Console log lines: the biomedical engineer's view on the board's USB serial console and
the HIL bench's ``expect`` target. One line per event, prefixed with uptime seconds."""

import time

_T0 = time.ticks_ms()


def info(msg):
    t = time.ticks_diff(time.ticks_ms(), _T0)
    print("[%d.%03d] %s" % (t // 1000, t % 1000, msg))
