"""The board's hardware watchdog: if the node's main loop hangs, the board resets.

On a reset the permit is gone (it lives in RAM), so the pump stops through its own SAF
watchdog and the node comes back with a new boot counter and no permit.
"""


class Watchdog:
    def __init__(self, timeout_ms):
        self.feeds = 0
        try:
            from machine import WDT

            self._wdt = WDT(timeout=timeout_ms)  # type: WDT | None
        except (ImportError, AttributeError, ValueError, TypeError):
            self._wdt = None  # the unix port has no WDT: the test bench watches the process

    def feed(self):
        self.feeds += 1
        if self._wdt is not None:
            self._wdt.feed()
