"""Normalized JSON for central systems: per-chair retained state and an event stream.

Central subscribers (a nurse station, an integration engine) read these without any
knowledge of CBOR or COSE: MDC codes with their names and UCUM units, ISO-8601 UTC times.
The schema is in docs/asyncapi.yaml (``chairState``, ``chairEvent``, ``gatewayStatus``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from protocol import mdc, schema, topics

if TYPE_CHECKING:
    from gateway.core import Chair, Publish


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _publish(topic: str, body: dict, retain: bool) -> Publish:
    from gateway.core import Publish

    return Publish(topic, json.dumps(body, separators=(",", ":")).encode(), 1, retain)


def chair_state_dict(chair: Chair, now: float) -> dict[str, Any]:
    pump = chair.pump
    ev = chair.evaluation
    vitals = []
    for code, (value, measured) in sorted(chair.vitals.items()):
        unit = mdc.UNITS.get(code)
        vitals.append({"mdc": code, "name": mdc.NAMES.get(code, str(code)),
                       "value": float(value), "unit": mdc.UNIT_NAMES.get(unit or 0, ""),
                       "unitMdc": unit, "time": iso(measured),
                       "ageS": round(max(0.0, now - measured), 1)})
    state = pump.get(schema.P_STATE, schema.PUMP_UNKNOWN)
    body: dict[str, Any] = {
        "site": chair.node.site,
        "chair": chair.node.chair,
        "node": chair.node.node_id,
        "online": chair.online,
        "updated": iso(now),
        "firmware": chair.firmware,
        "session": chair.session_id,
        "pump": {
            "state": schema.PUMP_STATE_NAMES[state],
            "rate": {"value": (pump.get(schema.P_RATE) or 0) / 1000.0, "unit": "mL/h"},
            "volumeInfused": {"value": (pump.get(schema.P_INFUSED) or 0) / 1000.0, "unit": "mL"},
            "volumeToBeInfused": {"value": (pump.get(schema.P_VTBI) or 0) / 1000.0, "unit": "mL"},
            "alarms": list(pump.get(schema.P_ALARMS, [])),
        },
        "vitals": vitals,
        "interlocks": [c.text for c in (ev.alarms + ev.warnings)] if ev else [],
        "latched": bool(ev and ev.latched),
        "permitRemainingMs": int(max(0.0, chair.permit_until - now) * 1000),
    }
    return body


def chair_state(chair: Chair, now: float) -> Publish:
    return _publish(topics.chair_state(chair.node.site, chair.node.chair),
                    chair_state_dict(chair, now), True)


def event(chair: Chair, kind: str, severity: str, detail: str, now: float) -> Publish:
    return _publish(topics.chair_event(chair.node.site, chair.node.chair),
                    {"site": chair.node.site, "chair": chair.node.chair,
                     "node": chair.node.node_id, "kind": kind, "severity": severity,
                     "time": iso(now), "detail": detail}, False)


def gateway_status(online: bool, since: float, version: str, anchor: str = "") -> bytes:
    body: dict[str, Any] = {"online": online, "since": iso(since), "version": version}
    if anchor:
        body["auditAnchor"] = anchor
    return json.dumps(body, separators=(",", ":")).encode()
