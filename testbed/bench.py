"""The bench: a broker, the gateway (as its own process, so it can be SIGKILLed), and N
emulated chairs, started together and always torn down together.

    with Bench(tmp_path, chairs=3) as bench:
        bench.wait_online()
        bench.request({"op": "program", ...})

Every process leaves a log in the work directory (``mosquitto.log``, ``gateway.log``,
``<node>.log``); ``Bench.describe_logs()`` names them so a failing test can point at them.
``python -m testbed.bench --chairs 3`` brings one up by hand (docs/hil.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway import db
from gateway.config import load as load_config
from gateway.service import control_request, load_gateway_key
from gateway.store import Store
from protocol import cose
from testbed.chair import EmulatedChair
from testbed.dut import Console, ConsoleProcess
from testbed.mosquitto import MosquittoBroker

ROOT = Path(__file__).resolve().parent.parent


class BenchError(AssertionError):
    pass


class GatewayProcess(ConsoleProcess):
    """``ivgw run`` as a child process with its console captured."""

    stop_grace_s = 15.0  # it closes its last batch and records its stop

    def __init__(self, config_path: Path, workdir: Path, workers: int = 1):
        self.config_path = config_path
        self.workdir = workdir
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.console: Console | None = None
        self.starts = 0

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        self.console = Console(self.workdir / "gateway.log", "gateway")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "--config", str(self.config_path),
             "--workers", str(self.workers)],
            cwd=str(ROOT), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        assert self.proc.stdout is not None
        self.console.feed_stream(self.proc.stdout)
        self.console.expect(r"gateway running", timeout)
        deadline = time.monotonic() + timeout
        while True:  # connected to the broker (the log line may come before "running")
            try:
                if control_request(load_config(self.config_path), {"op": "status"})[
                        "result"]["gateway"]["connected"]:
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if time.monotonic() > deadline or not self.alive():
                raise BenchError("gateway did not connect to the broker; see %s"
                                 % self.console.log_path)
            time.sleep(0.1)



class Bench:
    def __init__(self, workdir: Path, chairs: int = 1, *, speed: float = 1.0,
                 permit_lifetime_ms: int = 5000, workers: int = 1, with_monitor: bool = True,
                 site: str = "north", chair_kwargs: dict[str, Any] | None = None,
                 mosquitto_extra: tuple[str, ...] = (), broker: Any = None,
                 per_chair: list[dict[str, Any]] | None = None,
                 chair_ids: list[str] | None = None):
        """``broker``: a started-on-demand broker object (default: a Mosquitto); ``per_chair``:
        extra constructor arguments for each chair (e.g. physiology sources);
        ``chair_ids``: the chairs' ids within the site (default c1, c2, ...)."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.speed = speed
        boards = any("board" in kw for kw in [chair_kwargs or {}, *(per_chair or [])])
        self.broker = broker or MosquittoBroker(
            self.workdir / "mosquitto", persistence=True,
            listen_host="0.0.0.0" if boards else None,
            extra_config=("max_queued_messages 100000", "max_inflight_messages 100",
                          *mosquitto_extra))
        self.per_chair = per_chair or [{} for _ in range(chairs)]
        self.chair_ids = chair_ids or ["c%d" % (i + 1) for i in range(chairs)]
        self.data_dir = self.workdir / "gateway-data"
        self.config_path = self.workdir / "gateway.toml"
        self.n_chairs = chairs
        self.site = site
        self.permit_lifetime_ms = permit_lifetime_ms
        self.with_monitor = with_monitor
        self.chair_kwargs = chair_kwargs or {}
        self.gateway = GatewayProcess(self.config_path, self.workdir, workers)
        self.chairs: list[EmulatedChair] = []
        self._started = False

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> Bench:
        self._started = True
        try:
            self.broker.start()
            self._write_gateway_config()
            cfg = load_config(self.config_path)
            seed = load_gateway_key(cfg.key_path, create=True)
            gw_pub = cose.Ed25519Signer(seed).public
            for i in range(self.n_chairs):
                kw = dict(self.chair_kwargs, **self.per_chair[i])
                self.chairs.append(EmulatedChair(
                    self.workdir, "chair-%02d" % (i + 1), self.site, self.chair_ids[i],
                    broker_host=self.broker.host, broker_port=self.broker.port,
                    gateway_pub=gw_pub, speed=self.speed, with_monitor=self.with_monitor,
                    **kw))
            self._register_nodes(cfg)
            self.gateway.start()
            for chair in self.chairs:
                chair.start()
        except BaseException:
            self.close()
            raise
        return self

    def _write_gateway_config(self) -> None:
        self.config_path.write_text(
            "# generated by testbed/bench.py\n"
            "[gateway]\ndata_dir = %r\nemulation_speed = %r\n\n"
            "[mqtt]\nhost = %r\nport = %d\nprotocol = %r\nkeepalive_s = 5\n\n"
            "[permit]\nlifetime_ms = %d\n"
            % (str(self.data_dir), float(self.speed), self.broker.host, self.broker.port,
               self.broker.mqtt_protocol, self.permit_lifetime_ms))

    def _register_nodes(self, cfg: Any) -> None:
        conn = db.open_db(cfg.db_path, gateway_lock=False)
        try:
            store = Store(conn)
            with db.transaction(conn):
                for c in self.chairs:
                    store.register_node(c.node_id, c.site, c.chair, cose.ALG_EDDSA, c.public,
                                        time.time())
        finally:
            conn.close()

    def close(self) -> None:
        errors = []
        for chair in self.chairs:
            try:
                chair.stop()
            except Exception as e:  # noqa: BLE001 - tear everything down regardless
                errors.append(e)
        try:
            self.gateway.stop()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        try:
            self.broker.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self) -> Bench:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- helpers for scenarios --------------------------------------------------------------
    def config(self) -> Any:
        return load_config(self.config_path)

    def request(self, req: dict[str, Any], ok: bool = True) -> dict[str, Any]:
        resp = control_request(self.config(), req)
        if ok and not resp.get("ok"):
            raise BenchError("gateway refused %r: %s" % (req, resp.get("error")))
        return resp

    def status(self) -> dict[str, Any]:
        return self.request({"op": "status"})["result"]

    def chair_state(self, chair: EmulatedChair) -> dict[str, Any]:
        for c in self.status()["chairs"]:
            if c["node"] == chair.node_id:
                return c
        raise BenchError("gateway does not know %s" % chair.node_id)

    def wait_for(self, what: str, predicate: Any, timeout: float = 20.0,
                 interval: float = 0.2) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise BenchError("timed out after %.0f s waiting for %s (last: %r)\n%s"
                         % (timeout, what, last, self.describe_logs()))

    def wait_online(self, timeout: float = 30.0) -> None:
        """Every chair's node connected and its vitals fresh at the gateway."""
        for chair in self.chairs:
            chair.node.expect(r"connected to broker", timeout)

        def ready() -> bool:
            st = {c["node"]: c for c in self.status()["chairs"]}
            return all(st[c.node_id]["online"] and st[c.node_id]["vitals"]
                       and st[c.node_id]["pump"]["state"] != "unknown" for c in self.chairs)

        self.wait_for("all chairs online with vitals", ready, timeout)

    def program_standard(self, chair: EmulatedChair, weight: str = "70", dose: str = "0.75",
                         duration: str = "40", operator: str = "bench") -> dict[str, Any]:
        """The reference session: ketamine 0.5 mg/kg over 40 min at 1 mg/mL."""
        return self.request({"op": "program", "chair": chair.id, "drug": "ketamine",
                             "concentration_mg_ml": "1", "weight_kg": weight, "dose_rate": dose,
                             "duration_min": duration, "diameter_cmm": 2670,
                             "operator": operator})["result"]

    def start_infusion(self, chair: EmulatedChair, timeout: float = 20.0,
                       duration: str = "40") -> dict[str, Any]:
        """Program the reference session (``duration`` minutes at 0.75 mg/kg/h for 70 kg,
        1 mg/mL: 52.5 mL/h) and start it."""
        # The node must have loaded the program into the pump before a start is accepted.
        sess = self.program_standard(chair, duration=duration)["session"]
        chair.node.expect(r"CMD program ok", timeout)
        self.wait_for("pump loaded with session %d" % sess,
                      lambda: chair.pump.target_ul > 0, timeout)
        res = self.request({"op": "start", "chair": chair.id, "operator": "bench"})["result"]
        chair.node.expect(r"CMD start ok", timeout)
        self.wait_for("pump infusing", chair.pump.running, timeout)
        return res

    def describe_logs(self) -> str:
        logs = [self.broker.log_path, str(self.workdir / "gateway.log")]
        logs += [str(c.node.log_path) for c in self.chairs]
        return "logs: " + ", ".join(logs)


def main() -> None:  # pragma: no cover - manual use
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description="Bring up a bench of emulated chairs by hand.")
    ap.add_argument("--chairs", type=int, default=1)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    d = Path(args.dir or tempfile.mkdtemp(prefix="ivgw-bench-"))
    with Bench(d, args.chairs, speed=args.speed) as bench:
        bench.wait_online()
        print("bench up in %s; gateway config %s (Ctrl-C to stop)" % (d, bench.config_path))
        print("try: ivgw status --config %s" % bench.config_path)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    main()
