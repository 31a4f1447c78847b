"""The JSON Schema check of one manifest file, as diagnostics a person can act on.

``schemas/manifest.schema.json`` is the single description of the format (editors use it too); this
module runs it with every error reported (``iter_errors``) and rewrites jsonschema's messages into short
ones that point at the offending key or value: unknown keys with a did-you-mean, wrong types with what
was found, enum values listed. Ids are checked by ``checks.py`` (with byte lengths), so their pattern
errors are dropped here; the content pass checks every id, also inside parts with structure errors.
"""

from __future__ import annotations

import difflib
import re
from functools import cache

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from facesync import schemas
from facesync.manifest.diagnostics import Diagnostic, error
from facesync.manifest.loader import YamlList, YamlMap, format_path, position
from facesync.model import Origin

_TYPE_NAMES = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
    "number": "a number", "boolean": "true or false", "null": "nothing",
}


@cache
def _validator(kind: str) -> Draft202012Validator:
    schema = schemas.load("manifest")
    if kind == "manifest":
        return Draft202012Validator(schema)
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    return Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{kind}"}, registry=registry)


def quoted(text: str, limit: int = 80) -> str:
    """``text`` quoted for a message, cut short when long: a message never carries a huge value."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def describe(value) -> str:
    """How a YAML value reads to a person: ``an integer (12345)``."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"a boolean ({'true' if value else 'false'})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({quoted(value)})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__} ({value})"


def _did_you_mean(word: str, choices, *, fallback: str | None = None) -> str | None:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return fallback


def check(data, file: str, kind: str = "manifest") -> tuple[list[Diagnostic], list[tuple]]:
    """(structure problems, the key path of each) of ``data`` (parsed from ``file``); ``kind`` is
    "manifest" or "fragment". The content pass checks what lies outside those paths."""
    found: list[Diagnostic] = []
    unsound: list[tuple] = []
    for problem in _validator(kind).iter_errors(_without_plain_users(data)):
        if "propertyNames" in problem.absolute_schema_path:
            continue
        found.extend(_translate(problem, data, file))
        unsound.append(tuple(problem.absolute_path))
    return found, unsound


@cache
def _patterns() -> tuple:
    image = schemas.load("manifest")["$defs"]["image"]["properties"]
    levels = frozenset(schemas.load("manifest")["$defs"]["quality_control"]["enum"])
    return re.compile(image["face_token"]["pattern"]), re.compile(image["url"]["pattern"]), levels


def _is_plain_user(user, *, person: bool) -> bool:
    """True only if ``user`` certainly satisfies the user (or person) schema.

    jsonschema costs about 50 µs per user; this hand check lets the common, valid user skip it, so a
    100,000-user manifest validates in well under a second. Anything unusual goes to jsonschema.
    """
    token, url, levels = _patterns()
    if type(user) is not YamlMap or "images" not in user or (person and "groups" not in user):
        return False
    for key, value in user.items():
        if key == "images":
            if type(value) is not YamlList or not value:
                return False
            for image in value:
                if type(image) is str:
                    if not image:
                        return False
                    continue
                if type(image) is not YamlMap or len(image) != 1:
                    return False
                ((name, text),) = image.items()
                if type(text) is not str or not text:
                    return False
                if (name == "face_token" and not token.search(text)) or (name == "url" and not url.search(text)):
                    return False
                if name not in ("path", "face_token", "url"):
                    return False
        elif key == "user_info":
            if type(value) is not str:
                return False
        elif key in ("quality_control", "liveness_control"):
            if type(value) is not str or value not in levels:
                return False
        elif person and key == "groups":
            if type(value) is not YamlList or not value or any(type(g) is not str for g in value):
                return False
        else:
            return False
    return True


_DROP = object()


def _slim(mapping: YamlMap, keep) -> YamlMap:
    copy = YamlMap()
    copy.key_marks, copy.value_marks = mapping.key_marks, mapping.value_marks
    for key, value in mapping.items():
        kept = keep(key, value)
        if kept is not _DROP:
            copy[key] = kept
    return copy


def _without_plain_users(data):
    """``data`` less the users and people that certainly pass: same errors, far less work."""
    if type(data) is not YamlMap:
        return data

    def group(_, body):
        if type(body) is YamlMap and type(body.get("users")) is YamlMap:
            users = _slim(body["users"], lambda _, u: _DROP if _is_plain_user(u, person=False) else u)
            return _slim(body, lambda key, value: users if key == "users" else value)
        return body

    def top(key, value):
        if key == "groups" and type(value) is YamlMap:
            return _slim(value, group)
        if key == "people" and type(value) is YamlMap:
            return _slim(value, lambda _, p: _DROP if _is_plain_user(p, person=True) else p)
        return value

    return _slim(data, top)


def _at(data, file: str, path: tuple, *, at_key: bool = False) -> Origin:
    line, column = position(data, path, at_key=at_key)
    return Origin(file, line, column)


def _translate(problem: ValidationError, data, file: str) -> list[Diagnostic]:
    path = tuple(problem.absolute_path)
    where = format_path(path)
    leaf = next((str(step) for step in reversed(path) if isinstance(step, str)), "the manifest")
    kind = problem.validator
    value = problem.validator_value
    instance = problem.instance

    if kind == "additionalProperties":
        allowed = sorted(problem.schema.get("properties", {}))
        out = []
        for key in instance:
            if key in allowed:
                continue
            hint = _did_you_mean(key, allowed, fallback=f"allowed here: {', '.join(allowed)}")
            if key == "users" and not path:
                hint = "top-level users are listed under 'people:' (each with groups: [...])"
            key_path = (*path, key)
            out.append(error(_at(data, file, key_path, at_key=True), format_path(key_path),
                             f"unknown key '{key}'", hint))
        return out
    if kind == "required":
        unknown = [key for key in instance if key not in problem.schema.get("properties", {})]
        missing = [key for key in value if key not in instance
                   and not difflib.get_close_matches(key, unknown, n=1, cutoff=0.6)]  # reported as a typo
        return [error(_at(data, file, path, at_key=True), where, f"missing required key '{key}'",
                      problem.schema.get("properties", {}).get(key, {}).get("description"))
                for key in missing]
    origin = _at(data, file, path)
    if kind == "type":
        wanted = [value] if isinstance(value, str) else list(value)
        wanted = [t for t in wanted if t != "null"] or wanted
        expected = " or ".join(_TYPE_NAMES.get(t, t) for t in wanted)
        hint = None
        if "string" in wanted and isinstance(instance, (int, float, bool)):
            hint = "quote the value to make it a string"
        elif isinstance(instance, str) and wanted == ["boolean"]:
            hint = "write true or false, without quotes"
        elif isinstance(instance, str) and wanted == ["array"]:
            hint = f"write a list: {leaf}: [{instance}]"
        return [error(origin, where, f"{leaf}: expected {expected}, got {describe(instance)}", hint)]
    if kind == "enum":
        choices = ", ".join(str(v) for v in value)
        hint = None
        if isinstance(instance, str):
            upper = instance.upper()
            hint = f"did you mean '{upper}'?" if upper in value else _did_you_mean(upper, value)
        return [error(origin, where, f"{leaf}: {describe(instance)} is not one of {choices}", hint)]
    if kind == "const":
        return [error(origin, where, f"{leaf} must be {value!r}, got {describe(instance)}")]
    if kind == "pattern":
        return [error(origin, where, f"invalid {leaf} {quoted(instance)}", problem.schema.get("description"))]
    if kind in ("minProperties", "maxProperties"):
        keys = ", ".join(sorted(problem.schema.get("properties", {})))
        return [error(origin, where, f"an image entry needs exactly one of: {keys}",
                      "write one entry per image, e.g. - {url: https://...}")]
    if kind == "minItems":
        return [error(origin, where, f"{leaf} must not be empty", problem.schema.get("description"))]
    if kind == "minLength":
        return [error(origin, where, f"{leaf} must not be empty")]
    if kind in ("minimum", "maximum"):
        bound = "at least" if kind == "minimum" else "at most"
        return [error(origin, where, f"{leaf} must be {bound} {value}, got {instance}")]
    return [error(origin, where, problem.message)]
