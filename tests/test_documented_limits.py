"""Limits Baidu documents, enforced by the local library and ``facesync serve`` by default.

The face cap per user, background deletion of large groups, each endpoint's user_id length and
``action_type``; each with the opt-out a test can take.
"""

from __future__ import annotations

import base64

import pytest

from facesync.api.errors import (
    FACE_CAP_CODE,
    GROUP_BEING_DELETED_ADD_CODE,
    GROUP_BEING_DELETED_RECREATE_CODE,
    GROUP_BEING_DELETED_RECREATE_HARSH_CODE,
    FaceApiError,
    InvalidInputError,
)
from facesync.api.protocol import Image
from facesync.images import local_face_token
from facesync.local.store import MAX_FACES_PER_USER, LocalLibrary
from tests.support.images import png
from tests.support.server import ApiClient


def img(seed: int) -> Image:
    return Image.from_bytes(png(seed))


def b64(seed: int) -> str:
    return base64.b64encode(png(seed)).decode()


def token(seed: int) -> str:
    return local_face_token(png(seed))


def code_of(call, *args, **kwargs) -> int:
    with pytest.raises(FaceApiError) as raised:
        call(*args, **kwargs)
    return raised.value.error_code


def faces(lib, group_id: str, user_id: str) -> list[str]:
    return [face.face_token for face in lib.face_getlist(group_id, user_id).faces]


# ---- faces per user ----

def test_twenty_faces_per_user_by_default(library):
    library.group_add("g")
    library.group_add("h")
    for n in range(MAX_FACES_PER_USER):
        library.user_add("g", "u", img(n))
    with pytest.raises(InvalidInputError, match="the cap is 20") as raised:
        library.user_add("g", "u", img(100))
    assert raised.value.error_code == FACE_CAP_CODE == 222208
    assert len(faces(library, "g", "u")) == 20
    library.user_add("h", "u", img(100))  # the cap is per group
    library.user_add("g", "u", img(101), action_type="REPLACE")  # leaves one face: within the cap
    assert faces(library, "g", "u") == [token(101)]


def test_face_cap_opt_out(tmp_path):
    with LocalLibrary(str(tmp_path / "lib.db"), max_faces_per_user=None) as lib:
        lib.group_add("g")
        for n in range(MAX_FACES_PER_USER + 1):
            lib.user_add("g", "u", img(n))
        assert len(faces(lib, "g", "u")) == 21


def test_serve_face_cap_and_its_opt_out(serve):
    for extra, refused in (((), True), (("--max-faces-per-user", "0"), False)):
        api = ApiClient(serve(*extra))
        api.ok("faceset/group/add", group_id="g")
        for n in range(20):
            api.ok("faceset/user/add", group_id="g", user_id="u", image=b64(n), image_type="BASE64")
        answer = api.call("faceset/user/add", group_id="g", user_id="u", image=b64(99), image_type="BASE64")
        assert answer["error_code"] == (222208 if refused else 0), answer


# ---- background deletion of large groups ----

class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def fill(lib, group_id: str, count: int) -> None:
    lib.group_add(group_id)
    for n in range(count):
        lib.user_add(group_id, f"u{n // MAX_FACES_PER_USER}", img(n))


@pytest.mark.both_unknowns
def test_large_group_is_deleted_in_the_background_by_default(tmp_path, unknowns):
    clock = Clock()
    with LocalLibrary(str(tmp_path / "lib.db"), unknowns=unknowns, clock=clock, group_delete_rate=100) as lib:
        fill(lib, "big", 501)
        fill(lib, "edge", 500)
        lib.group_delete("edge")  # 500 faces: at once
        lib.group_add("edge")
        lib.group_delete("big")  # 501 faces at 100 faces/s: about 5 s
        assert lib.group_getlist().ids == ("edge",)
        assert code_of(lib.group_getusers, "big") == 223100
        with pytest.raises(FaceApiError, match="being deleted") as raised:
            lib.user_add("big", "u0", img(0))
        assert raised.value.error_code == GROUP_BEING_DELETED_ADD_CODE
        recreate = (GROUP_BEING_DELETED_RECREATE_HARSH_CODE if unknowns == "harsh"
                    else GROUP_BEING_DELETED_RECREATE_CODE)
        assert code_of(lib.group_add, "big") == recreate
        clock.now += 4.9
        assert code_of(lib.group_add, "big") == recreate
        clock.now += 0.2
        lib.group_add("big")
        lib.user_add("big", "u0", img(0))
        assert lib.group_getusers("big").ids == ("u0",)
        assert lib.consistency_problems() == []


def test_background_deletion_opt_out(tmp_path):
    with LocalLibrary(str(tmp_path / "lib.db"), background_group_delete=False) as lib:
        fill(lib, "big", 501)
        lib.group_delete("big")
        lib.group_add("big")
        assert lib.group_getusers("big").ids == ()


@pytest.mark.both_unknowns
def test_serve_deletes_large_groups_in_the_background(serve, unknowns, tmp_path):
    servers = []
    for name, options in (("slow", ("--group-delete-rate", "1")), ("fast", ("--group-delete-rate", "100000000")),
                          ("at_once", ("--no-background-group-delete",))):
        db = str(tmp_path / f"{name}.db")
        with LocalLibrary(db) as lib:  # filled directly: 501 HTTP calls would only cost time
            fill(lib, "big", 501)
        servers.append(ApiClient(serve(*options, db=db)))
    slow, fast, at_once = servers
    for api in servers:
        assert len(api.ok("faceset/group/getusers", group_id="big")["user_id_list"]) == 26
        api.ok("faceset/group/delete", group_id="big")
        assert api.ok("faceset/group/getlist")["group_id_list"] == []
    recreate = slow.call("faceset/group/add", group_id="big")
    assert recreate["error_code"] == (223101 if unknowns == "harsh" else 222901)
    assert "being deleted" in recreate["error_msg"]
    add = slow.call("faceset/user/add", group_id="big", user_id="u0", image=b64(0), image_type="BASE64")
    assert add["error_code"] == 223100 and "being deleted" in add["error_msg"]
    assert slow.call("faceset/group/getusers", group_id="big")["error_code"] == 223100
    for api in (fast, at_once):  # 501 faces at 10^8 faces/s are gone before the next call arrives
        api.ok("faceset/group/add", group_id="big")
        assert api.ok("faceset/group/getusers", group_id="big")["user_id_list"] == []


# ---- user_id length per endpoint ----

LONG = "u" * 48
TOO_LONG = "u" * 49


def test_user_id_limits_per_endpoint(library):
    library.group_add("g")
    library.group_add("h")
    library.user_add("g", "a" * 128, img(1))
    assert code_of(library.user_add, "g", "a" * 129, img(2)) == 222018
    library.user_add("g", LONG, img(3))
    calls = {
        "user/update": lambda uid: library.user_update("g", uid, img(4)),
        "user/get": lambda uid: library.user_get("g", uid),
        "face/getlist": lambda uid: library.face_getlist("g", uid),
        "user/copy": lambda uid: library.user_copy(uid, "g", "h"),
        "face/delete": lambda uid: library.face_delete("g", uid, token(1)),
        "user/delete": lambda uid: library.user_delete("g", uid),
    }
    for name, call in calls.items():
        assert code_of(call, TOO_LONG) == 222018, name
        assert code_of(call, "a" * 128) == 222018, name  # created by user/add, never managed after
    assert library.face_getlist("g", LONG).faces
    library.user_copy(LONG, "g", "h")
    library.user_delete("g", LONG)
    assert library.user_get("h", LONG).memberships[0].group_id == "h"


def test_user_id_limits_opt_out(tmp_path):
    with LocalLibrary(str(tmp_path / "lib.db"), user_id_limits_per_endpoint=False) as lib:
        lib.group_add("g")
        lib.user_add("g", "a" * 128, img(1))
        assert lib.user_get("g", "a" * 128).memberships[0].group_id == "g"
        lib.user_delete("g", "a" * 128)
        assert code_of(lib.user_add, "g", "a" * 129, img(1)) == 222018


def test_serve_user_id_limits(serve):
    api = ApiClient(serve())
    api.ok("faceset/group/add", group_id="g")
    api.ok("faceset/user/add", group_id="g", user_id="a" * 128, image=b64(1), image_type="BASE64")
    assert api.call("faceset/user/get", group_id="g", user_id="a" * 128)["error_code"] == 222018
    assert api.call("faceset/user/delete", group_id="g", user_id="a" * 49)["error_code"] == 222018
    loose = ApiClient(serve("--loose-user-id-limits"))
    loose.ok("faceset/group/add", group_id="g")
    loose.ok("faceset/user/add", group_id="g", user_id="a" * 128, image=b64(1), image_type="BASE64")
    assert loose.ok("faceset/user/get", group_id="g", user_id="a" * 128)["user_list"][0]["group_id"] == "g"


# ---- action_type ----

def test_user_add_action_type(library):
    library.group_add("g")
    library.user_add("g", "u", img(1), user_info="one")
    library.user_add("g", "u", img(2), action_type="APPEND")
    assert faces(library, "g", "u") == [token(1), token(2)]
    library.user_add("g", "u", img(3), action_type="REPLACE", user_info="three")
    assert faces(library, "g", "u") == [token(3)]
    assert library.user_get("g", "u").memberships[0].user_info == "three"
    library.user_add("g", "u", img(3), action_type="REPLACE")  # the face it already has: no 223105
    assert faces(library, "g", "u") == [token(3)]
    assert code_of(library.user_add, "g", "u", img(3)) == 223105
    library.user_add("g", "new", img(4), action_type="REPLACE")  # a new user, as APPEND would
    assert faces(library, "g", "new") == [token(4)]
    with pytest.raises(InvalidInputError, match=r"param\[action_type\] format error") as raised:
        library.user_add("g", "u", img(5), action_type="UPDATE")
    assert raised.value.error_code == 222001
    assert faces(library, "g", "u") == [token(3)]


def test_user_update_action_type(library):
    library.group_add("g")
    assert code_of(library.user_update, "g", "ghost", img(1)) == 223103
    assert code_of(library.user_update, "g", "ghost", img(1), action_type="UPDATE") == 223103
    library.user_update("g", "ghost", img(1), action_type="REPLACE", user_info="registered")
    assert faces(library, "g", "ghost") == [token(1)]
    assert library.user_get("g", "ghost").memberships[0].user_info == "registered"
    library.user_add("g", "ghost", img(2))
    library.user_update("g", "ghost", img(3), action_type="REPLACE")
    assert faces(library, "g", "ghost") == [token(3)]
    assert code_of(library.user_update, "g", "ghost", img(4), action_type="APPEND") == 222001
    assert code_of(library.user_update, "missing", "ghost", img(4), action_type="REPLACE") == 223100


def test_serve_action_type(serve):
    server = serve()
    api = ApiClient(server)
    api.ok("faceset/group/add", group_id="g")
    api.ok("faceset/user/add", group_id="g", user_id="u", image=b64(1), image_type="BASE64")
    api.ok("faceset/user/add", group_id="g", user_id="u", image=b64(2), image_type="BASE64", action_type="REPLACE")
    listed = api.ok("faceset/face/getlist", group_id="g", user_id="u")["face_list"]
    assert [face["face_token"] for face in listed] == [token(2)]
    missing = api.call("faceset/user/update", group_id="g", user_id="v", image=b64(3), image_type="BASE64")
    assert missing["error_code"] == 223103
    api.ok("faceset/user/update", group_id="g", user_id="v", image=b64(3), image_type="BASE64",
           action_type="REPLACE")
    assert api.ok("faceset/group/getusers", group_id="g")["user_id_list"] == ["u", "v"]
    assert server.journal()[-1]["params"]["action_type"] == "REPLACE"
