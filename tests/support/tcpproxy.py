"""A loopback TCP proxy that can cut or freeze the connections it carries.

Tests put it between a client and the broker to stage network faults the client cannot tell
from the real thing:

* ``cut()``: close every carried connection now (the client sees EOF/reset);
* ``stall("both")``: stop forwarding in both directions but keep the sockets open (a dead
  link: only keepalive can notice); new connections are accepted and closed at once, as if
  the broker were unreachable;
* ``stall("down")``: keep forwarding client -> broker, hold broker -> client (the broker gets
  our PUBLISHes, its PUBACKs never arrive);
* ``unstall()``: forward again on the same connections (held bytes flow late);
* ``resume()``: drop the stalled connections and forward again.

One thread runs a select() loop; ``close()`` stops and joins it.
"""

import select
import socket
import threading


class TcpProxy:
    def __init__(self, target_host, target_port, host="127.0.0.1"):
        self.target = (target_host, target_port)
        self._lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind((host, 0))
        self._lsock.listen(8)
        self.host = host
        self.port = self._lsock.getsockname()[1]
        self._mode = "forward"
        self._pairs = []  # [client_sock, upstream_sock]
        self._lock = threading.Lock()
        self._stop = False
        self._cmd_r, self._cmd_w = socket.socketpair()
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self._thread = threading.Thread(target=self._run, name="tcpproxy", daemon=True)
        self._thread.start()

    # -- control (any thread) ------------------------------------------------------------------

    def cut(self):
        with self._lock:
            self._pending = "cut"
        self._poke()
        self._wait_idle()

    def stall(self, direction="both"):
        if direction not in ("both", "down"):
            raise ValueError(direction)
        with self._lock:
            self._mode = "stall_" + direction
        self._poke()

    def unstall(self):
        """Forward again on the same connections, delivering whatever was held back."""
        with self._lock:
            self._mode = "forward"
        self._poke()
        self._wait_idle()

    def resume(self):
        with self._lock:
            self._mode = "forward"
            self._pending = "cut"
        self._poke()
        self._wait_idle()

    def connections(self):
        with self._lock:
            return len(self._pairs)

    def close(self):
        self._stop = True
        self._poke()
        self._thread.join(5)
        for s in (self._lsock, self._cmd_r, self._cmd_w):
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the loop ------------------------------------------------------------------------------

    _pending = None

    def _poke(self):
        try:
            self._cmd_w.send(b"x")
        except OSError:
            pass

    def _wait_idle(self):
        # Make cut()/resume() synchronous: return once the loop has applied them.
        done = threading.Event()
        with self._lock:
            self._idle_evt = done
        self._poke()
        done.wait(5)

    _idle_evt = None

    def _close_all(self):
        for pair in self._pairs:
            for s in pair:
                try:
                    s.close()
                except OSError:
                    pass
        self._pairs = []
        self.cuts += 1

    def _run(self):
        try:
            while not self._stop:
                with self._lock:
                    mode = self._mode
                    if self._pending == "cut":
                        self._pending = None
                        self._close_all()
                    evt, self._idle_evt = self._idle_evt, None
                if evt is not None:
                    evt.set()
                rlist = [self._lsock, self._cmd_r]
                for c, u in self._pairs:
                    if mode == "forward":
                        rlist += [c, u]
                    elif mode == "stall_down":
                        rlist.append(c)
                r, _, _ = select.select(rlist, [], [], 0.5)
                for s in r:
                    if s is self._cmd_r:
                        self._cmd_r.recv(64)
                    elif s is self._lsock:
                        self._accept(mode)
                    else:
                        self._forward(s)
        finally:
            with self._lock:
                self._close_all()

    def _accept(self, mode):
        c, _ = self._lsock.accept()
        self.accepted += 1
        if mode == "stall_both":
            self.refused += 1
            c.close()
            return
        try:
            u = socket.create_connection(self.target, timeout=2)
        except OSError:
            self.refused += 1
            c.close()
            return
        with self._lock:
            self._pairs.append([c, u])

    def _forward(self, s):
        for pair in self._pairs:
            if s in pair:
                break
        else:
            return
        peer = pair[1] if s is pair[0] else pair[0]
        try:
            data = s.recv(65536)
            if data:
                peer.sendall(data)
                return
        except OSError:
            pass
        with self._lock:
            for x in pair:
                try:
                    x.close()
                except OSError:
                    pass
            self._pairs.remove(pair)
