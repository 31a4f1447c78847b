"""refresh: reads what the manifest manages, with exactly the minimum of calls counted at the server."""

from __future__ import annotations

from dataclasses import replace

import pytest

from facesync.api.baidu import BaiduClient
from facesync.api.protocol import Image
from facesync.local.store import LocalLibrary
from facesync.model import Desired, DesiredGroup, DesiredImage, DesiredUser, ImageKind, Policy
from facesync.refresh import refresh
from tests.support import images
from tests.support.server import API_KEY, SECRET_KEY

PHOTO = DesiredImage(ImageKind.FILE, "face.png", "/m/face.png")


def user(user_id: str, user_info: str | None = None) -> DesiredUser:
    return DesiredUser(user_id, (PHOTO,), user_info=user_info)


def add(lib: LocalLibrary, group_id: str, user_id: str, seed: int, user_info: str | None = None) -> str:
    return lib.user_add(group_id, user_id, Image.from_bytes(images.png(seed)), user_info=user_info).face_token


def build(lib: LocalLibrary) -> dict[str, str]:
    for group_id in ("staff", "visitors", "other"):
        lib.group_add(group_id)
    return {
        "alice": add(lib, "staff", "alice", 1, "Alice"),
        "alice2": add(lib, "staff", "alice", 2, "Alice"),  # repeated: an add without one may clear it
        "bob": add(lib, "staff", "bob", 3, "Bob"),
        "carol": add(lib, "staff", "carol", 4),
        "alice_v": add(lib, "visitors", "alice", 5, "Alice the visitor"),
        "dave": add(lib, "other", "dave", 6),
    }


MANIFEST = Desired(groups=(
    DesiredGroup("staff", (user("alice", "Alice"), user("bob"), user("erin", "Erin"))),
    DesiredGroup("visitors", (user("alice", "Alice"),)),
    DesiredGroup("planned", (user("frank", "Frank"),)),  # not in the library yet
))


def test_reads_the_managed_scope_and_nothing_else(library):
    tokens = build(library)
    live = refresh(library, MANIFEST)
    assert set(live.group_ids) == {"staff", "visitors", "other"}
    assert set(live.groups) == {"staff", "visitors"}
    staff = live.groups["staff"].users
    assert list(staff) == ["alice", "bob", "carol"]
    assert sorted(staff["alice"].face_tokens) == sorted([tokens["alice"], tokens["alice2"]])
    assert staff["alice"].user_info == "Alice"
    assert staff["bob"].face_tokens == (tokens["bob"],) and staff["bob"].user_info is None  # not managed
    assert staff["carol"].face_tokens is None  # only to be deleted: faces not read
    assert live.groups["visitors"].users["alice"].user_info == "Alice the visitor"
    assert live.identity == library.identity and live.source == "refresh"


def test_an_in_sync_library_costs_the_minimum_of_calls(tmp_path, serve):
    db = str(tmp_path / "served.db")
    with LocalLibrary(db) as lib:
        build(lib)
    server = serve(db=db)
    client = BaiduClient(server.base_url, API_KEY, SECRET_KEY, qps=None)
    client.connect()  # the access token is fetched outside the counted calls
    assert client.identity
    server.reset()
    live = refresh(client, MANIFEST, concurrency=4)
    assert server.stats()["counters"] == {
        "faceset/group/getlist": 1,
        "faceset/group/getusers": 2,  # staff, visitors; not other, not planned
        "faceset/face/getlist": 3,  # staff/alice, staff/bob, visitors/alice; not carol
        "faceset/user/get": 1,  # alice once (@ALL) for both groups; bob's user_info is not managed
    }
    assert live.groups["staff"].users["alice"].user_info == "Alice"
    assert live == replace(refresh(LocalLibrary(db), MANIFEST), identity=live.identity, fetched_at=live.fetched_at)
    client.close()


def test_every_page_is_read_once(tmp_path, serve):
    db = str(tmp_path / "served.db")
    with LocalLibrary(db) as lib:
        lib.group_add("crowd")
        for i in range(1000):
            lib.user_add("crowd", f"u{i}", Image.from_face_token(lib.detect(Image.from_bytes(images.png(1))).faces[0]
                                                                .face_token))
    server = serve(db=db)
    client = BaiduClient(server.base_url, API_KEY, SECRET_KEY, qps=None)
    client.connect()
    assert client.identity
    server.reset()
    live = refresh(client, Desired(groups=(DesiredGroup("crowd", (user("u999"),)),)))
    assert server.stats()["counters"] == {"faceset/group/getlist": 1, "faceset/group/getusers": 2,
                                          "faceset/face/getlist": 1}
    assert len(live.groups["crowd"].users) == 1000
    client.close()


def test_users_only_to_be_deleted_are_read_where_a_face_named_by_token_has_no_named_holder(library):
    tokens = build(library)
    by_token = lambda *names: tuple(DesiredImage(ImageKind.FACE_TOKEN, tokens[n], face_token=tokens[n])
                                    for n in names)
    in_sync = Desired(groups=(DesiredGroup("staff", (DesiredUser("alice", by_token("alice", "alice2")),
                                                     DesiredUser("bob", by_token("bob")))),))
    assert refresh(library, in_sync).groups["staff"].users["carol"].face_tokens is None
    renamed = Desired(groups=(DesiredGroup("staff", (DesiredUser("alicia", by_token("alice", "alice2")),
                                                     DesiredUser("bob", by_token("bob")))),
                              DesiredGroup("visitors", (DesiredUser("alice", by_token("alice_v")),))))
    live = refresh(library, renamed)
    staff = live.groups["staff"].users
    assert sorted(staff["alice"].face_tokens) == sorted([tokens["alice"], tokens["alice2"]])  # the move's source
    assert staff["carol"].face_tokens == (tokens["carol"],)
    unpruned = Desired(groups=(replace(renamed.groups[0], prune=False),))
    assert refresh(library, unpruned).groups["staff"].users["carol"].face_tokens is None  # kept: no move


def test_unlisted_groups_are_only_named(library):
    build(library)
    desired = Desired(groups=(DesiredGroup("visitors", (user("alice"),)),),
                      policy=Policy(delete_unlisted_groups=True))
    live = refresh(library, desired)
    assert set(live.group_ids) == {"staff", "visitors", "other"} and set(live.groups) == {"visitors"}


class _Racing(LocalLibrary):
    """Another writer deletes a user right after getusers has listed it."""

    victim = ("staff", "bob")

    def group_getusers(self, group_id, start=0, length=100):
        page = super().group_getusers(group_id, start, length)
        if group_id == self.victim[0]:
            super().user_delete(*self.victim)
        return page


@pytest.mark.parametrize("victim", [("staff", "bob"), ("staff", "alice")])
def test_a_user_gone_since_getusers_is_absent(tmp_path, victim):
    with LocalLibrary(str(tmp_path / "lib.db")) as lib:
        build(lib)
    racing = _Racing(str(tmp_path / "lib.db"))
    racing.victim = victim
    live = refresh(racing, MANIFEST, concurrency=1)
    assert victim[1] not in live.groups["staff"].users
    assert "carol" in live.groups["staff"].users
    racing.close()


def test_progress_bar_and_concurrency_do_not_change_the_answer(library):
    build(library)
    plain = refresh(library, MANIFEST, concurrency=1, progress=False)
    shown = refresh(library, MANIFEST, concurrency=8, progress=True)
    assert replace(shown, fetched_at=0) == replace(plain, fetched_at=0)


def test_user_info_is_read_only_for_users_a_plan_adds_faces_to(tmp_path, serve):
    from facesync.cache import TokenCache
    from facesync.session import Session

    db = str(tmp_path / "served.db")
    with LocalLibrary(db) as lib:
        tokens = build(lib)
    server = serve(db=db)
    client = BaiduClient(server.base_url, API_KEY, SECRET_KEY, qps=None)
    client.connect()
    assert client.identity
    face = lambda name: DesiredImage(ImageKind.FACE_TOKEN, tokens[name], face_token=tokens[name])
    in_sync = Desired(groups=(DesiredGroup("staff", (DesiredUser("bob", (face("bob"),)),
                                                     DesiredUser("carol", (face("carol"),))), prune=False),))
    server.reset()
    assert Session(client, cache=TokenCache.in_memory(), progress=False).plan(in_sync).empty
    assert "faceset/user/get" not in server.stats()["counters"]  # nobody's user_info is managed or touched

    grown = Desired(groups=(DesiredGroup("staff", (DesiredUser("bob", (face("bob"), face("dave"))),
                                                   DesiredUser("carol", (face("carol"),))), prune=False),))
    server.reset()
    plan = Session(client, cache=TokenCache.in_memory(), progress=False).plan(grown)
    assert server.stats()["counters"]["faceset/user/get"] == 1  # bob only: the add must send his back
    assert [(op.user_id, op.user_info, op.expects[0].user_info) for op in plan.operations] == [("bob", "Bob", "Bob")]
    client.close()
