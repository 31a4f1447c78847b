"""A manifest file and everything it names (included files, globs, folders) → ``Desired``.

Two passes, each reporting every problem it finds: first every file is parsed and checked against
the schema, then the content is expanded and checked (ids, files, duplicates). The content pass runs
even when the first found errors, over every part the schema found sound: a user, person or folder
source with a structure error of its own is left out (its id is still checked), so one run reports
every error of every kind, and none is a guess built on a broken part. No network, no API call.

Choices where the format leaves room:
- relative paths (images, folders, includes) are relative to the file that writes them; everything
  must stay inside the main manifest's folder;
- ``include`` globs are sorted, must each match a file, may nest; a file reached twice is read once;
  a cycle is an error;
- a group is defined in one place; people may name groups defined in any file;
- users of a group come in the order written: its ``users``, then its ``sources``, then ``people``;
- a folder source's user_info file is read as UTF-8 with surrounding whitespace removed;
- the manifest's YAML files together may hold at most ``MAX_MANIFEST_BYTES`` (a 100,000-user manifest
  is about 10 MB): a file past it is refused unread (see ``loader`` for the alias limit).
"""

from __future__ import annotations

import glob
import hashlib
import os

from facesync.api.protocol import NO_CONTROL
from facesync.errors import ConfigError
from facesync.manifest import checks, files, schema
from facesync.manifest.checks import Entry, GroupDecl
from facesync.manifest.diagnostics import Diagnostic, error, sort_key, warning
from facesync.manifest.loader import YamlList, YamlMap, format_path, parse, position
from facesync.model import Desired, DesiredGroup, DesiredImage, DesiredUser, ImageKind, Origin, Policy
from facesync.targets import manifest_target_problem, parse_target

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def _names(folder: str, *, dirs: bool) -> list[str]:
    """Sorted names of the visible subfolders (or files) of ``folder``."""
    with os.scandir(folder) as listing:
        return sorted(e.name for e in listing if not e.name.startswith(".") and (e.is_dir() if dirs else e.is_file()))


class _Doc:
    """One parsed file: ``shown`` names it in messages, ``base_dir`` anchors its relative paths."""

    def __init__(self, shown: str, real: str, data, raw: bytes):
        self.shown = shown
        self.real = real
        self.base_dir = os.path.dirname(real)
        self.data = data
        self.raw = raw
        self.unsound: set[tuple] = set()  # key paths holding a structure error, and every ancestor of one

    def mark_unsound(self, paths) -> None:
        for path in paths:
            self.unsound.update(path[:length] for length in range(1, len(path) + 1))

    def sound(self, where: tuple) -> bool:
        """No structure error at ``where`` or inside it: its content can be checked."""
        return where not in self.unsound

    def mapping(self, *keys) -> YamlMap:
        """The mapping at ``keys`` under the file's top level, or an empty one where the file has none."""
        node = self.data
        for key in keys:
            node = node.get(key) if type(node) is YamlMap else None
        return node if type(node) is YamlMap else YamlMap()

    def origin(self, path: tuple, *, at_key: bool = False) -> Origin:
        line, column = position(self.data, path, at_key=at_key)
        return Origin(self.shown, line, column)

    def at(self, mark: tuple[int, int]) -> Origin:
        """The origin of a (line, column) kept by the parser for a key or item: no walk from the root."""
        return Origin(self.shown, mark[0], mark[1])


class Expansion:
    def __init__(self, manifest_path: str, *, hash_images: bool, known_file: files.KnownFile | None = None):
        self.manifest_path = manifest_path
        self.hash_images = hash_images
        self.known_file = known_file
        self.root = os.path.dirname(os.path.realpath(manifest_path))
        self.guard = files.PathGuard(self.root)
        self.display_dir = os.path.dirname(manifest_path)
        self.diagnostics: list[Diagnostic] = []
        self.docs: list[_Doc] = []
        self.loaded: set[str] = set()
        self.groups: dict[str, GroupDecl] = {}
        self.entries: list[Entry] = []
        self.people: dict[str, Origin] = {}
        self.image_cache: dict[str, files.ImageFile | files.FileProblem] = {}
        self.bytes_read = 0

    # -- pass 1: files, syntax, schema -----------------------------------------------------------------

    def shown(self, real: str) -> str:
        return os.path.join(self.display_dir, os.path.relpath(real, self.root))

    def read_all(self) -> None:
        real = os.path.realpath(self.manifest_path)
        self.read(real, self.manifest_path, "manifest", ())

    def read(self, real: str, shown: str, kind: str, stack: tuple[str, ...]) -> None:
        self.loaded.add(real)
        room = MAX_MANIFEST_BYTES - self.bytes_read
        try:
            with open(real, "rb") as handle:
                raw = handle.read(room + 1)
        except OSError as problem:
            self.diagnostics.append(error(Origin(shown, 1, 1), "", f"cannot read {shown}: {problem.strerror}"))
            return
        if len(raw) > room:
            self.diagnostics.append(error(Origin(shown, 1, 1), "", f"{shown} takes the manifest's YAML past "
                                          f"{MAX_MANIFEST_BYTES // (1024 * 1024)} MiB, the limit for all its files together",
                                          "split the library into several manifests"))
            return
        self.bytes_read += len(raw)
        parsed = parse(raw, shown)
        self.diagnostics.extend(parsed.diagnostics)
        if parsed.data is None and parsed.diagnostics:
            return
        doc = _Doc(shown, real, parsed.data, raw)
        self.docs.append(doc)
        problems, unsound = schema.check(parsed.data, shown, kind)
        # a value the parser refused (a tag, a recursive alias) reads as empty: its error says it all
        refused = {(d.line, d.column) for d in parsed.diagnostics}
        self.diagnostics.extend(p for p in problems if (p.line, p.column) not in refused)
        doc.mark_unsound(unsound)
        if isinstance(doc.data, dict) and isinstance(doc.data.get("include"), list):
            self.follow_includes(doc, (*stack, real))

    def follow_includes(self, doc: _Doc, stack: tuple[str, ...]) -> None:
        for index, pattern in enumerate(doc.data["include"]):
            if not isinstance(pattern, str) or not pattern:
                continue
            where = ("include", index)
            origin = doc.origin(where)
            try:
                matches = self.paths(doc, pattern, what="include")
            except files.FileProblem as problem:
                self.diagnostics.append(error(origin, format_path(where), problem.message, problem.hint))
                continue
            for real in matches:
                if real in stack:
                    cycle = " -> ".join(self.shown(p) for p in (*stack[stack.index(real):], real))
                    self.diagnostics.append(error(origin, format_path(where), f"include cycle: {cycle}",
                                                  "an included file cannot include its includer"))
                elif real not in self.loaded:
                    self.read(real, self.shown(real), "fragment", stack)

    def paths(self, doc: _Doc, pattern: str, *, what: str) -> list[str]:
        """Real paths for a path or glob written in ``doc``; a glob must match at least one file."""
        if "\0" in pattern or not glob.has_magic(pattern):
            return [self.guard.inside(doc.base_dir, pattern)]
        if os.path.isabs(pattern):
            raise files.FileProblem(f"absolute path {pattern!r} is not allowed",
                                    "write paths relative to the manifest, inside its folder")
        matches = sorted(m for m in glob.glob(pattern, root_dir=doc.base_dir)
                         if os.path.isfile(os.path.join(doc.base_dir, m)))
        if not matches:
            raise files.FileProblem(f"{what} glob {pattern!r} matches no file",
                                    "check the pattern; globs are relative to the file that writes them")
        return [self.guard.inside(doc.base_dir, m) for m in matches]

    # -- pass 2: content -------------------------------------------------------------------------------

    def expand_all(self) -> None:
        if not self.docs:
            return  # the main manifest could not be read or parsed: its error says why
        defaults = self.docs[0].mapping("defaults")
        self.default_qc = defaults.get("quality_control")
        self.default_lc = defaults.get("liveness_control")
        structure_errors = any(d.is_error for d in self.diagnostics)
        for doc in self.docs:
            self.expand_groups(doc)
        for doc in self.docs:
            self.expand_people(doc)
        # with structure errors some groups or users may be missing: only say what is certain then
        all_groups_known = all(type(doc.data) is YamlMap and type(doc.data.get("groups", YamlMap())) is YamlMap
                               for doc in self.docs)
        self.diagnostics.extend(checks.entry_problems(self.entries, self.groups, groups_known=all_groups_known,
                                                      warn_empty=not structure_errors))
        self.check_target(self.docs[0])

    def check_target(self, doc: _Doc) -> None:
        """An unknown target is an error; a server the manifest names is refused by plan and apply
        unless a person names it (then the manifest's is not used): a warning here."""
        target = doc.data.get("target") if type(doc.data) is YamlMap else None
        if type(target) is not str or not target:
            return
        origin = doc.origin(("target",))
        try:
            parse_target(target)
        except ConfigError as problem:
            self.diagnostics.append(error(origin, "target", problem.message, problem.hint))
            return
        refused = manifest_target_problem(target)
        if refused is not None:
            self.diagnostics.append(warning(origin, "target", refused.message, refused.hint))

    def expand_groups(self, doc: _Doc) -> None:
        for group_id, body in doc.mapping("groups").items():
            where = ("groups", group_id)
            origin = doc.origin(where, at_key=True)
            path = format_path(where)
            self.diagnostics.extend(checks.group_id_problems(group_id, origin, path))
            if group_id in self.groups:
                self.diagnostics.append(error(origin, path, f"group '{group_id}' is defined twice "
                                              f"(first at {self.groups[group_id].origin})",
                                              "define each group once; people can join it from any file"))
                continue
            body = body if type(body) is YamlMap else YamlMap()
            self.groups[group_id] = GroupDecl(group_id, body.get("prune"), bool(body.get("protected")), origin, path)
            users = doc.mapping("groups", group_id, "users")
            for user_id, user in users.items():
                self.add_entries(doc, (*where, "users", user_id), doc.at(users.key_marks[user_id]),
                                 user_id, user, [group_id])
            sources = body.get("sources")
            for index, source in enumerate(sources if type(sources) is YamlList else ()):
                if doc.sound((*where, "sources", index)):
                    self.expand_folder(doc, (*where, "sources", index), group_id, source)

    def expand_people(self, doc: _Doc) -> None:
        people = doc.mapping("people")
        for user_id, person in people.items():
            where = ("people", user_id)
            origin = doc.at(people.key_marks[user_id])
            if not doc.sound(where):
                self.check_user_id(user_id, origin, where)
                continue
            if user_id in self.people:
                self.diagnostics.append(error(origin, format_path(where), f"person '{user_id}' is listed twice "
                                              f"(first at {self.people[user_id]})", "list each person once"))
                continue
            self.people[user_id] = origin
            group_ids: list[str] = []
            for index, group_id in enumerate(person["groups"]):
                if group_id in group_ids:
                    self.diagnostics.append(error(doc.origin((*where, "groups", index)),
                                                  format_path((*where, "groups", index)),
                                                  f"group '{group_id}' is listed twice for person '{user_id}'"))
                else:
                    group_ids.append(group_id)
            self.add_entries(doc, where, origin, user_id, person, group_ids)

    def add_entries(self, doc: _Doc, where: tuple, origin: Origin, user_id: str, user: dict,
                    group_ids: list[str]) -> None:
        """``origin`` is where ``user_id`` is written; key paths are formatted only for a diagnostic."""
        self.check_user_id(user_id, origin, where)
        if not doc.sound(where):
            return
        user_info = user.get("user_info")
        if not checks.user_info_fits(user_info):
            self.diagnostics.extend(checks.user_info_problems(user_info, doc.origin((*where, "user_info")),
                                                              format_path((*where, "user_info"))))
        images = self.expand_images(doc, (*where, "images"), user["images"])
        for group_id in group_ids:
            self.entries.append(Entry(group_id, user_id, user_info, images, user.get("quality_control"),
                                      user.get("liveness_control"), origin, where))

    def check_user_id(self, user_id: str, origin: Origin, where: tuple) -> None:
        if not checks.user_id_is_plain(user_id):
            self.diagnostics.extend(checks.user_id_problems(user_id, origin, format_path(where)))

    def expand_images(self, doc: _Doc, where: tuple, items: list) -> list[DesiredImage]:
        images: list[DesiredImage] = []
        seen: dict[str, str] = {}
        marks = items.item_marks
        for index, item in enumerate(items):
            spot = (*where, index)
            origin = doc.at(marks[index])
            if type(item) is str and "\0" not in item and not glob.has_magic(item):
                image = self.plain_file_image(doc, item, origin, spot)
                if image is None:
                    continue
                found = (image,)
            elif isinstance(item, dict) and "url" in item:
                found = [DesiredImage(ImageKind.URL, item["url"], origin=origin)]
            elif isinstance(item, dict) and "face_token" in item:
                token = item["face_token"]
                found = [DesiredImage(ImageKind.FACE_TOKEN, token, face_token=token, origin=origin)]
            else:
                literal = isinstance(item, dict)
                written = item["path"] if literal else item
                try:
                    reals = ([self.guard.inside(doc.base_dir, written)] if literal
                             else self.paths(doc, written, what="image"))
                except files.FileProblem as problem:
                    self.diagnostics.append(error(origin, format_path(spot), problem.message, problem.hint))
                    continue
                found = [image for image in (self.file_image(real, origin, spot) for real in reals) if image]
            for image in found:
                key = image.sha256 or image.path or f"{image.kind.value}:{image.source}"
                if key in seen:
                    self.diagnostics.append(error(origin, format_path(spot), f"image {image.source!r} is listed "
                                                  f"twice for this user (same as {seen[key]})",
                                                  "remove the duplicate"))
                    continue
                seen[key] = image.source
                images.append(image)
        return images

    def plain_file_image(self, doc: _Doc, written: str, origin: Origin, spot: tuple) -> DesiredImage | None:
        """An image written as a plain path (no glob): the common case, kept short."""
        try:
            real, status = self.guard.inside_with_status(doc.base_dir, written)
        except files.FileProblem as problem:
            self.diagnostics.append(error(origin, format_path(spot), problem.message, problem.hint))
            return None
        return self.file_image(real, origin, spot, status)

    def file_image(self, real: str, origin: Origin, where: tuple | str,
                   status: os.stat_result | None = None) -> DesiredImage | None:
        """``where`` is the key path, as steps or as text: formatted only when there is a problem."""
        source = self.guard.relative(real)
        result = self.image_cache.get(real)
        if result is None:
            try:
                result = files.inspect_image(real, source, hash_images=self.hash_images, status=status,
                                             known_file=self.known_file)
            except files.FileProblem as problem:
                result = problem
            self.image_cache[real] = result
        if isinstance(result, files.FileProblem):
            path = where if isinstance(where, str) else format_path(where)
            self.diagnostics.append(error(origin, path, result.message, result.hint))
            return None
        return DesiredImage(ImageKind.FILE, source, path=real, sha256=result.sha256, origin=origin)

    def expand_folder(self, doc: _Doc, where: tuple, group_id: str, source: dict) -> None:
        origin = doc.origin(where)
        path = format_path(where)
        try:
            folder = self.guard.inside(doc.base_dir, source["folder"])
        except files.FileProblem as problem:
            self.diagnostics.append(error(origin, path, problem.message, problem.hint))
            return
        if not os.path.isdir(folder):
            self.diagnostics.append(error(origin, path, f"folder {source['folder']!r} does not exist",
                                          "a folder source names a folder with one subfolder per user"))
            return
        info_name = source.get("user_info_file")
        try:
            subfolders = _names(folder, dirs=True)
        except OSError as problem:
            self.diagnostics.append(error(origin, path, f"cannot list folder {source['folder']!r}: {problem.strerror}"))
            return
        for user_id in subfolders:
            user_path = f"{path}[{user_id}]"
            self.diagnostics.extend(checks.user_id_problems(user_id, origin, user_path))
            user_dir = os.path.join(folder, user_id)
            try:
                names = [n for n in _names(user_dir, dirs=False) if n.lower().endswith(IMAGE_SUFFIXES)]
            except OSError as problem:
                self.diagnostics.append(error(origin, user_path, f"cannot list folder {user_id!r}: {problem.strerror}"))
                continue
            images = []
            for name in names:
                try:
                    real, status = self.guard.inside_with_status(user_dir, name)
                except files.FileProblem as problem:
                    self.diagnostics.append(error(origin, user_path, problem.message, problem.hint))
                    continue
                image = self.file_image(real, origin, user_path, status)
                if image is not None:
                    images.append(image)
            if not names:
                self.diagnostics.append(error(origin, user_path, f"folder {user_id!r} of {source['folder']!r} "
                                              "holds no PNG, JPG, JPEG or BMP file",
                                              "add the user's photos or remove the folder"))
                continue
            user_info = self.read_user_info(user_dir, info_name, origin, user_path)
            self.diagnostics.extend(checks.user_info_problems(user_info, origin, user_path))
            self.entries.append(Entry(group_id, user_id, user_info, images, source.get("quality_control"),
                                      source.get("liveness_control"), origin, user_path))

    def read_user_info(self, user_dir: str, name: str | None, origin: Origin, path: str) -> str | None:
        if not name:
            return None
        info_path = os.path.join(user_dir, name)
        if not os.path.isfile(info_path):
            return None
        try:
            with open(info_path, "rb") as handle:
                return handle.read(4096).decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as problem:
            self.diagnostics.append(error(origin, path, f"cannot read {name} of user folder: {problem}",
                                          "user_info files are UTF-8 text"))
            return None

    # -- result ----------------------------------------------------------------------------------------

    def desired(self) -> Desired:
        main = self.docs[0].data
        settings = main.get("policy") or {}
        prune = settings.get("prune", True)
        protected = set(settings.get("protected_groups") or ())
        protected.update(g.group_id for g in self.groups.values() if g.protected)
        policy = Policy(
            prune=prune,
            delete_unlisted_groups=settings.get("delete_unlisted_groups", False),
            max_delete_share=float(settings.get("max_delete_share", 0.3)),
            delete_threshold_min=settings.get("delete_threshold_min", 10),
            protected_groups=frozenset(protected),
            refresh=settings.get("refresh", "full"),
        )
        members: dict[str, list[DesiredUser]] = {group_id: [] for group_id in self.groups}
        for entry in self.entries:
            members[entry.group_id].append(DesiredUser(
                entry.user_id, tuple(entry.images), entry.user_info,
                entry.quality_control or self.default_qc or NO_CONTROL,
                entry.liveness_control or self.default_lc or NO_CONTROL, entry.origin))
        groups = tuple(
            DesiredGroup(g.group_id, tuple(members[g.group_id]), prune if g.prune is None else g.prune, g.origin)
            for g in self.groups.values())
        return Desired(groups, policy, main.get("target"), self.manifest_path, self.digest())

    def digest(self) -> str:
        """sha256 over every file's path (relative to the manifest's folder) and bytes, sorted by path."""
        digest = hashlib.sha256()
        for relative, raw in sorted((self.guard.relative(d.real), d.raw)
                                    for d in self.docs):
            digest.update(f"{relative}\0{len(raw)}\0".encode())
            digest.update(raw)
        return digest.hexdigest()

    def sorted_diagnostics(self) -> list[Diagnostic]:
        return sorted(self.diagnostics, key=sort_key)


