"""A Plan shown to people: text for a terminal (Terraform's manner) and Markdown for a pull request.

What a reviewer must never miss comes first and whole: the operations that destroy (groups, users,
faces) are listed before anything else, each one, and only the part that adds or changes may be cut
(Markdown only), saying how much was cut. Faces are named as people know them: a removed face by its
file when the plan knows it (``Plan.face_names``), a user_info change as old → new. The mechanics of a
change (the ``user/update`` that sets a user_info, the faces re-added after it, a staging group that
keeps faces alive meanwhile) are left to the JSON form; the summary's API-call count still counts them.

Counting in the summary line ("Plan: 3 to add, 1 to change, 2 to destroy") is by record, as Terraform
counts resources, and the API calls are given beside it:
- to add: groups created, users created (by adds or by a copy), faces added to users that exist;
- to change: users that exist and get a ``user/update`` or a new user_info;
- to destroy: groups deleted, users deleted, faces removed from users that stay (by ``face/delete`` or
  dropped by an update and not re-added).
Symbols: ``+`` creates, ``~`` changes, ``-`` deletes. Markdown uses ``diff`` blocks, where ``!``
stands for ``~`` so that GitHub colours it.

Nothing from the data is printed raw: control characters, line and paragraph separators and bidi
controls (U+202E...) in ids, file names, user_info or notes are written as visible escapes (``\n``,
``\u202e``), so no name can start a line of its own or reorder what a reviewer reads.

Everything the views show comes from the Plan itself, so ``facesync show PLAN.json`` prints a saved
plan byte for byte as ``plan`` did. The JSON form lives in ``planfile.py`` (``render_json`` here).
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass

from facesync import logs
from facesync.model import ImageKind, is_stage_group
from facesync.plan.effects import UserEffect, face_key, structure, user_effect
from facesync.plan.matching import describe_users
from facesync.plan.ops import FaceSource, Operation, OpKind, Plan
from facesync.plan.planfile import dump_plan

NO_CHANGES = "No changes. The library matches the manifest."
MARKDOWN_MAX_LINES = 200  # of the part that adds or changes; deletes are never cut for length
# GitHub refuses a comment over 65,536 characters; counted here in UTF-16 code units (never fewer
# than characters), with room left for what a CI recipe wraps around the comment.
MARKDOWN_MAX_CHARS = 65_000

_GREEN, _YELLOW, _RED, _BOLD, _DIM, _RESET = "\033[32m", "\033[33m", "\033[31m", "\033[1m", "\033[2m", "\033[0m"
_COLOURS = {"+": _GREEN, "~": _YELLOW, "-": _RED}
_INVISIBLE = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co"})
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def render_json(plan: Plan) -> str:
    return dump_plan(plan)


FORMATS = ("text", "json", "markdown")


def render(plan: Plan, fmt: str, *, color: bool = False) -> str:
    """The plan in one of ``FORMATS``: what ``plan`` prints, and ``show`` prints again from the file."""
    if fmt == "json":
        return render_json(plan)
    if fmt == "markdown":
        return render_markdown(plan)
    return render_text(plan, color=color)


def visible(text: str) -> str:
    """``text`` with every control, separator and bidi character written as an escape."""
    if text.isprintable():  # fast path: nothing to escape (isprintable is False for all of _INVISIBLE)
        return text
    out = []
    for char in text:
        if unicodedata.category(char) in _INVISIBLE:
            out.append(_NAMED_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else
                                                   f"\\u{ord(char):04x}" if ord(char) < 0x10000 else
                                                   f"\\U{ord(char):08x}"))
        else:
            out.append(char)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Line:
    """One line of the human view: ``depth`` 0 group, 1 user, 2 face or field; ``ops`` it stands for."""

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


def summarize(plan: Plan) -> Summary:
    add = change = destroy = 0
    for group_id, users in structure(plan).items():
        if is_stage_group(group_id):  # mechanics: counted in the calls, not as records
            continue
        for user_id, ops in users.items():
            if user_id is None:
                for op in ops:
                    add += op.kind is OpKind.CREATE_GROUP
                    destroy += op.kind is OpKind.DELETE_GROUP
                continue
            effect = user_effect(ops)
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


def _show_face(face: FaceSource | None) -> str:
    if face is None:
        return "?"
    if face.kind is ImageKind.FACE_TOKEN:
        return face.face_token or face.source
    return face.source


def _removed_face(token: str, plan: Plan) -> str:
    """A removed face as people know it: its file (or manifest entry) and its face_token."""
    name = plan.face_names.get(token)
    return f"face {name} ({token})" if name else f"face {token}"


# -- the two parts: what destroys, and what adds or changes -------------------------------------------


@dataclass(frozen=True)
class Parts:
    destroy: list[Line]
    change: list[Line]
    destroy_ops: int
    change_ops: int


def plan_parts(plan: Plan) -> Parts:
    """The plan as grouped lines in two parts, shared by the text and Markdown views: first every
    operation that destroys (with its group and user for context), then everything else."""
    destroy: list[Line] = []
    change: list[Line] = []
    for group_id, users in structure(plan).items():
        if is_stage_group(group_id):  # facesync's own, made and removed within the apply: JSON only
            continue
        own = users.get(None, [])
        group_ops = {op.kind for op in own}
        gone: list[Line] = []
        kept: list[Line] = []
        for user_id, ops in users.items():
            if user_id is not None:
                removed, other = _user_lines(user_id, ops, plan)
                gone += removed
                kept += other
        if OpKind.DELETE_GROUP in group_ops:
            destroy.append(Line("-", 0, f"group {group_id}", own[0].reason, ops=len(own)))
        elif gone:
            destroy.append(Line("~", 0, f"group {group_id}"))
        destroy += gone
        if OpKind.CREATE_GROUP in group_ops:
            change.append(Line("+", 0, f"group {group_id}", own[0].reason, ops=len(own)))
        elif kept:
            change.append(Line("~", 0, f"group {group_id}"))
        change += kept
    destroy_ops = sum(line.ops for line in destroy)
    return Parts(destroy, change, destroy_ops, plan.calls - destroy_ops)


def _user_lines(user_id: str, ops: list[Operation], plan: Plan) -> tuple[list[Line], list[Line]]:
    """(lines that destroy, lines that add or change) for one user."""
    effect = user_effect(ops)
    if effect.deleted:
        return [Line("-", 1, f"user {user_id}", ops[0].reason, ops=len(ops))], []
    if not effect.exists:
        return [], _new_user_lines(user_id, ops)
    deletes = [op for op in ops if op.kind is OpKind.DELETE_FACE]
    removed = []
    for token in effect.removed:
        delete = next((op for op in deletes if op.face_token == token), None)
        dropped = "every face replaced" if effect.replaced_all else "dropped by the update"
        reason = delete.reason if delete else dropped
        removed.append(Line("-", 2, _removed_face(token, plan), reason, ops=1 if delete else 0))
    destroy = [Line("~", 1, f"user {user_id}", _count(-len(effect.removed))), *removed] if removed else []
    return destroy, _changed_user_lines(user_id, ops, effect)


def _new_user_lines(user_id: str, ops: list[Operation]) -> list[Line]:
    copy = next((op for op in ops if op.kind is OpKind.COPY_USER), None)
    if copy is not None:
        return [Line("+", 1, f"user {user_id}", f"copy of group {copy.src_group_id}: its faces and user_info",
                     ops=len(ops))]
    head = Line("+", 1, f"user {user_id}", f"new user, {_faces(len(ops))}")
    body = [Line("+", 2, f"face {_show_face(op.face)}", ops=1) for op in ops]
    info = ops[0].user_info
    extra = [Line("+", 2, f"user_info: {_quote(info)}")] if info not in (None, "") else []
    return [head, *extra, *body]


def _changed_user_lines(user_id: str, ops: list[Operation], effect: UserEffect) -> list[Line]:
    """What a kept user gains and how it changes; an update and its re-adds are mechanics, not shown
    (their calls are counted on the user's line)."""
    body: list[Line] = []
    if effect.info_changed:
        body += [Line("~", 2, text) for text in user_info_lines(effect.info_old, effect.info_new)]
    for op in ops:
        if op.kind not in (OpKind.ADD_FACE, OpKind.UPDATE_USER) or op.face is None:
            continue
        if face_key(op.face) in effect.readded or (op.face.kind is ImageKind.FACE_TOKEN
                                                   and face_key(op.face) in (effect.before or ())):
            continue
        reason = "replaces every face" if op.kind is OpKind.UPDATE_USER else op.reason
        body.append(Line("+", 2, f"face {_show_face(op.face)}", reason, ops=1))
    if not body:
        return []
    parts = [_count(len(effect.added))] if effect.added else []
    if effect.info_changed:
        parts.append("user_info")
    mechanics = sum(1 for op in ops if op.kind is not OpKind.DELETE_FACE) - sum(line.ops for line in body)
    return [Line("~", 1, f"user {user_id}", ", ".join(parts), ops=mechanics), *body]


def _faces(n: int) -> str:
    return f"{n} face{'' if n == 1 else 's'}"


def _count(n: int) -> str:
    return f"{'+' if n > 0 else '-'}{_faces(abs(n))}"


def _warnings(plan: Plan) -> list[str]:
    out = []
    for reason in plan.safety.reasons:
        tail = ("--force given: apply will run it anyway." if plan.safety.forced
                else "apply refuses it unless --force is given.")
        out.append(f"Warning: unsafe plan: {reason}. {tail}")
    if plan.replaced_by_detect:
        named = describe_users(plan.replaced_by_detect)
        if plan.reupload:
            out.append(f"Warning: --reupload: the faces of {named} are deleted and re-added from the manifest's "
                       "images: this service's detect gives other face_tokens than it stores, so facesync cannot "
                       "tell whether they are the same pictures.")
        else:
            out.append(f"Warning: the faces of {named} are replaced: the face_tokens detect gave their images match "
                       "none of their faces. If this service's detect and user/add give an image different tokens, "
                       "these may be the same pictures: apply checks that first, with one upload to a scratch group "
                       "(facesync doctor checks it too), and stops if so.")
    return out


def render_text(plan: Plan, *, color: bool = False) -> str:
    def paint(code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if color else text

    out = [f"Target: {visible(plan.target)} (live state from {visible(plan.live_source)})"]
    out.extend(paint(_DIM, f"Note: {visible(note)}") for note in plan.notes)
    out.append("")
    if plan.empty:
        out.append(paint(_GREEN + _BOLD, NO_CHANGES))
    else:
        parts = plan_parts(plan)
        summary = summarize(plan)
        out.append("facesync will perform the following actions:")
        for title, lines in ((f"To destroy ({summary.destroy}), every one listed:", parts.destroy),
                             ("To add and change:", parts.change)):
            if not lines:
                continue
            out += ["", paint(_BOLD, title), ""]
            for line in lines:
                text = f"{'    ' * line.depth}  {paint(_COLOURS[line.symbol], line.symbol)} {visible(line.text)}"
                if line.comment:
                    text += "  " + paint(_DIM, f"# {visible(line.comment)}")
                out.append(text)
        out.append("")
        out.append(paint(_BOLD, summary.line()))
    out.extend(paint(_RED + _BOLD, visible(warning)) for warning in _warnings(plan))
    return logs.redact("\n".join(out) + "\n")


def _utf16(text: str) -> int:
    """Length as GitHub counts a comment (UTF-16 code units; never fewer than characters)."""
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _diff_line(line: Line) -> str:
    symbol = "!" if line.symbol == "~" else line.symbol
    return (f"{symbol} {'  ' * line.depth}{visible(line.text)}"
            + (f"  # {visible(line.comment)}" if line.comment else ""))


def render_markdown(plan: Plan, *, max_lines: int = MARKDOWN_MAX_LINES,
                    max_chars: int = MARKDOWN_MAX_CHARS) -> str:
    """A pull-request comment: summary table, warnings, notes, every delete, then the rest folded and,
    if it must be, cut. Never longer than ``max_chars`` (GitHub's comment limit); when even the deletes
    do not fit, it says so in a warning at the top and points to the JSON plan."""
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
    notes = [f"- {_escape(note)}" for note in plan.notes] + ([""] if plan.notes else [])
    foot = ["", f"<sub>{_provenance(plan)}</sub>", ""]
    if plan.empty:
        return logs.redact("\n".join([*head, *notes, NO_CHANGES, *foot]))

    parts = plan_parts(plan)
    room = max_chars - sum(_utf16(x) + 1 for x in head + notes + foot) - 2_000  # titles, fences, cut notes
    destroy, room = _fit(parts.destroy, room, len(parts.destroy))
    change, room = _fit(parts.change, room, max_lines)
    body: list[str] = []
    if parts.destroy:
        body += [(f"**To destroy: {summary.destroy}**, every one listed first "
                  f"({_ops(parts.destroy_ops)}):"), "", *_fenced(destroy)]
        if len(destroy) < len(parts.destroy):
            left = len(parts.destroy) - len(destroy)
            ops_left = sum(line.ops for line in parts.destroy[len(destroy):])
            cut = (f"This comment cannot hold every delete: {left} more line{'' if left == 1 else 's'} "
                   f"({_ops(ops_left)} that destroy) are not shown. Read them all in the JSON plan "
                   "(the file `facesync plan --out` saved, e.g. the pipeline's artifact) or with "
                   "`facesync show PLAN.json`.")
            body += ["", f"**{_escape(cut)}**"]
            head += ["> [!CAUTION]", f"> {_escape(cut)}", ""]
        body.append("")
    if parts.change:
        body += [f"<details><summary>To add and change: {_ops(parts.change_ops)}</summary>", "",
                 *_fenced(change)]
        if len(change) < len(parts.change):
            left = len(parts.change) - len(change)
            ops_left = sum(line.ops for line in parts.change[len(change):])
            body += ["", (f"… {left} more line{'' if left == 1 else 's'} ({_ops(ops_left)} that add or change) "
                          "not shown; every delete is above. Run `facesync show PLAN.json` or read the JSON "
                          "plan for all of them.")]
        body += ["", "</details>"]
    return logs.redact("\n".join([*head, *notes, *body, *foot]))


def _fit(lines: list[Line], room: int, max_lines: int) -> tuple[list[str], int]:
    """The first lines that fit in ``room`` characters (and ``max_lines``), as diff lines, and the room
    left; a cut never leaves a group or user heading without the first line under it."""
    kept: list[str] = []
    for line in lines[:max_lines]:
        text = _diff_line(line)
        if _utf16(text) + 1 > room:
            break
        kept.append(text)
        room -= _utf16(text) + 1
    while 0 < len(kept) < len(lines) and lines[len(kept)].depth > lines[len(kept) - 1].depth:
        room += _utf16(kept.pop()) + 1
    return kept, room


def _fenced(lines: list[str]) -> list[str]:
    fence = "`" * max(3, _longest_backtick_run(lines) + 1)
    return [f"{fence}diff", *lines, fence]


def _ops(n: int) -> str:
    return f"{n} operation{'' if n == 1 else 's'}"


def _provenance(plan: Plan) -> str:
    manifest = _code(plan.manifest) if plan.manifest else "manifest"
    commit = f" at commit {_code(plan.commit)}" if plan.commit else ""
    return (f"{manifest}{commit} ({_code(plan.manifest_digest or 'unknown digest')}), live state from "
            f"{_escape(plan.live_source)}, planned {_escape(plan.created_at)}")


def _longest_backtick_run(lines: list[str]) -> int:
    longest = 0
    for line in lines:
        run = 0
        for char in line:
            run = run + 1 if char == "`" else 0
            longest = max(longest, run)
    return longest


def _escape(text: str) -> str:
    return visible(text).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    return f"`{visible(text).replace('`', '')}`"
