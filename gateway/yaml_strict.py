"""The strict YAML reading shared by the hand-written clinical files (drug library, interlock rules).

Both files are safety documents a medical director reviews line by line, so a YAML trap must
fail the same way in both: aliases and merge keys (a value must be visible where it applies),
duplicate keys (PyYAML keeps the last one without a word), unknown keys (a typo must not
silently drop a limit), quoted numbers and YAML's surprising number forms (``0x10``,
``1_000``, ``010``, ``1:30``, ``.inf``). Documents are only *composed* into nodes, never
constructed into Python objects, so every value is read from the text the author wrote and
every issue names the line and column of its token. Each loader subclasses ``StrictReader``
with what is about its own domain; what is about YAML lives here, once.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Generic, TypeVar

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "BOOL_TAG",
    "FLOAT_TAG",
    "INT_TAG",
    "MERGE_TAG",
    "NULL_TAG",
    "NUMBER_TAGS",
    "STR_TAG",
    "StrictReader",
    "YamlFileError",
    "YamlIssue",
    "at",
    "is_empty",
    "is_plain",
    "join_path",
    "node_kind",
    "read_source",
]

INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
BOOL_TAG = "tag:yaml.org,2002:bool"
NULL_TAG = "tag:yaml.org,2002:null"
STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"
NUMBER_TAGS = (INT_TAG, FLOAT_TAG)

# A decimal as people write it on paper; anything else YAML calls a number is refused.
_SIGNED = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_UNSIGNED = re.compile(r"(0|[1-9][0-9]*)(\.[0-9]+)?")


@dataclass(frozen=True)
class YamlIssue:
    """One problem in a file, located at the token that causes it (1-based; line 0: no place)."""

    source: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}:{self.column}" if self.line else self.source
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


IssueT = TypeVar("IssueT", bound=YamlIssue)


class YamlFileError(ValueError, Generic[IssueT]):
    """The file cannot be used; ``issues`` lists every problem found, in file order."""

    def __init__(self, issues: Sequence[IssueT]) -> None:
        self.issues: tuple[IssueT, ...] = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def read_source(
    path: str | os.PathLike[str],
    max_bytes: int,
    error: type[YamlFileError[IssueT]],
    issue: type[IssueT],
) -> tuple[str, bytes]:
    """The file's name and bytes; one byte past ``max_bytes`` is read so "too large" shows."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            return source, f.read(max_bytes + 1)
    except OSError as e:
        raise error([issue(source, 0, 0, "", f"cannot read the file ({e.strerror})")]) from e


def join_path(path: str, key: str) -> str:
    """The dotted field path of ``key`` below ``path``, as messages name it."""
    return f"{path}.{key}" if path else key


def at(node: Node) -> str:
    return f"at line {node.start_mark.line + 1}, column {node.start_mark.column + 1}"


def is_plain(node: ScalarNode) -> bool:
    """Written without quotes or block style, so YAML's implicit typing applied to it."""
    return node.style in (None, "")


def is_empty(node: ScalarNode) -> bool:
    """Nothing written (``key:``), or ``~``/``null``: YAML's way of saying no value."""
    return node.tag == NULL_TAG and is_plain(node)


def node_kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "mapping"
    if isinstance(node, SequenceNode):
        return "list"
    return "value"


class StrictReader(Generic[IssueT]):
    """Walks composed YAML nodes, collecting every issue instead of stopping at the first.

    Subclasses set ``reviewed`` (what the alias message says must stay reviewable),
    ``unhinted`` (field names that are real elsewhere in the document, where a "did you
    mean" guess would mislead) and may override ``first_note`` to word duplicate messages.
    """

    reviewed = "the file"
    unhinted: frozenset[str] = frozenset()

    def __init__(self, source: str, issue_type: type[IssueT]) -> None:
        self.source = source
        self.issues: list[IssueT] = []
        self._issue_type = issue_type

    def issue(self, line: int, column: int, path: str, message: str) -> None:
        self.issues.append(self._issue_type(self.source, line, column, path, message))

    def error(self, node: Node, path: str, message: str) -> None:
        m = node.start_mark
        self.issue(m.line + 1, m.column + 1, path, message)

    def first_note(self, node: Node) -> str:
        """Where a repeated key was first given, for the 'duplicate ...' messages."""
        return f"first {at(node)}"

    def in_file_order(self) -> list[IssueT]:
        """Every issue by position; a document that yielded nothing and no issue was empty."""
        if not self.issues:
            self.issue(1, 1, "", "the file is empty")
        return sorted(self.issues, key=lambda i: (i.line, i.column))

    # -- YAML level -------------------------------------------------------------------------

    def document(self, data: bytes, max_bytes: int) -> Node | None:
        """The one YAML document in ``data``, or None (with the reason among the issues)."""
        if len(data) > max_bytes:
            self.issue(1, 1, "", f"file is larger than {max_bytes} bytes")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            self.issue(1, 1, "", f"not UTF-8 text (byte {e.start})")
            return None
        return self.compose(text)

    def compose(self, text: str) -> Node | None:
        try:
            for event in yaml.parse(text, Loader=yaml.SafeLoader):
                if isinstance(event, yaml.AliasEvent):
                    m = event.start_mark
                    self.issue(
                        m.line + 1,
                        m.column + 1,
                        "",
                        f"alias *{event.anchor} is not allowed: write every value out "
                        f"where it applies so {self.reviewed} can be reviewed line by line",
                    )
            if self.issues:
                return None
            node: Node | None = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as e:
            m = e.problem_mark or e.context_mark
            line, col = (m.line + 1, m.column + 1) if m is not None else (1, 1)
            self.issue(line, col, "", f"YAML error: {e.problem or e.context or 'invalid YAML'}")
            return None
        except yaml.YAMLError as e:
            self.issue(1, 1, "", f"YAML error: {e}")
            return None
        return node

    def fields(
        self,
        node: Node,
        path: str,
        required: Sequence[str],
        optional: Sequence[str] = (),
        *,
        anchor: Node | None = None,
    ) -> dict[str, tuple[Node, Node]] | None:
        """Fixed-key mapping: reports unknown, duplicate and missing keys.

        Missing keys are reported at ``anchor`` (e.g. the key naming this block) if given,
        else at the mapping itself.
        """
        if not isinstance(node, MappingNode):
            self.error(node, path, "must be a mapping of fields")
            return None
        allowed = (*required, *optional)
        out: dict[str, tuple[Node, Node]] = {}
        for k, v in node.value:
            if not isinstance(k, ScalarNode):
                self.error(k, path, "field names must be plain words")
                continue
            if k.tag == MERGE_TAG:
                self.error(k, path, "merge keys (<<) are not allowed: write every field out")
                continue
            name = k.value
            if name in out:
                self.error(k, path, f"duplicate field '{name}' ({self.first_note(out[name][0])})")
                continue
            if name not in allowed:
                hint = (
                    [] if name in self.unhinted else difflib.get_close_matches(name, allowed, n=1)
                )
                extra = (
                    f"; did you mean '{hint[0]}'?" if hint else f" (allowed: {', '.join(allowed)})"
                )
                self.error(k, path, f"unknown field '{name}'{extra}")
                continue
            out[name] = (k, v)
        for name in required:
            if name not in out:
                self.error(anchor or node, path, f"missing required field '{name}'")
        return out

    # -- scalars ----------------------------------------------------------------------------

    def not_a(self, node: Node, path: str, what: str) -> None:
        """Say why ``node`` is not ``what``, naming the most likely slip first."""
        if not isinstance(node, ScalarNode):
            self.error(node, path, f"must be {what}, not a {node_kind(node)}")
        elif is_empty(node):
            self.error(node, path, f"must be {what}, not empty")
        elif not is_plain(node) and _SIGNED.fullmatch(node.value.strip()):
            self.error(node, path, f"must be {what}, not quoted text '{node.value}'")
        else:
            self.error(node, path, f"must be {what}, not '{node.value}'")

    def decimal(self, node: Node, path: str, *, signed: bool, example: str) -> Decimal | None:
        """A plain decimal exactly as written (``40``, ``0.75``; ``-1`` if ``signed``)."""
        if not (isinstance(node, ScalarNode) and node.tag in NUMBER_TAGS and is_plain(node)):
            self.not_a(node, path, "a number")
            return None
        if not (_SIGNED if signed else _UNSIGNED).fullmatch(node.value):
            signs = "'+'" if signed else "signs"
            self.error(
                node,
                path,
                f"must be a plain decimal number such as {example}, not '{node.value}' "
                f"(no {signs}, exponents, underscores, leading zeros, hex or infinities)",
            )
            return None
        return Decimal(node.value)
