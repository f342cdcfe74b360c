"""Run permit: lifetime from the referenced message, expiry, ceiling, wrap-around."""

from firmware.drivers._ticks import ticks_add
from firmware.permit import Permit
from firmware.sentlog import SentLog

PERIOD = 1 << 30


def test_permit_counts_from_the_referenced_message_not_arrival():
    p = Permit(10000)
    assert p.grant(1, 1000, 5000, now=3000) is None  # arrived 2 s after the ref
    assert p.remaining(3000) == 3000
    assert p.remaining(5999) == 1 and p.program_id == 1
    assert p.remaining(6000) == 0
    assert p.remaining(6000) == 0 and p.lapsed == 1


def test_old_permit_is_expired_on_arrival():
    p = Permit(10000)
    assert p.grant(1, 1000, 5000, now=6000) == "permit.expired"
    assert p.grant(1, 1000, 5000, now=9000) == "permit.expired"
    assert p.remaining(9000) == 0


def test_lifetime_is_capped_by_the_node():
    p = Permit(4000)
    assert p.grant(1, 0, 60000, now=10) is None
    assert p.remaining(10) == 3990


def test_never_shortened_by_a_late_older_permit_and_bound_to_program():
    p = Permit(10000)
    p.grant(7, 5000, 5000, now=5100)  # expires 10000
    p.grant(7, 4000, 5000, now=5200)  # expires 9000: older, ignored
    assert p.remaining(9500) == 500
    assert p.program_id == 7  # a permit for program 7 only


def test_revoke_and_zero_lifetime():
    p = Permit(10000)
    assert p.grant(1, 0, 0, now=0) == "permit.zero_lifetime"
    p.grant(1, 0, 5000, now=1)
    p.revoke()
    assert p.remaining(2) == 0


def test_ref_in_the_future_rejected():
    p = Permit(10000)
    assert p.grant(1, 5000, 5000, now=4000) == "permit.ref_in_future"


def test_tick_wraparound():
    p = Permit(10000)
    ref = PERIOD - 1000
    assert p.grant(1, ref, 5000, now=ticks_add(ref, 500)) is None
    assert p.remaining(ticks_add(ref, 500)) == 4500
    assert p.remaining(ticks_add(ref, 4999)) == 1
    assert p.remaining(ticks_add(ref, 5000)) == 0


def test_reboot_loses_the_permit():
    p = Permit(10000)
    p.grant(1, 0, 5000, now=1)
    p2 = Permit(10000)  # a reboot makes a new one: RAM only, by design
    assert p2.remaining(2) == 0


def test_sentlog_ring_forgets_old_messages():
    log = SentLog(4)
    for seq in range(10):
        log.record(seq, 100 * seq)
    assert log.tick_of(9) == 900 and log.tick_of(6) == 600
    assert log.tick_of(5) is None
