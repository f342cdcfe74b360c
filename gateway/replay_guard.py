"""Per-node replay state across reboots: the current boot's window and the previous one's.

A node that reboots during a broker outage still has packets of its previous boot in its
store-and-forward spool; they arrive after the new boot's birth. Keeping the previous
boot's window lets them in (once each) instead of rejecting them as stale, while anything
older than the previous boot is stale. protocol/replay.py has the window itself.
"""

from __future__ import annotations

from protocol.replay import NEW, STALE, ReplayWindow


class NodeReplay:
    def __init__(self, state: tuple | None = None):
        if state:
            boot, top, bitmap, pboot, ptop, pbitmap, gaps = state
            self.cur = ReplayWindow(boot, top, int(bitmap))
            self.prev = ReplayWindow(pboot, ptop, int(pbitmap))
            self.gaps = gaps
        else:
            self.cur, self.prev, self.gaps = ReplayWindow(), ReplayWindow(), 0

    def _window(self, boot: int) -> ReplayWindow | None:
        if boot >= self.cur.boot:
            return self.cur
        if boot == self.prev.boot:
            return self.prev
        return None

    def check(self, boot: int, seq: int) -> int:
        w = self._window(boot)
        return STALE if w is None else w.check(boot, seq)

    def accept(self, boot: int, seq: int) -> tuple[int, int]:
        """Record (boot, seq); return (verdict, gap before it in this boot)."""
        if boot > self.cur.boot and self.cur.boot >= 0:
            self.prev = ReplayWindow(*self.cur.state())
            self.cur = ReplayWindow()
        w = self._window(boot)
        if w is None:
            return STALE, 0
        gap = w.gap(boot, seq)
        verdict = w.accept(boot, seq)
        if verdict == NEW:
            self.gaps += gap
        return verdict, gap

    def state(self) -> tuple[tuple, tuple, int]:
        return self.cur.state(), self.prev.state(), self.gaps
