"""A Plan shown to people: text for a terminal (Terraform's manner) and Markdown for a pull request.

Counting in the summary line ("Plan: 3 to add, 1 to change, 2 to destroy") is by record, as Terraform
counts resources, and the API calls are given beside it:
- to add: groups created, users created (by adds or by a copy), faces added to users that exist;
- to change: users that exist and get a ``user/update`` or a new user_info;
- to destroy: groups deleted, users deleted, faces removed from users that stay (by ``face/delete`` or
  dropped by an update and not re-added).
Symbols: ``+`` creates, ``~`` changes (an update, a face re-added after an update), ``-`` deletes.
Markdown uses a ``diff`` block, where ``!`` stands for ``~`` so that GitHub colours it.
The JSON form lives in ``planfile.py`` (``render_json`` is re-exported here).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from facesync import logs
from facesync.model import ImageKind
from facesync.plan.ops import FaceSource, Operation, OpKind, Plan
from facesync.plan.planfile import dump_plan

NO_CHANGES = "No changes. The library matches the manifest."
MARKDOWN_MAX_LINES = 200
MARKDOWN_MAX_CHARS = 60_000

_GREEN, _YELLOW, _RED, _BOLD, _DIM, _RESET = "\033[32m", "\033[33m", "\033[31m", "\033[1m", "\033[2m", "\033[0m"
_COLOURS = {"+": _GREEN, "~": _YELLOW, "-": _RED}


def render_json(plan: Plan) -> str:
    return dump_plan(plan)


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the human view: ``depth`` 0 group, 1 user, 2 operation; ``ops`` it stands for."""

    symbol: str
    depth: int
    text: str
    comment: str = ""
    ops: int = 0


@dataclass(frozen=True, slots=True)
class Summary:
    add: int
    change: int
    destroy: int
    calls: int
    seconds: float | None
    qps: float | None

    def line(self) -> str:
        calls = f"{self.calls} API call{'' if self.calls == 1 else 's'}"
        timing = f", {_duration(self.seconds)} at {self.qps:g} QPS" if self.seconds is not None else ""
        return (f"Plan: {self.add} to add, {self.change} to change, {self.destroy} to destroy. "
                f"{calls}{timing}.")

    @property
    def time_text(self) -> str:
        return f"{_duration(self.seconds)} at {self.qps:g} QPS" if self.seconds is not None else "no rate limit"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"about {max(1, math.ceil(seconds))} s"
    if seconds < 3600:
        return f"about {math.ceil(seconds / 60)} min"
    hours, minutes = divmod(math.ceil(seconds / 60), 60)
    return f"about {hours} h {minutes} min"


def _show_face(face: FaceSource | None) -> str:
    if face is None:
        return "?"
    if face.kind is ImageKind.FACE_TOKEN:
        return face.face_token or face.source
    return face.source


def _face_key(face: FaceSource) -> str:
    return face.face_token or face.source


def _user_before(ops: list[Operation]):
    """The live user the operations were planned on: (exists, face_tokens or None, user_info or None)."""
    for op in ops:
        for expect in op.expects:
            if expect.group_id == op.group_id and expect.user_id == op.user_id:
                return expect.exists, expect.face_tokens, expect.user_info
    return False, None, None


@dataclass(frozen=True, slots=True)
class _UserEffect:
    exists: bool
    added: tuple[str, ...]
    removed: tuple[str, ...]
    readded: frozenset[str]
    info_old: str | None
    info_new: str | None
    updated: bool
    deleted: bool

    @property
    def info_changed(self) -> bool:
        return self.info_new is not None and self.info_new != self.info_old


def _user_effect(ops: list[Operation]) -> _UserEffect:
    """What the operations of one (group, user) do to it, from the live facts they were planned on."""
    exists, before_tokens, info_old = _user_before(ops)
    before = list(before_tokens or ())
    before_set = set(before)
    after = set(before_set)
    readded: set[str] = set()
    info_new = None
    updated = deleted = False
    for op in ops:
        if op.kind is OpKind.UPDATE_USER:
            updated = True
            after = {_face_key(op.face)}
        elif op.kind is OpKind.ADD_FACE:
            key = _face_key(op.face)
            if key in before_set and op.face.kind is ImageKind.FACE_TOKEN:
                readded.add(key)
            after.add(key)
        elif op.kind is OpKind.DELETE_FACE:
            after.discard(op.face_token)
        elif op.kind is OpKind.DELETE_USER:
            deleted = True
        if op.user_info is not None:
            info_new = op.user_info
    if updated:
        readded |= after & before_set
    added = tuple(sorted(after - before_set))
    removed = tuple(token for token in sorted(before_set) if token not in after)
    return _UserEffect(exists, added, removed, frozenset(readded), info_old, info_new, updated, deleted)


def _structure(plan: Plan) -> dict[str, dict[str | None, list[Operation]]]:
    """Operations by group, then by user (None first: the group's own), both sorted by name as Terraform
    sorts addresses; within a user, in execution order."""
    groups: dict[str, dict[str | None, list[Operation]]] = {}
    for op in plan.operations:
        groups.setdefault(op.group_id, {}).setdefault(op.user_id, []).append(op)
    return {
        group_id: {user_id: users[user_id] for user_id in sorted(users, key=lambda u: (u is not None, u or ""))}
        for group_id, users in sorted(groups.items())
    }


def summarize(plan: Plan) -> Summary:
    add = change = destroy = 0
    for users in _structure(plan).values():
        for user_id, ops in users.items():
            if user_id is None:
                for op in ops:
                    add += op.kind is OpKind.CREATE_GROUP
                    destroy += op.kind is OpKind.DELETE_GROUP
                continue
            effect = _user_effect(ops)
            if effect.deleted:
                destroy += 1
            elif not effect.exists:
                add += 1
            else:
                add += len(effect.added)
                destroy += len(effect.removed)
                change += effect.updated or effect.info_changed
    return Summary(add, change, destroy, plan.calls, plan.estimated_seconds(plan.qps), plan.qps)


def _quote(value: str | None) -> str:
    """A user_info for reading: JSON objects as they are (they delimit themselves), other text quoted."""
    if value is None:
        return "(unknown)"
    if value.startswith("{"):
        try:
            if isinstance(json.loads(value), dict):
                return value
        except ValueError:
            pass
    return json.dumps(value, ensure_ascii=False)


def user_info_lines(old: str | None, new: str) -> list[str]:
    """user_info old → new; field by field when both are JSON objects (a common way to use it)."""
    try:
        old_doc, new_doc = json.loads(old or ""), json.loads(new)
    except ValueError:
        old_doc = new_doc = None
    if not (isinstance(old_doc, dict) and isinstance(new_doc, dict)):
        return [f"user_info: {_quote(old)} → {_quote(new)}"]
    from deepdiff import DeepDiff

    diff = DeepDiff(old_doc, new_doc, verbose_level=2)
    lines = []
    for path, change in diff.get("values_changed", {}).items():
        lines.append(f"user_info{_path(path)}: {json.dumps(change['old_value'], ensure_ascii=False)} → "
                     f"{json.dumps(change['new_value'], ensure_ascii=False)}")
    for path, change in diff.get("type_changes", {}).items():
        lines.append(f"user_info{_path(path)}: {json.dumps(change['old_value'], ensure_ascii=False)} → "
                     f"{json.dumps(change['new_value'], ensure_ascii=False)}")
    for path, value in diff.get("dictionary_item_added", {}).items():
        lines.append(f"user_info{_path(path)}: added {json.dumps(value, ensure_ascii=False)}")
    for path, value in diff.get("dictionary_item_removed", {}).items():
        lines.append(f"user_info{_path(path)}: removed (was {json.dumps(value, ensure_ascii=False)})")
    for key in ("iterable_item_added", "iterable_item_removed"):
        if diff.get(key):
            lines.append(f"user_info: {_quote(old)} → {_quote(new)}")
            break
    return sorted(set(lines)) or [f"user_info: {_quote(old)} → {_quote(new)}"]


def _path(deepdiff_path: str) -> str:
    """root['a']['b'] → .a.b"""
    out = deepdiff_path[len("root"):]
    return out.replace("['", ".").replace("']", "").replace("[", ".").replace("]", "")


def plan_lines(plan: Plan) -> list[Line]:
    """The plan as grouped, human lines; shared by the text and Markdown views."""
    lines: list[Line] = []
    for group_id, users in _structure(plan).items():
        own = users.get(None, [])
        if any(op.kind is OpKind.CREATE_GROUP for op in own):
            lines.append(Line("+", 0, f"group {group_id}", own[0].reason, ops=len(own)))
        elif any(op.kind is OpKind.DELETE_GROUP for op in own):
            lines.append(Line("-", 0, f"group {group_id}", own[0].reason, ops=len(own)))
        else:
            lines.append(Line("~", 0, f"group {group_id}"))
        for user_id, ops in users.items():
            if user_id is not None:
                lines.extend(_user_lines(user_id, ops))
    return lines


def _user_lines(user_id: str, ops: list[Operation]) -> list[Line]:
    effect = _user_effect(ops)
    if effect.deleted:
        return [Line("-", 1, f"user {user_id}", ops[0].reason, ops=len(ops))]
    if not effect.exists:
        copy = next((op for op in ops if op.kind is OpKind.COPY_USER), None)
        if copy is not None:
            return [Line("+", 1, f"user {user_id}", f"copy of group {copy.src_group_id}: its faces and "
                                                   "user_info", ops=len(ops))]
        faces = len(ops)
        head = Line("+", 1, f"user {user_id}", f"new user, {faces} face{'' if faces == 1 else 's'}")
        body = [Line("+", 2, f"face {_show_face(op.face)}", ops=1) for op in ops]
        info = ops[0].user_info
        extra = [Line("+", 2, f"user_info: {_quote(info)}")] if info not in (None, "") else []
        return [head, *extra, *body]
    parts = []
    if effect.added:
        parts.append(f"+{len(effect.added)} face{'' if len(effect.added) == 1 else 's'}")
    if effect.removed:
        parts.append(f"-{len(effect.removed)} face{'' if len(effect.removed) == 1 else 's'}")
    if effect.info_changed:
        parts.append("user_info")
    lines = [Line("~", 1, f"user {user_id}", ", ".join(parts))]
    if effect.info_changed:
        lines.extend(Line("~", 2, text) for text in user_info_lines(effect.info_old, effect.info_new))
    for op in ops:
        if op.kind is OpKind.UPDATE_USER:
            lines.append(Line("~", 2, f"update with face {_show_face(op.face)}", op.reason, ops=1))
        elif op.kind is OpKind.ADD_FACE:
            readd = _face_key(op.face) in effect.readded and op.face.kind is ImageKind.FACE_TOKEN
            lines.append(Line("~" if readd else "+", 2, f"face {_show_face(op.face)}", op.reason, ops=1))
        elif op.kind is OpKind.DELETE_FACE:
            lines.append(Line("-", 2, f"face {op.face_token}", op.reason, ops=1))
    dropped = [token for token in effect.removed
               if not any(op.kind is OpKind.DELETE_FACE and op.face_token == token for op in ops)]
    lines.extend(Line("-", 2, f"face {token}", "dropped by the update") for token in dropped)
    return lines


def _warnings(plan: Plan) -> list[str]:
    out = []
    for reason in plan.safety.reasons:
        tail = ("--force given: apply will run it anyway." if plan.safety.forced
                else "apply refuses it unless --force is given.")
        out.append(f"Warning: unsafe plan: {reason}. {tail}")
    return out


def render_text(plan: Plan, *, color: bool = False) -> str:
    def paint(code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    out = [f"Target: {plan.target} (live state from {plan.live_source})"]
    out.extend(paint(_DIM, f"Note: {note}") for note in plan.notes)
    out.append("")
    if plan.empty:
        out.append(paint(_GREEN + _BOLD, NO_CHANGES))
    else:
        out.append("facesync will perform the following actions:")
        out.append("")
        for line in plan_lines(plan):
            text = f"{'    ' * line.depth}  {paint(_COLOURS[line.symbol], line.symbol)} {line.text}"
            if line.comment:
                text += "  " + paint(_DIM, f"# {line.comment}")
            out.append(text)
        out.append("")
        out.append(paint(_BOLD, summarize(plan).line()))
    out.extend(paint(_RED + _BOLD, warning) for warning in _warnings(plan))
    return logs.redact("\n".join(out) + "\n")


def render_markdown(plan: Plan, *, max_lines: int = MARKDOWN_MAX_LINES,
                    max_chars: int = MARKDOWN_MAX_CHARS) -> str:
    """A pull-request comment: summary table, warnings, notes, and the operations folded and cut."""
    summary = summarize(plan)
    safety = "⚠️ unsafe" if plan.safety.unsafe else "✅ safe"
    if plan.safety.unsafe and plan.safety.forced:
        safety += " (forced)"
    head = [
        f"### facesync plan for {_code(plan.target)}",
        "",
        "| To add | To change | To destroy | API calls | Estimated time | Safety |",
        "|---:|---:|---:|---:|---|---|",
        (f"| {summary.add} | {summary.change} | {summary.destroy} | {summary.calls} | {summary.time_text} "
        f"| {safety} |"),
        "",
    ]
    for warning in _warnings(plan):
        head += ["> [!WARNING]", f"> {_escape(warning.removeprefix('Warning: '))}", ""]
    if plan.notes:
        head += [f"- {_escape(note)}" for note in plan.notes] + [""]
    foot = ["", (f"<sub>manifest {_code(plan.manifest_digest or 'unknown')}, live state from "
                f"{_escape(plan.live_source)}, planned {_escape(plan.created_at)}</sub>"), ""]
    if plan.empty:
        return logs.redact("\n".join([*head, NO_CHANGES, *foot]))

    budget = max_chars - sum(len(x) + 1 for x in head + foot) - 400  # room for the fold and the cut line
    body: list[str] = []
    shown_ops = 0
    all_lines = plan_lines(plan)
    for line in all_lines:
        symbol = "!" if line.symbol == "~" else line.symbol
        text = f"{symbol} {'  ' * line.depth}{line.text}" + (f"  # {line.comment}" if line.comment else "")
        if len(body) >= max_lines or budget - len(text) - 1 < 0:
            break
        budget -= len(text) + 1
        body.append(text)
        shown_ops += line.ops
    cut = len(body) < len(all_lines)
    fence = "`" * max(3, _longest_backtick_run(body) + 1)
    details = [
        f"<details><summary>{summary.calls} operation{'' if summary.calls == 1 else 's'}</summary>",
        "",
        f"{fence}diff",
        *body,
        fence,
    ]
    if cut:
        left = len(all_lines) - len(body)
        details += ["", (f"… {left} more line{'' if left == 1 else 's'} ({summary.calls - shown_ops} "
                        "operations) not shown; run `facesync plan` or read the JSON plan for all of them.")]
    details += ["", "</details>"]
    return logs.redact("\n".join([*head, *details, *foot]))


def _longest_backtick_run(lines: list[str]) -> int:
    longest = 0
    for line in lines:
        run = 0
        for char in line:
            run = run + 1 if char == "`" else 0
            longest = max(longest, run)
    return longest


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return f"`{text.replace('`', '')}`"
