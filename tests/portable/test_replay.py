"""Replay window: new / duplicate / stale, boot changes, window edge, gaps."""

from protocol import replay
from protocol.replay import DUPLICATE, NEW, STALE, WINDOW, ReplayWindow


def test_first_message_is_new_and_redelivery_is_duplicate():
    w = ReplayWindow()
    assert w.accept(3, 0) == NEW
    assert w.check(3, 0) == DUPLICATE
    assert w.accept(3, 0) == DUPLICATE


def test_check_does_not_move_the_window():
    w = ReplayWindow()
    w.accept(1, 10)
    assert w.check(1, 500) == NEW
    assert w.check(1, 11) == NEW
    assert w.top == 10


def test_out_of_order_within_window_accepted_once():
    w = ReplayWindow()
    for seq in (0, 5, 3, 1, 4, 2):
        assert w.accept(1, seq) == NEW, seq
    for seq in range(6):
        assert w.check(1, seq) == DUPLICATE


def test_window_edge():
    w = ReplayWindow()
    w.accept(1, 100)
    assert w.check(1, 100 - (WINDOW - 1)) == NEW
    assert w.check(1, 100 - WINDOW) == STALE
    w.accept(1, 100 + WINDOW + 10)  # a jump larger than the window clears the bitmap
    assert w.check(1, 100) == STALE
    assert w.check(1, 100 + WINDOW + 9) == NEW
    assert w.check(1, 100 + WINDOW + 10) == DUPLICATE


def test_older_boot_is_stale_newer_boot_resets():
    w = ReplayWindow()
    w.accept(5, 1000)
    assert w.check(4, 2000) == STALE
    assert w.accept(6, 0) == NEW
    assert w.check(6, 0) == DUPLICATE
    assert w.check(5, 1001) == STALE


def test_gap_counts_missing_sequence_numbers():
    w = ReplayWindow()
    w.accept(1, 0)
    assert w.gap(1, 1) == 0
    assert w.gap(1, 4) == 3  # 1, 2 and 3 are missing
    assert w.gap(2, 0) == 0


def test_state_roundtrip():
    w = ReplayWindow()
    for s in (1, 2, 7):
        w.accept(9, s)
    w2 = ReplayWindow(*w.state())
    assert w2.check(9, 2) == DUPLICATE and w2.check(9, 3) == NEW
    assert replay.VERDICTS[STALE] == "stale"


def test_bitmap_stays_bounded():
    w = ReplayWindow()
    for s in range(0, 2000, 3):
        w.accept(1, s)
    assert w.bitmap < (1 << WINDOW)


def test_ordered_window_rejects_late_never_seen_numbers():
    w = ReplayWindow(ordered=True)
    w.accept(1, 5)
    assert w.check(1, 4) == STALE
    assert w.check(1, 5) == DUPLICATE
    assert w.accept(1, 6) == NEW
