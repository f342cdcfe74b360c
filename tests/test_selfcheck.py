"""`make demo`'s protocol self-check: one packet each way between MicroPython and CPython."""

from gateway import selfcheck


def test_selfcheck_passes(capsys):
    assert selfcheck.main() == 0
    out = capsys.readouterr().out
    assert "protocol self-check: PASSED" in out
    assert "tampered packet rejected by the gateway: cose.bad_signature" in out
