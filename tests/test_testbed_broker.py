"""The bench broker listens on loopback only unless a real board must reach it over the
network (``listen_host``, docs/hil.md)."""

from __future__ import annotations

import socket

import pytest

from testbed.mosquitto import MosquittoBroker

pytestmark = pytest.mark.mosquitto


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.parametrize("listen_host, other_reachable", [(None, False), ("0.0.0.0", True)])
def test_the_listener_binds_where_it_is_told(tmp_path, listen_host, other_reachable):
    # 127.0.0.2 is this machine too, but not the 127.0.0.1 a loopback-only broker binds.
    broker = MosquittoBroker(tmp_path, listen_host=listen_host)
    broker.start()
    try:
        assert _connects("127.0.0.1", broker.port)
        assert _connects("127.0.0.2", broker.port) is other_reachable
    finally:
        broker.close()
