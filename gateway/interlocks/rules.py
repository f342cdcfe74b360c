"""The interlock rule set of one clinical protocol, and the strict YAML loader that reads it.

A rule set decides when a patient's infusion is stopped, so it is a safety document written
by hand and reviewed line by line. The loader is strict where a lenient reading would hide a
mistake: unknown keys (a typo such as ``critcal`` must not silently drop a limit), duplicate
keys (PyYAML keeps the last one without a word), quoted numbers, YAML's surprising number
forms (``0x10``, ``1_000``, ``010``, ``1:30``, ``.inf``), aliases (every limit must be visible
where it applies), and limits that contradict each other (a warning limit outside its
critical limit). The file is only *composed* into YAML nodes, never constructed into Python
objects, so numbers are read from the text the author wrote and every error names the line
and column of the offending token. All errors are collected and raised together so one run of
``ivgw rules validate FILE`` lists them all.

Limits are the last *acceptable* values: ``critical: {low: 90}`` means a value below 90 is a
breach and 90 itself is not. The clinical numbers in ``config/rules.example.yaml`` are
examples for a clinic's medical director, not recommendations.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from decimal import Decimal

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.yaml_strict import (
    BOOL_TAG,
    INT_TAG,
    STR_TAG,
    StrictReader,
    YamlFileError,
    YamlIssue,
    is_empty,
    is_plain,
    join_path,
    node_kind,
    read_source,
)
from protocol import mdc

__all__ = [
    "DEFAULT_SOURCES",
    "FORMAT",
    "MAX_FILE_BYTES",
    "Band",
    "CombineRule",
    "ParameterRule",
    "PumpRule",
    "RuleIssue",
    "RuleSet",
    "RulesError",
    "load_ruleset",
    "parse_ruleset",
]

FORMAT = 1
MAX_FILE_BYTES = 1_000_000
MAX_SECONDS = Decimal(86400)  # a day: anything longer is a typo, not a clinical duration

# Parameter name -> MDC codes it reads when the file gives no ``sources`` (protocol/mdc.py).
DEFAULT_SOURCES: dict[str, tuple[int, ...]] = {
    "spo2": (mdc.SPO2,),
    "hr": (mdc.HR_ECG,),
    "pr": (mdc.PULSE_OXIM,),
    "nibp_sys": (mdc.NIBP_SYS,),
    "nibp_dia": (mdc.NIBP_DIA,),
    "nibp_mean": (mdc.NIBP_MEAN,),
    "rr": (mdc.RESP_RATE,),
    "etco2": (mdc.ETCO2,),
}

# Names the engine uses for its own conditions and rule ids; a vital may not take them.
_RESERVED = frozenset({"pump", "node", "combine", "manual", "restore"})

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_PROTOCOL = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_ALARM_CODE = re.compile(r"[a-z0-9_]{1,16}")

_TOP_REQUIRED = ("format", "protocol", "version", "approved_by", "parameters", "combine", "pump")
_PARAM_REQUIRED = ("required_for_permit", "max_age_s")
_PARAM_OPTIONAL = ("sources", "warning", "critical")
_BAND_REQUIRED = ("for_s",)
_BAND_OPTIONAL = ("low", "high", "clear_s")
_COMBINE_REQUIRED = ("warnings_to_alarm", "missing_counts_as_warning")
_PUMP_REQUIRED = ("trip_on_alarms", "node_offline_s")


# -- the model ------------------------------------------------------------------------------


# A started breach is forgotten after this long back in range unless the band says otherwise:
# long enough that a value wobbling around a threshold (89, 91, 89, ...) keeps its timer
# running, short enough that two isolated motion artefacts 8 s apart do not add up to a
# "10 s" desaturation (seen in the demo before this default: docs/interlocks.md).
DEFAULT_CLEAR_S = 3.0


@dataclass(frozen=True)
class Band:
    """One severity's limits on one vital, with its timing.

    ``for_s``: how long a value must stay past a limit before the condition is met (0: at
    once). ``clear_s``: how long the value must stay back inside the limit before a started
    or met condition is forgotten; it is what stops a value wobbling around a threshold from
    restarting the ``for_s`` timer and hiding a sustained breach.
    """

    low: Decimal | None
    high: Decimal | None
    for_s: float
    clear_s: float


@dataclass(frozen=True)
class ParameterRule:
    """Rules for one vital: where its value comes from, how old it may be, its limits."""

    name: str
    sources: tuple[int, ...]  # MDC codes in priority order: the first fresh one is used
    required_for_permit: bool
    max_age_s: float
    warning: Band | None
    critical: Band | None
    line: int  # where the parameter is defined, for messages


@dataclass(frozen=True)
class CombineRule:
    """ICE PCA's combination: enough simultaneous warnings make an alarm."""

    warnings_to_alarm: int
    missing_counts_as_warning: bool


@dataclass(frozen=True)
class PumpRule:
    """Which pump alarms trip the interlock, and how long the chair's node may be silent."""

    trip_on_any_alarm: bool
    trip_on_alarms: frozenset[str]  # lower-case codes; empty with trip_on_any_alarm
    node_offline_s: float

    def trips_on(self, code: str) -> bool:
        return self.trip_on_any_alarm or code.lower() in self.trip_on_alarms


@dataclass(frozen=True)
class RuleSet:
    """One clinical protocol's interlock rules, identified by the SHA-256 of its file bytes.

    The digest, not the version string, is what the audit record names: someone may forget
    to bump ``version``, but not change the bytes without changing the digest.
    """

    format: int
    protocol: str
    version: str
    approved_by: str
    parameters: tuple[ParameterRule, ...]
    combine: CombineRule
    pump: PumpRule
    source: str
    sha256: str

    def parameter(self, name: str) -> ParameterRule:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def summary(self) -> str:
        """One line for ``ivgw rules validate`` on success."""
        req = [p.name for p in self.parameters if p.required_for_permit]
        return (
            f"{self.source}: ok: protocol {self.protocol} version {self.version}, "
            f"{len(self.parameters)} parameters ({len(req)} required for a permit: "
            f"{', '.join(req) or 'none'}), sha256 {self.sha256}"
        )


# -- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleIssue(YamlIssue):
    """One problem in a rules file, located at the token that causes it (1-based)."""


class RulesError(YamlFileError[RuleIssue]):
    """The rules file cannot be used; ``issues`` lists every problem found, in file order."""


# -- loading --------------------------------------------------------------------------------


def load_ruleset(path: str | os.PathLike[str]) -> RuleSet:
    """Read and validate the rules file at ``path``; raise ``RulesError`` on any fault."""
    source, data = read_source(path, MAX_FILE_BYTES, RulesError, RuleIssue)
    return parse_ruleset(data, source)


def parse_ruleset(data: bytes | str, source: str = "<memory>") -> RuleSet:
    """Validate rules-file bytes; the rule set's identity is the SHA-256 of these bytes."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    r = _Reader(source, RuleIssue)
    root = r.document(raw, MAX_FILE_BYTES)
    rules = r.ruleset(root, hashlib.sha256(raw).hexdigest()) if root is not None else None
    if r.issues or rules is None:
        raise RulesError(r.in_file_order())
    return rules


class _Reader(StrictReader[RuleIssue]):
    """The rule set's own structure and limits; the YAML strictness is ``StrictReader``'s."""

    reviewed = "the rules"

    def first_note(self, node: Node) -> str:
        return f"first given on line {node.start_mark.line + 1}"

    # -- scalars ----------------------------------------------------------------------------

    def number(self, node: Node, path: str) -> Decimal | None:
        """A plain non-negative decimal as written, e.g. ``90`` or ``37.5``."""
        return self.decimal(node, path, signed=False, example="90 or 37.5")

    def seconds(self, node: Node, path: str, *, positive: bool) -> float | None:
        value = self.number(node, path)
        if value is None:
            return None
        if positive and value <= 0:
            self.error(node, path, f"must be greater than 0 seconds, not {node.value}")
            return None
        if value > MAX_SECONDS:
            self.error(node, path, f"must be at most {MAX_SECONDS} seconds, not {node.value}")
            return None
        return float(value)

    def boolean(self, node: Node, path: str) -> bool | None:
        if (
            isinstance(node, ScalarNode)
            and node.tag == BOOL_TAG
            and is_plain(node)
            and node.value in ("true", "false")
        ):
            return bool(node.value == "true")
        self.not_a(node, path, "true or false")
        return None

    def integer(self, node: Node, path: str, *, minimum: int) -> int | None:
        if not (
            isinstance(node, ScalarNode)
            and node.tag == INT_TAG
            and is_plain(node)
            and re.fullmatch(r"0|[1-9][0-9]{0,9}", node.value)
        ):
            self.not_a(node, path, "a whole number")
            return None
        value = int(node.value)
        if value < minimum:
            self.error(node, path, f"must be at least {minimum}, not {value}")
            return None
        return value

    def text(self, node: Node, path: str, *, pattern: re.Pattern[str], rule: str) -> str | None:
        if not isinstance(node, ScalarNode) or is_empty(node):
            self.not_a(node, path, "text")
            return None
        value = node.value.strip()
        if node.tag not in (STR_TAG, INT_TAG) and is_plain(node):
            # e.g. `version: 1.10` is the float 1.1 to any other YAML reader
            self.error(node, path, f'must be text; quote it ("{value}") so it is read as written')
            return None
        if not pattern.fullmatch(value):
            self.error(node, path, f"'{value}' must be {rule}")
            return None
        return str(value)

    # -- document ---------------------------------------------------------------------------

    def ruleset(self, root: Node, sha256: str) -> RuleSet | None:
        f = self.fields(root, "", _TOP_REQUIRED)
        if f is None:
            return None
        if "format" in f:
            node = f["format"][1]
            if not (
                isinstance(node, ScalarNode)
                and node.tag == INT_TAG
                and is_plain(node)
                and node.value == str(FORMAT)
            ):
                value = node.value if isinstance(node, ScalarNode) else "?"
                self.error(
                    node, "format", f"unsupported format '{value}' (this gateway reads {FORMAT})"
                )
                return None  # the rest of the document may mean something else
        protocol = version = approved_by = None
        if "protocol" in f:
            protocol = self.text(
                f["protocol"][1],
                "protocol",
                pattern=_PROTOCOL,
                rule="1-32 lowercase letters, digits, '-' or '_', e.g. ketamine-trd",
            )
        if "version" in f:
            version = self.text(
                f["version"][1],
                "version",
                pattern=_VERSION,
                rule="1-64 letters, digits, '.', '_', '+' or '-', e.g. \"2024-06-01.1\"",
            )
        if "approved_by" in f:
            approved_by = self.text(
                f["approved_by"][1],
                "approved_by",
                pattern=re.compile(r"[^\x00-\x1f\x7f]{1,200}"),
                rule="1-200 characters on one line naming who approved these rules",
            )
        params = self.parameters(f["parameters"][1]) if "parameters" in f else None
        combine = self.combine(f["combine"][1]) if "combine" in f else None
        pump = self.pump(f["pump"][1]) if "pump" in f else None
        if (
            protocol is None
            or version is None
            or approved_by is None
            or params is None
            or combine is None
            or pump is None
            or self.issues
        ):
            return None
        return RuleSet(
            format=FORMAT,
            protocol=protocol,
            version=version,
            approved_by=approved_by,
            parameters=params,
            combine=combine,
            pump=pump,
            source=self.source,
            sha256=sha256,
        )

    def parameters(self, node: Node) -> tuple[ParameterRule, ...] | None:
        if not isinstance(node, MappingNode):
            self.error(node, "parameters", "must be a mapping of parameter name to its rules")
            return None
        if not node.value:
            self.error(node, "parameters", "must define at least one parameter")
            return None
        out: list[ParameterRule] = []
        first: dict[str, Node] = {}
        ok = True
        for k, v in node.value:
            if not isinstance(k, ScalarNode):
                self.error(k, "parameters", "parameter names must be plain words")
                ok = False
                continue
            name = k.value
            if name in first:
                note = self.first_note(first[name])
                self.error(k, "parameters", f"duplicate parameter '{name}' ({note})")
                ok = False
                continue
            first[name] = k
            if not _NAME.fullmatch(name):
                self.error(
                    k,
                    "parameters",
                    f"parameter name '{name}' must be 1-32 lowercase letters, digits or '_', "
                    "starting with a letter",
                )
                ok = False
                continue
            if name in _RESERVED:
                self.error(k, "parameters", f"'{name}' is reserved for the engine's own rules")
                ok = False
                continue
            p = self.parameter(name, k, v)
            if p is None:
                ok = False
            else:
                out.append(p)
        return tuple(out) if ok else None

    def parameter(self, name: str, key: Node, node: Node) -> ParameterRule | None:
        path = join_path("parameters", name)
        f = self.fields(node, path, _PARAM_REQUIRED, _PARAM_OPTIONAL)
        if f is None:
            return None
        if "sources" in f:
            sources = self.sources(f["sources"][1], join_path(path, "sources"))
        elif name in DEFAULT_SOURCES:
            sources = DEFAULT_SOURCES[name]
        else:
            known = ", ".join(sorted(DEFAULT_SOURCES))
            self.error(
                key,
                path,
                f"'{name}' is not a known vital ({known}): give its MDC codes in 'sources'",
            )
            sources = None
        required = (
            self.boolean(f["required_for_permit"][1], join_path(path, "required_for_permit"))
            if "required_for_permit" in f
            else None
        )
        max_age = (
            self.seconds(f["max_age_s"][1], join_path(path, "max_age_s"), positive=True)
            if "max_age_s" in f
            else None
        )
        warning = critical = None
        bad_band = False
        if "warning" in f:
            warning = self.band(f["warning"][1], join_path(path, "warning"))
            bad_band |= warning is None
        if "critical" in f:
            critical = self.band(f["critical"][1], join_path(path, "critical"))
            bad_band |= critical is None
        if warning is not None and critical is not None:
            self.nest(warning, critical, f["warning"][1], path)
        if sources is None or required is None or max_age is None or bad_band:
            return None
        return ParameterRule(
            name=name,
            sources=sources,
            required_for_permit=required,
            max_age_s=max_age,
            warning=warning,
            critical=critical,
            line=key.start_mark.line + 1,
        )

    def sources(self, node: Node, path: str) -> tuple[int, ...] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, path, "must be a list of MDC codes, e.g. [147842, 149530]")
            return None
        if not node.value:
            self.error(node, path, "must list at least one MDC code")
            return None
        out: list[int] = []
        ok = True
        for item in node.value:
            code = self.integer(item, path, minimum=0)
            if code is None:
                ok = False
                continue
            if code not in mdc.UNITS:
                known = ", ".join(f"{c} {mdc.NAMES[c]}" for c in sorted(mdc.UNITS))
                self.error(item, path, f"{code} is not a vital the nodes send (known: {known})")
                ok = False
                continue
            if code in out:
                self.error(item, path, f"MDC code {code} is listed twice")
                ok = False
                continue
            out.append(code)
        return tuple(out) if ok else None

    def band(self, node: Node, path: str) -> Band | None:
        f = self.fields(node, path, _BAND_REQUIRED, _BAND_OPTIONAL)
        if f is None:
            return None
        low = high = None
        ok = True
        if "low" in f:
            low = self.number(f["low"][1], join_path(path, "low"))
            ok &= low is not None
        if "high" in f:
            high = self.number(f["high"][1], join_path(path, "high"))
            ok &= high is not None
        if "low" not in f and "high" not in f:
            self.error(node, path, "must give a 'low' limit, a 'high' limit or both")
            ok = False
        if low is not None and high is not None and low >= high:
            self.error(
                f["high"][1], join_path(path, "high"), f"must be above low ({low}), not {high}"
            )
            ok = False
        for_s = (
            self.seconds(f["for_s"][1], join_path(path, "for_s"), positive=False)
            if "for_s" in f
            else None
        )
        clear_s: float | None = None if for_s is None else min(for_s, DEFAULT_CLEAR_S)
        if "clear_s" in f:
            clear_s = self.seconds(f["clear_s"][1], join_path(path, "clear_s"), positive=False)
        if not ok or for_s is None or clear_s is None:
            return None
        return Band(low=low, high=high, for_s=for_s, clear_s=clear_s)

    def nest(self, warning: Band, critical: Band, warning_node: Node, path: str) -> None:
        """A warning limit outside its critical limit is almost surely a typo: refuse it."""
        if warning.low is not None and critical.low is not None and warning.low < critical.low:
            self.error(
                _value_node(warning_node, "low"),
                join_path(path, "warning.low"),
                f"warning low {warning.low} is below critical low {critical.low}; "
                "a warning limit must lie inside the critical limits",
            )
        if warning.high is not None and critical.high is not None and warning.high > critical.high:
            self.error(
                _value_node(warning_node, "high"),
                join_path(path, "warning.high"),
                f"warning high {warning.high} is above critical high {critical.high}; "
                "a warning limit must lie inside the critical limits",
            )

    def combine(self, node: Node) -> CombineRule | None:
        f = self.fields(node, "combine", _COMBINE_REQUIRED)
        if f is None:
            return None
        n = (
            self.integer(f["warnings_to_alarm"][1], "combine.warnings_to_alarm", minimum=1)
            if "warnings_to_alarm" in f
            else None
        )
        missing = (
            self.boolean(f["missing_counts_as_warning"][1], "combine.missing_counts_as_warning")
            if "missing_counts_as_warning" in f
            else None
        )
        if n is None or missing is None:
            return None
        return CombineRule(warnings_to_alarm=n, missing_counts_as_warning=missing)

    def pump(self, node: Node) -> PumpRule | None:
        f = self.fields(node, "pump", _PUMP_REQUIRED)
        if f is None:
            return None
        any_alarm: bool | None = None
        codes: list[str] = []
        if "trip_on_alarms" in f:
            v = f["trip_on_alarms"][1]
            path = "pump.trip_on_alarms"
            if isinstance(v, ScalarNode) and is_plain(v) and v.value == "any":
                any_alarm = True
            elif isinstance(v, SequenceNode):
                any_alarm = False
                for item in v.value:
                    if not (
                        isinstance(item, ScalarNode)
                        and item.tag == STR_TAG
                        and _ALARM_CODE.fullmatch(item.value)
                    ):
                        value = item.value if isinstance(item, ScalarNode) else node_kind(item)
                        self.error(
                            item,
                            path,
                            f"alarm code '{value}' must be 1-16 lowercase letters, digits or '_'",
                        )
                        any_alarm = None
                    elif item.value in codes:
                        self.error(item, path, f"alarm code '{item.value}' is listed twice")
                        any_alarm = None
                    else:
                        codes.append(item.value)
            else:
                self.not_a(v, path, "'any' or a list of pump alarm codes such as [stalled]")
        offline = (
            self.seconds(f["node_offline_s"][1], "pump.node_offline_s", positive=True)
            if "node_offline_s" in f
            else None
        )
        if any_alarm is None or offline is None:
            return None
        return PumpRule(
            trip_on_any_alarm=any_alarm,
            trip_on_alarms=frozenset(codes),
            node_offline_s=offline,
        )


def _value_node(mapping: Node, key: str) -> Node:
    """The node of ``key``'s value in an already validated mapping (first occurrence)."""
    assert isinstance(mapping, MappingNode)
    for k, v in mapping.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return v
    return mapping
