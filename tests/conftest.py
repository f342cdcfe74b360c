"""Shared pytest fixtures: real Mosquitto brokers, and a leak check for threads/processes."""

import os
import signal
import threading
import time

import pytest

from tests.support.mosquitto import MosquittoBroker


@pytest.fixture
def mosquitto(tmp_path):
    """A fresh broker (plain listener on a free 127.0.0.1 port) for one test."""
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def make_mosquitto(tmp_path):
    """Factory for brokers with options (``extra_config``, ``tls``, ``persistence``)."""
    brokers = []

    def make(**kwargs):
        b = MosquittoBroker(tmp_path / ("mosquitto-%d" % len(brokers)), **kwargs)
        brokers.append(b)
        return b.start()

    yield make
    for b in brokers:
        b.close()


def _children():
    """{pid: (state, cmdline)} of this process's direct children, from /proc."""
    me = os.getpid()
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) != me:
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        found[int(name)] = (fields[0], cmd)
    return found


@pytest.fixture
def no_leaks():
    """Fail a test that leaves a thread running or a child process (even a zombie) behind.

    Leaked children are killed and reaped so one bad test does not poison the next.
    """
    threads_before = set(threading.enumerate())
    kids_before = set(_children())
    yield
    deadline = time.monotonic() + 2.0
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        kids = {p: v for p, v in _children().items() if p not in kids_before}
        if (not threads and not kids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (OSError, ChildProcessError):
            pass
    if threads or kids:
        pytest.fail(
            "test leaked threads %s and child processes %s"
            % ([t.name for t in threads], ["%d %s %s" % (p, s, c) for p, (s, c) in kids.items()])
        )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The conformance counts under CPython (the MicroPython run prints its own)."""
    from tests.portable import harness

    lines = harness.tally_lines()
    if lines:
        terminalreporter.section("conformance vectors (CPython)")
        for line in lines:
            terminalreporter.write_line(line)
