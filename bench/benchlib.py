"""What the benchmark scripts share: results files, percentiles, CPU accounting, virtual
nodes (keys, realistic signed telemetry) and a production-like broker.

Why a shared module: every benchmark must measure the same packet the firmware sends and
the same broker settings the clinic runs (docs/cli.md), or their figures cannot be
compared with one another. Clinical numbers in the telemetry built here (vitals, rates)
are EXAMPLES chosen to stay inside the example interlock rules, not clinical guidance.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gateway import db  # noqa: E402
from gateway.cose_keys import EdDSASigner  # noqa: E402
from gateway.store import Store  # noqa: E402
from protocol import cbor, cose, mdc, schema, topics  # noqa: E402
from testbed.mosquitto import MosquittoBroker  # noqa: E402

_CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A benchmark could not produce its figure; the message says which step failed."""


# --- results ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The machine a figure was measured on (figures only compare within one run)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "mem_mib": mem_kib // 1024,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_result(name: str, data: dict[str, Any], out_dir: Path | None = None) -> Path:
    out = (out_dir or RESULTS) / ("%s.json" % name)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Other work on the machine skews every figure: the load average says how much there was.
    doc = {
        "benchmark": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        **data,
    }
    out.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return out


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50/p95/p99 (nearest rank), mean, max: enough to compare runs; None when empty."""
    n = len(values)
    if n == 0:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    s = sorted(values)

    def rank(p: float) -> float:
        return s[min(n - 1, max(0, int(round(p / 100.0 * n + 0.5)) - 1))]

    return {
        "n": n,
        "p50": round(rank(50), 2),
        "p95": round(rank(95), 2),
        "p99": round(rank(99), 2),
        "mean": round(sum(s) / n, 2),
        "max": round(s[-1], 2),
    }


def out_dir_arg(value: str | None) -> Path | None:
    return Path(value) if value else None


# --- CPU and memory from /proc ---------------------------------------------------------------


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User+system CPU seconds of a process (or one of its threads); 0 if it is gone."""
    path = "/proc/%d/task/%d/stat" % (pid, tid) if tid else "/proc/%d/stat" % pid
    try:
        raw = Path(path).read_text()
    except OSError:
        return 0.0
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def rss_kib(pid: int) -> int:
    try:
        for line in Path("/proc/%d/status" % pid).read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (all its threads' children)."""
    out: list[int] = []
    try:
        for task in Path("/proc/%d/task" % pid).iterdir():
            try:
                out += [int(x) for x in (task / "children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def cmdline(pid: int) -> str:
    try:
        return Path("/proc/%d/cmdline" % pid).read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def spawned_workers(pid: int) -> list[int]:
    """Children of ``pid`` started by multiprocessing's spawn (not its resource tracker)."""
    return [
        c
        for c in children(pid)
        if "multiprocessing.spawn" in cmdline(c) and "resource_tracker" not in cmdline(c)
    ]


@dataclass
class CpuProbe:
    """CPU seconds of named processes/threads between ``start()`` and ``stop()``."""

    targets: dict[str, tuple[int, int | None]]

    def __post_init__(self) -> None:
        self._t0: dict[str, float] = {}
        self._wall0 = 0.0
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def start(self) -> None:
        self._wall0 = time.monotonic()
        self._t0 = {k: cpu_seconds(p, t) for k, (p, t) in self.targets.items()}

    def stop(self) -> dict[str, float]:
        self.wall = time.monotonic() - self._wall0
        self.used = {k: cpu_seconds(p, t) - self._t0[k] for k, (p, t) in self.targets.items()}
        return self.used

    def cores(self) -> dict[str, float]:
        """Average cores busy per target over the window (1.0 = one core all the time)."""
        return {k: round(v / self.wall, 3) if self.wall else 0.0 for k, v in self.used.items()}


# --- broker ----------------------------------------------------------------------------------

# The clinic's broker settings that matter for throughput (docs/cli.md, `ivgw` provisioning):
# QoS 1 queues large enough never to drop, a 512-message batch allowed in flight, and no
# per-message debug logging (testbed.mosquitto logs "all", which costs broker CPU per packet).
PRODUCTION_BROKER = (
    "max_queued_messages %d",
    "max_queued_bytes 0",
    "max_inflight_messages 4000",
    "max_packet_size 65536",
    "autosave_interval 10",
    "log_type none",
    "log_type error",
    "log_type warning",
    "log_type notice",
)


def production_broker(workdir: Path, queue: int = 100_000, inflight: int = 4000) -> MosquittoBroker:
    lines = [line % queue if "%d" in line else line for line in PRODUCTION_BROKER]
    lines = [
        ("max_inflight_messages %d" % inflight) if line.startswith("max_inflight") else line
        for line in lines
    ]
    return MosquittoBroker(workdir, persistence=True, extra_config=tuple(lines))


# --- virtual nodes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VirtualNode:
    node_id: str
    site: str
    chair: str
    seed: bytes

    @property
    def public(self) -> bytes:
        return EdDSASigner(self.seed).public

    @property
    def topic(self) -> str:
        return topics.uplink(self.node_id, "telemetry")


def virtual_nodes(n: int, prefix: str = "v", site: str = "north") -> list[VirtualNode]:
    """``n`` nodes with fixed seeds (reproducible packets), chairs ``<prefix>1..``."""
    out = []
    for i in range(n):
        seed = (b"%s-%05d" % (prefix.encode(), i)).ljust(32, b"\0")[:32]
        out.append(VirtualNode("%s%05d" % (prefix, i + 1), site, "%s%d" % (prefix, i + 1), seed))
    return out


def register(db_path: Path, nodes: Iterable[VirtualNode]) -> int:
    """Register nodes in a gateway database the way the CLI does (the gateway may be up)."""
    conn = db.open_db(db_path, gateway_lock=False)
    n = 0
    try:
        store = Store(conn)
        with db.transaction(conn):
            for v in nodes:
                store.register_node(
                    v.node_id, v.site, v.chair, cose.ALG_EDDSA, v.public, time.time()
                )
                n += 1
    finally:
        conn.close()
    return n


def preregister(data_dir: Path, nodes: Iterable[VirtualNode]) -> int:
    """Register nodes in the database a gateway will open from ``data_dir``, before it starts.

    Registering while a gateway with worker processes runs, then ``reload_keys``, makes
    the worker pool return the previous batch's results (see docs/performance.md): the
    benchmarks therefore register every virtual node before the gateway starts.
    """
    from gateway.config import Config, GatewaySettings

    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = Config(path="", gateway=GatewaySettings(data_dir=str(data_dir)))
    return register(cfg.db_path, nodes)


@dataclass
class Pump:
    """What a virtual node's pump reports: it follows the commands it is sent, no more."""

    state: int = schema.PUMP_STOPPED
    program: int = 0
    rate_ul_h: int = 0
    vtbi_ul: int = 0
    started: float | None = None  # wall-clock seconds, for the volume it reports
    base_ul: float = 0.0

    def infused(self, now: float) -> int:
        if self.state != schema.PUMP_INFUSING or self.started is None:
            return int(self.base_ul)
        return int(min(self.vtbi_ul, self.base_ul + self.rate_ul_h * (now - self.started) / 3600))


def telemetry(
    node_id: str,
    boot: int,
    seq: int,
    up_ms: int,
    *,
    sbp: int = 125,
    pump: Pump | None = None,
    now: float = 0.0,
    permit_ms: int = 0,
) -> dict:
    """A telemetry message like the firmware's: oximeter + monitor vitals, pump, node.

    EXAMPLE vitals inside the example rules' normal bands (SBP 125, SpO2 97, HR 74).
    """
    m = schema.envelope(schema.TELEMETRY, node_id, boot, seq, up_ms)
    fresh = max(0, up_ms - 150)
    cuff = max(0, up_ms - 30_000)
    m[schema.T_VITALS] = {
        mdc.SPO2: [97, 0, mdc.DIM_PERCENT, fresh],
        mdc.PULSE_OXIM: [72, 0, mdc.DIM_BEAT_PER_MIN, fresh],
        mdc.PERF_INDEX: [250, -2, mdc.DIM_PERCENT, fresh],
        mdc.HR_ECG: [74, 0, mdc.DIM_BEAT_PER_MIN, fresh],
        mdc.RESP_RATE: [14, 0, mdc.DIM_RESP_PER_MIN, fresh],
        mdc.NIBP_SYS: [sbp * 100, -2, mdc.DIM_MMHG, cuff if sbp == 125 else fresh],
        mdc.NIBP_DIA: [8000, -2, mdc.DIM_MMHG, cuff if sbp == 125 else fresh],
        mdc.NIBP_MEAN: [9500, -2, mdc.DIM_MMHG, cuff if sbp == 125 else fresh],
    }
    p = pump or Pump()
    status: dict[int, Any] = {
        schema.P_STATE: p.state,
        schema.P_T: max(0, up_ms - 400),
        schema.P_PROGRAM: p.program,
        schema.P_ALARMS: [],
    }
    if p.program:
        status[schema.P_RATE] = p.rate_ul_h if p.state == schema.PUMP_INFUSING else 0
        status[schema.P_INFUSED] = p.infused(now)
        status[schema.P_VTBI] = p.vtbi_ul
    m[schema.T_PUMP] = status
    m[schema.T_NODE] = {
        schema.N_PERMIT_MS: permit_ms,
        schema.N_LOCAL_TRIP: False,
        schema.N_BUFFERED: 0,
        schema.N_DROPPED: 0,
        schema.N_SERIAL_BAD: 0,
    }
    return m


def birth(node_id: str, boot: int, seq: int, up_ms: int) -> dict:
    m = schema.envelope(schema.BIRTH, node_id, boot, seq, up_ms)
    m[schema.B_FIRMWARE] = "virtual-0.1"
    m[schema.B_DRIVERS] = [["pump", "ne1000"], ["oximeter", "radical7"], ["monitor", "datex-s5"]]
    m[schema.B_CAPS] = ["permit", "saf-watchdog"]
    return m


def sign(msg: dict, signer: EdDSASigner, kid: bytes) -> bytes:
    return cose.encode(cbor.dumps(msg), signer, kid)


def command_of(wire: bytes) -> dict:
    """The payload of a gateway command, not verified (a load generator only reads it)."""
    return schema.validate(cbor.loads(cose.decode(wire).payload), schema.COMMAND)


# --- gateway configuration ------------------------------------------------------------------


def write_gateway_config(
    path: Path,
    data_dir: Path,
    host: str,
    port: int,
    *,
    workers: int = 1,
    client_id: str = "ivgw-gateway",
    extra: str = "",
) -> Path:
    path.write_text(
        "# generated by bench/benchlib.py\n"
        "[gateway]\ndata_dir = %r\nworkers = %d\n\n"
        '[mqtt]\nhost = %r\nport = %d\nprotocol = "5"\nclient_id = %r\nkeepalive_s = 10\n\n'
        "%s" % (str(data_dir), workers, host, port, client_id, extra)
    )
    return path


def wait_until(
    what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = predicate()
        if v:
            return v
        if time.monotonic() > deadline:
            raise BenchError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def run_child(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=str(ROOT), capture_output=True, text=True, timeout=timeout
    )
