"""YAML text to plain Python data that remembers where every key and value was written.

The node graph comes from libyaml's composer (``CSafeLoader``) when available, so a 100,000-user
manifest parses in seconds; the conversion to Python keeps each mapping's key and value positions on
the mapping itself (``YamlMap.key_marks`` / ``value_marks``), which is what lets every later message
say file:line:column without parsing twice.

Choices where YAML is loose:
- mapping keys are taken as the text written (``007:`` is the id "007", ``true:`` is "true"): ids
  are never reinterpreted as numbers or booleans;
- a key written twice in one mapping is an error (PyYAML would silently keep the last one);
- merge keys (``<<: *defaults``) work as in YAML 1.1; explicit keys win over merged ones;
- tags other than YAML's standard scalar tags (``!!python/...``, ``!!set``, custom) are refused.

Bounded: an alias shares its value instead of copying it, but every later step walks the expanded
document, so a few hundred bytes of nested aliases ("billion laughs") could stand for billions of
values. Each file may expand to at most ``expansion_budget(bytes)`` values (``ALIAS_BUDGET_BASE`` plus
``ALIAS_BUDGET_PER_BYTE`` per byte of YAML; written-out YAML needs at least a byte or two a value, so a
manifest without aliases never comes near it), counted as the file is converted and refused at the
alias that crosses it. The containers' ``repr`` is short, so no message ever prints a huge value.
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from dataclasses import dataclass
from sys import intern

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from facesync.manifest.diagnostics import Diagnostic, error
from facesync.model import Origin

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ALIAS_BUDGET_BASE = 100_000
ALIAS_BUDGET_PER_BYTE = 4


def expansion_budget(size: int) -> int:
    """The most values a YAML file of ``size`` bytes may expand to, aliases counted each time used."""
    return ALIAS_BUDGET_BASE + ALIAS_BUDGET_PER_BYTE * size

STR_TAG = "tag:yaml.org,2002:str"
MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
MERGE_TAG = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = {
    tag for tag in SafeConstructor.yaml_constructors
    if tag and tag.startswith("tag:yaml.org,2002:") and tag.rsplit(":", 1)[1]
    in ("null", "bool", "int", "float", "str", "timestamp", "binary")
}


class YamlMap(dict):
    """A mapping with the (line, column) of each key and each value, 1-based."""

    __slots__ = ("key_marks", "value_marks")

    def __init__(self):
        super().__init__()
        self.key_marks: dict[str, tuple[int, int]] = {}
        self.value_marks: dict[str, tuple[int, int]] = {}

    def __repr__(self) -> str:  # never the content: error messages (jsonschema's too) must stay small
        return f"<mapping of {len(self)} keys>"


class YamlList(list):
    """A sequence with the (line, column) of each item, 1-based."""

    __slots__ = ("item_marks",)

    def __init__(self):
        super().__init__()
        self.item_marks: list[tuple[int, int]] = []

    def __repr__(self) -> str:
        return f"<list of {len(self)} items>"


@dataclass(frozen=True)
class Parsed:
    """A parsed file: ``data`` is None when ``diagnostics`` holds a syntax error."""

    file: str
    data: object
    diagnostics: tuple[Diagnostic, ...]


def _mark(node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _TooLarge(Exception):
    """Aliases expand the file past its budget; ``node`` is the alias that crossed it."""

    def __init__(self, node):
        super().__init__()
        self.node = node


class _Convert:
    def __init__(self, file: str, budget: int):
        self.file = file
        self.constructor = SafeConstructor()
        self.diagnostics: list[Diagnostic] = []
        self.done: dict[int, object] = {}
        self.active: set[int] = set()
        self.budget = budget
        self.values = 0  # of the expanded document so far: written values, plus all an alias brings each time
        self.sizes: dict[int, int] = {}  # id of a converted container reached by an alias → its expanded size

    def fail(self, node, message: str, hint: str | None = None) -> None:
        line, column = _mark(node)
        self.diagnostics.append(error(Origin(self.file, line, column), "", message, hint))

    def value(self, node):
        if isinstance(node, ScalarNode):
            if node.tag == STR_TAG:
                return node.value
            return self.scalar(node)
        key = id(node)
        if key in self.done:  # an alias: share the value, but count all it stands for
            shared = self.done[key]
            self.values += self.expanded(shared)
            if self.values > self.budget:
                raise _TooLarge(node)
            return shared
        if key in self.active:
            self.fail(node, "recursive YAML alias", "an anchor cannot contain an alias to itself")
            return None
        self.active.add(key)
        try:
            result = self.mapping(node) if isinstance(node, MappingNode) else self.sequence(node)
        finally:
            self.active.discard(key)
        self.done[key] = result
        return result

    def expanded(self, value) -> int:
        """How many values ``value`` stands for once every alias inside it is written out (memoised:
        the cost is the number of distinct containers, however large the expansion)."""
        if type(value) is not YamlMap and type(value) is not YamlList:
            return 1
        size = self.sizes.get(id(value))
        if size is None:
            size = 1 + sum(self.expanded(item) for item in (value.values() if type(value) is YamlMap else value))
            self.sizes[id(value)] = size
        return size

    def scalar(self, node: ScalarNode):
        if node.tag not in _SCALAR_TAGS:
            self.fail(node, f"unsupported YAML tag {node.tag!r}", "write a plain value without a tag")
            return None
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ValueError, TypeError, OverflowError, yaml.YAMLError) as problem:  # e.g. 2024-13-45 matches the timestamp pattern but is no date
            self.fail(node, f"cannot read value {node.value!r}: {problem}", "quote it to make it a string")
            return None

    def sequence(self, node: SequenceNode) -> YamlList | None:
        if node.tag != SEQ_TAG:
            self.fail(node, f"unsupported YAML tag {node.tag!r}", "write a plain list without a tag")
            return None
        result = YamlList()
        append, append_mark = result.append, result.item_marks.append
        self.values += 1 + len(node.value)
        for item in node.value:
            if type(item) is ScalarNode and item.tag == STR_TAG:
                append(item.value)
            else:
                append(self.value(item))
            mark = item.start_mark
            append_mark((mark.line + 1, mark.column + 1))
        return result

    def mapping(self, node: MappingNode) -> YamlMap | None:
        """The mapping's entries; each entry's nodes are let go once converted (see ``_release``)."""
        if node.tag != MAP_TAG:
            self.fail(node, f"unsupported YAML tag {node.tag!r}", "write a plain mapping without a tag")
            return None
        result = YamlMap()
        key_marks, value_marks = result.key_marks, result.value_marks
        merged: list[tuple[str, object, tuple[int, int], tuple[int, int]]] = []
        pairs = _release(node)
        self.values += 1 + len(pairs)
        for index in range(len(pairs)):
            key_node, value_node = pairs[index]
            pairs[index] = _RELEASED
            if key_node.tag == MERGE_TAG:
                merged.extend(self.merge_entries(value_node))
                continue
            if not isinstance(key_node, ScalarNode):
                self.fail(key_node, "a mapping key must be a plain value, not a list or mapping")
                continue
            key = intern(key_node.value)
            if key in key_marks:
                line, _ = key_marks[key]
                self.fail(key_node, f"duplicate key '{key}' (first at line {line})",
                          "YAML keeps only one of them: remove or merge the duplicate")
                continue
            if type(value_node) is ScalarNode and value_node.tag == STR_TAG:
                result[key] = value_node.value
            else:
                result[key] = self.value(value_node)
            mark = key_node.start_mark
            key_marks[key] = (mark.line + 1, mark.column + 1)
            mark = value_node.start_mark
            value_marks[key] = (mark.line + 1, mark.column + 1)
        for key, value, key_mark, value_mark in merged:
            if key not in result:
                result[key] = value
                result.key_marks[key] = key_mark
                result.value_marks[key] = value_mark
        return result

    def merge_entries(self, node) -> list:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        entries = []
        for source in sources:
            if not isinstance(source, MappingNode):
                self.fail(source, "a merge key (<<) takes a mapping or a list of mappings")
                continue
            value = self.value(source)
            if isinstance(value, YamlMap):
                entries.extend((k, v, value.key_marks[k], value.value_marks[k]) for k, v in value.items())
        return entries


_RELEASED = (None, None)


def _release(node: MappingNode) -> list:
    """Take a mapping node's entries away from it, so that converting a large document does not hold
    the whole node graph (about 2.6 KB a user) and the converted values at once.

    Only mappings are emptied: a mapping node reached again (an alias, a merge) is answered from
    ``_Convert.done``, while a sequence node's items may still be read by a merge key (``<<: *list``).
    """
    pairs = node.value
    node.value = []
    return pairs if type(pairs) is list else list(pairs)


@contextmanager
def no_gc():
    """Pause the cyclic garbage collector while building many containers.

    Without it, CPython rescans the growing node graph again and again: composing a 100,000-user
    manifest takes 5 s instead of under 1 s. Nothing built here is garbage, so nothing is lost.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse(text: str | bytes, file: str) -> Parsed:
    """Parse one YAML document; syntax errors become diagnostics, never exceptions."""
    with no_gc():
        return _parse(text, file)


def _parse(text: str | bytes, file: str) -> Parsed:
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as problem:
        mark = problem.problem_mark or problem.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML syntax error: {problem.problem or problem.context or 'invalid YAML'}"
        if problem.context and problem.problem:
            started = f" started at line {problem.context_mark.line + 1}" if problem.context_mark else ""
            message += f" ({problem.context}{started})"
        hint = "check the indentation, quotes and brackets on this line and the ones before it"
        return Parsed(file, None, (error(Origin(file, line, column), "", message, hint),))
    except yaml.YAMLError as problem:  # reader errors: bad encoding or control characters
        return Parsed(file, None, (error(Origin(file, 1, 1), "", f"cannot read YAML: {problem}"),))
    if root is None:
        return Parsed(file, None, ())
    budget = expansion_budget(len(text))
    converter = _Convert(file, budget)
    try:
        data = converter.value(root)
    except RecursionError:
        return Parsed(file, None, (error(Origin(file, 1, 1), "", "the YAML is nested too deeply"),))
    except _TooLarge as large:
        line, column = _mark(large.node)
        name = os.path.basename(file)
        message = (f"YAML aliases expand {name} to more than {budget:,} values, the limit for a file of "
                   f"{len(text):,} bytes ({ALIAS_BUDGET_BASE:,} plus {ALIAS_BUDGET_PER_BYTE} a byte)")
        hint = "use anchors and aliases for small shared parts only; write large parts out"
        return Parsed(file, None, (error(Origin(file, line, column), "", message, hint),))
    return Parsed(file, data, tuple(converter.diagnostics))


def position(data, path: tuple, *, at_key: bool = False) -> tuple[int, int]:
    """The (line, column) of the value at ``path`` (or of its key), or of the nearest ancestor known."""
    found = (1, 1)
    node = data
    for index, step in enumerate(path):
        last = index == len(path) - 1
        if isinstance(node, YamlMap) and step in node.key_marks:
            found = node.key_marks[step] if (at_key and last) else node.value_marks[step]
            node = node[step]
        elif isinstance(node, YamlList) and isinstance(step, int) and 0 <= step < len(node.item_marks):
            found = node.item_marks[step]
            node = node[step]
        else:
            break
    return found


def format_path(path) -> str:
    """``("groups", "staff", "users", "alice", "images", 1)`` → ``groups.staff.users.alice.images[1]``."""
    text = ""
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            text += f".{step}" if text else str(step)
    return text
