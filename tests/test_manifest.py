"""Loading manifests into Desired: examples, expansion (people, folders, globs, includes), options."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from facesync.errors import ManifestError
from facesync.manifest import Diagnostic, load, render_diagnostics
from facesync.model import ImageKind
from tests.support.images import GIF, bmp, png

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def faces(folder: Path, *names: str, start: int = 1) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names, start=start):
        (folder / name).write_bytes(png(seed))


def users_of(desired, group_id):
    return {user.user_id: user for user in desired.group(group_id).users}


def errors_of(path) -> list[str]:
    with pytest.raises(ManifestError) as raised:
        load(str(path))
    return [d.headline() for d in raised.value.diagnostics if d.is_error]


@pytest.mark.parametrize("name", ["quickstart", "office", "company"])
def test_examples_validate_without_warnings(name):
    loaded = load(str(EXAMPLES / name / "faceset.yaml"))
    assert loaded.warnings == ()
    assert loaded.desired.groups
    for group in loaded.desired.groups:
        for user in group.users:
            for image in user.images:
                if image.kind is ImageKind.FILE:
                    assert os.path.isfile(image.path) and len(image.sha256) == 64


def test_quickstart_person_in_two_groups_gets_the_same_user_in_each():
    desired = load(str(EXAMPLES / "quickstart" / "faceset.yaml")).desired
    assert [g.group_id for g in desired.groups] == ["staff", "visitors"]
    staff, visitors = users_of(desired, "staff"), users_of(desired, "visitors")
    assert list(staff) == ["alice", "bob", "carol"]
    assert list(visitors) == ["dave", "erin", "carol"]
    assert staff["carol"] == visitors["carol"]
    assert staff["carol"].user_info == "Carol Chen, front desk"
    assert staff["bob"].user_info is None  # omitted: not managed
    assert [i.source for i in staff["alice"].images] == ["faces/alice_1.jpg", "faces/alice_2.jpg"]
    assert (staff["alice"].origin.line, staff["alice"].origin.column) == (13, 7)


def test_office_folder_source_makes_one_user_per_subfolder():
    desired = load(str(EXAMPLES / "office" / "faceset.yaml")).desired
    staff = users_of(desired, "staff")
    assert list(staff) == ["frank", "grace", "heidi", "judy"]
    assert [i.source for i in staff["frank"].images] == ["staff/frank/front.png", "staff/frank/side.png"]
    assert staff["frank"].user_info == "Frank Li, reception"
    assert staff["heidi"].user_info is None
    assert staff["frank"].quality_control == "LOW"  # from defaults
    assert staff["judy"].quality_control == "NORMAL"
    assert desired.group("visitors").prune is False and desired.group("staff").prune is True


def test_company_includes_fragments_and_resolves_paths_from_each_file():
    desired = load(str(EXAMPLES / "company" / "faceset.yaml")).desired
    assert [g.group_id for g in desired.groups] == ["all_staff", "engineering", "sales"]
    assert set(users_of(desired, "all_staff")) == {"lena", "oscar"}
    lena = users_of(desired, "engineering")["lena"]
    assert [i.kind for i in lena.images] == [ImageKind.FILE, ImageKind.FILE, ImageKind.FACE_TOKEN]
    assert [i.source for i in lena.images[:2]] == ["faces/lena/1.png", "faces/lena/2.png"]
    assert lena.origin.file.endswith(os.path.join("teams", "engineering.yaml"))
    nora = users_of(desired, "sales")["nora"]
    assert nora.images[0].kind is ImageKind.URL
    assert desired.policy.protected_groups == frozenset({"all_staff"})
    assert desired.policy.max_delete_share == 0.2 and desired.policy.delete_threshold_min == 50
    assert desired.target == "local:.facesync/company.db"


def test_digest_covers_included_files(tmp_path):
    faces(tmp_path / "f", "a.png")
    main = write(tmp_path / "faceset.yaml", "version: 1\ninclude: [teams/*.yaml]\ngroups:\n  g: {}\n")
    team = write(tmp_path / "teams" / "t.yaml", "people:\n  a:\n    groups: [g]\n    images: [../f/a.png]\n")
    first = load(str(main)).desired.digest
    assert first == load(str(main)).desired.digest
    team.write_text(team.read_text() + "# a comment\n")
    assert load(str(main)).desired.digest != first


def test_every_problem_of_every_file_is_reported_at_once(tmp_path):
    write(tmp_path / "faceset.yaml", "version: 1\ninclude: [a.yaml, b.yaml]\ngroups:\n  g:\n    prnue: true\n")
    write(tmp_path / "a.yaml", "groups:\n  h:\n    users:\n      u:\n        images: 3\n")
    write(tmp_path / "b.yaml", "people: [\n")
    found = errors_of(tmp_path / "faceset.yaml")
    assert [line.split(": error")[0].rsplit(os.sep, 1)[-1] for line in found] == [
        "a.yaml:5:17", "b.yaml:2:1", "faceset.yaml:5:5"]


def test_semantic_errors_are_all_reported(tmp_path):
    faces(tmp_path / "f", "a.png")
    (tmp_path / "f" / "x.gif").write_bytes(GIF)
    write(tmp_path / "faceset.yaml", "version: 1\ngroups:\n  g:\n    users:\n      bad-id:\n"
          "        images: [f/a.png, f/x.gif, f/none.png]\n")
    found = errors_of(tmp_path / "faceset.yaml")
    assert len(found) == 3
    assert "invalid user_id 'bad-id'" in found[0]
    assert "GIF" in found[1] and "not found" in found[2]


def test_hash_images_false_still_checks_content_but_leaves_sha256_empty(tmp_path):
    faces(tmp_path / "f", "a.png")
    (tmp_path / "f" / "b.bmp").write_bytes(bmp(7))
    main = write(tmp_path / "faceset.yaml", "version: 1\ngroups:\n  g:\n    users:\n      u:\n"
                 "        images: ['f/*']\n")
    user = load(str(main), hash_images=False).desired.groups[0].users[0]
    assert [i.source for i in user.images] == ["f/a.png", "f/b.bmp"]
    assert all(i.sha256 is None for i in user.images)
    (tmp_path / "f" / "c.png").write_bytes(GIF)
    assert "GIF" in errors_of(main)[0]


def test_same_image_content_twice_for_one_user_is_an_error(tmp_path):
    faces(tmp_path / "f", "a.png")
    (tmp_path / "f" / "copy.png").write_bytes((tmp_path / "f" / "a.png").read_bytes())
    main = write(tmp_path / "faceset.yaml", "version: 1\ngroups:\n  g:\n    users:\n      u:\n"
                 "        images: [f/a.png, f/copy.png]\n")
    assert "listed twice" in errors_of(main)[0]


def test_keys_keep_their_text_and_merge_keys_work(tmp_path):
    faces(tmp_path / "f", "a.png")
    main = write(tmp_path / "faceset.yaml", "version: 1\ngroups:\n  g:\n    users:\n      007: &common\n        quality_control: HIGH\n"
                    "        images: [f/a.png]\n      008:\n        <<: *common\n        user_info: eight\n")
    users = users_of(load(str(main)).desired, "g")
    assert list(users) == ["007", "008"]
    assert users["008"].quality_control == "HIGH" and users["008"].user_info == "eight"


def test_warnings_do_not_fail_the_load(tmp_path):
    main = write(tmp_path / "faceset.yaml", "version: 1\ngroups:\n  empty: {}\n")
    warnings = [d.message for d in load(str(main)).warnings]
    assert len(warnings) == 1 and "no users" in warnings[0]


def test_users_with_more_faces_than_baidu_keeps_or_ids_it_cannot_manage_are_errors(tmp_path):
    faces(tmp_path / "f", *[f"{n}.png" for n in range(21)])
    main = write(tmp_path / "faceset.yaml", "version: 1\ngroups:\n  g:\n    users:\n"
                 f"      {'u' * 49}:\n        images: ['f/1*.png']\n"
                 f"      {'v' * 48}:\n        images: ['f/*.png']\n"
                 "      w:\n        images: ['f/?.png', f/10.png, f/11.png, f/12.png, f/13.png, f/14.png, "
                 "f/15.png, f/16.png, f/17.png, f/18.png, f/19.png]\n")
    found = errors_of(main)
    assert len(found) == 2
    assert "faceset.yaml:5:7: error: user_id 'uuuuuuuuuuuuuuuuuuuu'... is 49 bytes long; the limit is 48" in found[0]
    assert "faceset.yaml:7:7: error: user 'vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv' has 21 faces; " \
           "Baidu accepts at most 20 per user in a group" in found[1]


def test_recursive_alias_and_unknown_tags_are_errors_not_crashes(tmp_path):
    main = write(tmp_path / "faceset.yaml", "version: 1\ngroups: &a\n  g: *a\nx: !!python/object:os.system {}\n")
    found = errors_of(main)
    assert any("recursive" in line for line in found)
    assert any("unsupported YAML tag" in line for line in found)


def test_paths_may_climb_out_of_an_included_folder_but_not_out_of_the_manifest(tmp_path):
    faces(tmp_path / "root" / "f", "a.png")
    main = write(tmp_path / "root" / "faceset.yaml", "version: 1\ninclude: [sub/t.yaml]\n")
    write(tmp_path / "root" / "sub" / "t.yaml", "groups:\n  g:\n    users:\n      u:\n        images: [../f/a.png]\n"
          "      v:\n        images: [../../x.png]\n")
    found = errors_of(main)
    assert len(found) == 1 and "leaves the manifest's folder" in found[0] and "t.yaml:7:18" in found[0]


def test_diagnostic_text_and_json():
    diagnostic = Diagnostic("error", "m.yaml", 3, 5, "groups.g", "unknown key 'x'", "did you mean 'y'?")
    assert str(diagnostic) == "m.yaml:3:5: error: unknown key 'x' (at groups.g)\n  hint: did you mean 'y'?"
    assert json.loads(render_diagnostics([diagnostic], "json"))[0]["line"] == 3
    assert render_diagnostics([diagnostic]) == str(diagnostic)


def test_each_file_of_a_folder_is_judged_on_its_own_after_the_folder_is_known(tmp_path):
    """A folder's real path is worked out once; a file in it that is a symlink is still followed."""
    root = tmp_path / "root"
    faces(root / "f", "a.png", "b.png")
    faces(tmp_path / "elsewhere", "x.png", start=5)
    faces(root / "real", "r.png", start=7)
    os.symlink(tmp_path / "elsewhere" / "x.png", root / "f" / "out.png")
    os.symlink("b.png", root / "f" / "to_b.png")
    os.symlink(root / "real", root / "f" / "alias")
    os.symlink(tmp_path / "elsewhere", root / "f" / "away")
    main = write(root / "faceset.yaml", "version: 1\ngroups:\n  g:\n    users:\n"
                 "      u1: {images: [f/a.png, f/out.png, f/alias/r.png, f/away/x.png]}\n"
                 "      u2: {images: [f/to_b.png]}\n")
    found = errors_of(main)
    assert len(found) == 2
    assert "f/out.png' is a symlink to a file outside" in found[0] and ":5:30:" in found[0]
    assert "f/away/x.png' is a symlink to a file outside" in found[1]
    main.write_text(main.read_text().replace("f/out.png, ", "").replace(", f/away/x.png", ""))
    users = users_of(load(str(main)).desired, "g")
    assert [i.source for i in users["u1"].images] == ["f/a.png", "real/r.png"]
    assert users["u1"].images[1].path == str((root / "real" / "r.png").resolve())
    assert [(i.source, i.path) for i in users["u2"].images] == [("f/b.png", str((root / "f" / "b.png").resolve()))]


def test_an_anchored_list_of_mappings_merges_into_every_user_that_names_it(tmp_path):
    faces(tmp_path / "f", "a.png", "b.png")
    main = write(tmp_path / "faceset.yaml", "version: 1\ngroups:\n  g:\n    users:\n"
                 "      u1:\n        <<: &both [{quality_control: HIGH}, {user_info: shared}]\n"
                 "        images: [f/a.png]\n      u2:\n        <<: *both\n        images: [f/b.png]\n")
    users = users_of(load(str(main)).desired, "g")
    assert [(u.quality_control, u.user_info) for u in users.values()] == [("HIGH", "shared")] * 2
    assert users["u2"].origin.line == 8 and users["u2"].images[0].origin.line == 10
