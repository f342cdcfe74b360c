"""The production set-up, end to end, with the CLI a biomedical engineer uses: `ivgw init`,
`ivgw broker-config` (CA, certificates, mosquitto.conf with ACLs), `ivgw provision` (node key
and TLS bundle), a real Mosquitto with that configuration, the gateway over mutual TLS, and
the real firmware connecting over mutual TLS with its per-device certificate."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from emulators import DatexS5, Ne1000Pump, PtyTransport, Radical7
from gateway.config import load as load_config
from gateway.service import control_request
from hil_tests.conftest import figure
from testbed.bench import BenchError, GatewayProcess
from testbed.chair import ManualVitals
from testbed.dut import EmulatedNode
from testbed.mosquitto import free_port, mosquitto_binary

ROOT = Path(__file__).resolve().parent.parent


def ivgw(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "gateway.cli", *args], cwd=str(ROOT),
                       capture_output=True, text=True, timeout=120,
                       env={"COLUMNS": "200", "PATH": "/usr/bin:/bin:/usr/sbin"})
    assert r.returncode == 0, "ivgw %s failed:\n%s%s" % (" ".join(args), r.stdout, r.stderr)
    return r.stdout


def test_tls_acl_production_flow(tmp_path: Path):
    port = free_port()
    data = tmp_path / "data"
    cfg_path = tmp_path / "gateway.toml"
    broker_dir = data / "broker"
    cfg_path.write_text(
        "[gateway]\ndata_dir = %r\n\n[mqtt]\nhost = \"localhost\"\nport = %d\n"
        "protocol = \"5\"\nclient_id = \"ivgw-gateway\"\n"
        "tls_ca = %r\ntls_cert = %r\ntls_key = %r\n"
        % (str(data), port, str(broker_dir / "ca.crt"),
           str(broker_dir / "clients" / "ivgw-gateway.crt"),
           str(broker_dir / "clients" / "ivgw-gateway.key")))
    vitals = ManualVitals()
    pump = Ne1000Pump(saf_s=0)
    devices = {"pump": pump, "oximeter": Radical7(vitals.oximeter),
               "monitor": DatexS5(vitals.monitor, nibp_interval_s=30)}
    transports = {k: PtyTransport(v) for k, v in devices.items()}
    procs: list = []
    node = gateway = None
    try:
        ivgw("init", "--config", str(cfg_path))
        ivgw("broker-config", "--config", str(cfg_path), "--port", str(port),
             "--bind", "127.0.0.1")
        ivgw("provision", "chair-01", "--site", "north", "--chair", "c1", "--config",
             str(cfg_path), "--tls", "--broker-host", "127.0.0.1", "--broker-port", str(port),
             "--pump-port", "pty:" + transports["pump"].path,
             "--oximeter-port", "pty:" + transports["oximeter"].path,
             "--monitor-port", "pty:" + transports["monitor"].path, "--operator", "biomed")
        conf = broker_dir / "mosquitto.conf"
        assert "require_certificate true" in conf.read_text()
        if os.geteuid() == 0:  # as root mosquitto would switch to a user that cannot read tmp
            conf.write_text(conf.read_text() + "user root\n")
        log = open(tmp_path / "mosquitto.log", "w")  # noqa: SIM115
        procs.append(subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=log,
                                      stderr=subprocess.STDOUT))
        time.sleep(0.5)
        for t in transports.values():
            t.start()
        gateway = GatewayProcess(cfg_path, tmp_path)
        gateway.start()
        node = EmulatedNode(data / "bundles" / "chair-01", tmp_path, "chair-01", heap="256k")
        node.start()
        node.expect(r"connected to broker", 30)
        cfg = load_config(cfg_path)

        def chair() -> dict:
            st = control_request(cfg, {"op": "status"})["result"]["chairs"]
            return st[0] if st else {}

        deadline = time.monotonic() + 30
        while not (chair().get("online") and chair().get("vitals")):
            if time.monotonic() > deadline:
                raise BenchError("no verified telemetry over TLS; see %s" % tmp_path)
            time.sleep(0.3)
        req = {"op": "program", "chair": "north/c1", "drug": "ketamine",
               "concentration_mg_ml": "1", "weight_kg": "70", "dose_rate": "0.75",
               "duration_min": "40", "operator": "rn.lee"}
        assert control_request(cfg, req)["ok"]
        node.expect(r"CMD program ok", 15)
        deadline = time.monotonic() + 40
        while True:  # the first cuff reading must arrive before a start is allowed
            resp = control_request(cfg, {"op": "start", "chair": "north/c1",
                                         "operator": "rn.lee"})
            if resp["ok"]:
                break
            assert time.monotonic() < deadline, resp
            time.sleep(1)
        node.expect(r"CMD start ok", 15)
        deadline = time.monotonic() + 10
        while not pump.running():
            assert time.monotonic() < deadline, "pump did not start over the TLS path"
            time.sleep(0.1)
        figure("production flow", "init, broker-config, provision, Mosquitto with TLS + ACLs, "
               "gateway and node over mutual TLS: pump infusing under gateway permits")
    finally:
        if node is not None:
            node.stop()
        if gateway is not None:
            gateway.stop()
        for p in procs:
            p.terminate()
            p.wait(10)
        for t in transports.values():
            t.stop()
