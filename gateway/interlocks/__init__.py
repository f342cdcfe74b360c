"""Infusion-stop interlocks: vital-sign rules per clinical protocol, latching, permits.

``rules`` reads and checks a protocol's YAML rule set (config/rules.example.yaml is an
EXAMPLE for a clinic's medical director); ``engine`` applies it per chair with time passed
in by the caller. docs/interlocks.md describes the file format and the semantics.
"""

from __future__ import annotations

from gateway.interlocks.engine import UNSPECIFIED_PUMP_ALARM, InterlockEngine
from gateway.interlocks.results import (
    AckResult,
    Condition,
    Evaluation,
    InterlockError,
    PumpState,
    Reading,
    Trip,
)
from gateway.interlocks.rules import (
    DEFAULT_SOURCES,
    Band,
    CombineRule,
    ParameterRule,
    PumpRule,
    RuleIssue,
    RulesError,
    RuleSet,
    load_ruleset,
    parse_ruleset,
)

__all__ = [
    "DEFAULT_SOURCES",
    "UNSPECIFIED_PUMP_ALARM",
    "AckResult",
    "Band",
    "CombineRule",
    "Condition",
    "Evaluation",
    "InterlockEngine",
    "InterlockError",
    "ParameterRule",
    "PumpRule",
    "PumpState",
    "Reading",
    "RuleIssue",
    "RuleSet",
    "RulesError",
    "Trip",
    "load_ruleset",
    "parse_ruleset",
]
