"""The two answers of the local library and ``facesync serve`` where Baidu's documentation is silent.

Each behaviour of the contract's UNKNOWN table, lenient and harsh, on the store directly and over HTTP.
"""

from __future__ import annotations

import base64
import os

import pytest

from facesync.api.errors import (
    GROUP_BEING_DELETED_RECREATE_CODE,
    GROUP_BEING_DELETED_RECREATE_HARSH_CODE,
    AlreadyExistsError,
    FaceApiError,
    InvalidInputError,
    NotFoundError,
)
from facesync.api.protocol import Image
from facesync.errors import ConfigError
from facesync.images import local_face_token
from facesync.local.store import LocalLibrary
from facesync.local.unknowns import ENV_VAR, Unknowns, unknowns_from_environment
from facesync.targets import open_target, parse_target
from tests.support.images import png
from tests.support.server import ApiClient

HARSH = "harsh"
LENIENT = "lenient"


def open_library(tmp_path, unknowns: str, **options) -> LocalLibrary:
    return LocalLibrary(str(tmp_path / f"{unknowns}.db"), unknowns=unknowns, **options)


def img(seed: int) -> Image:
    return Image.from_bytes(png(seed))


def code_of(call) -> int:
    with pytest.raises(FaceApiError) as raised:
        call()
    return raised.value.error_code


# ---- choosing the variant ----

def test_variants_are_all_kind_or_all_dangerous():
    lenient, harsh = Unknowns.lenient(), Unknowns.harsh()
    switches = [name for name in Unknowns.__slots__ if name != "name"]
    assert not any(getattr(lenient, name) for name in switches)
    assert all(getattr(harsh, name) for name in switches)
    assert Unknowns.named(" HARSH ") == harsh
    with pytest.raises(ValueError, match="lenient, harsh"):
        Unknowns.named("strict")


def test_environment_chooses_the_variant_of_local_targets(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, HARSH)
    with open_target(parse_target(f"local:{tmp_path / 'lib.db'}")) as lib:
        assert lib.unknowns == Unknowns.harsh()
    monkeypatch.delenv(ENV_VAR)
    assert unknowns_from_environment() == Unknowns.lenient()
    monkeypatch.setenv(ENV_VAR, "sometimes")
    with pytest.raises(ConfigError, match=ENV_VAR):
        unknowns_from_environment()


@pytest.mark.both_unknowns
def test_marker_runs_the_fixtures_in_each_variant(library, unknowns):
    assert unknowns in (LENIENT, HARSH)
    assert library.unknowns == Unknowns.named(unknowns)
    assert os.environ[ENV_VAR] == unknowns


# ---- user_info left out ----

@pytest.mark.parametrize("call", ["user_add", "user_update"])
@pytest.mark.parametrize("variant, kept", [(LENIENT, True), (HARSH, False)])
def test_add_or_update_without_user_info_on_an_existing_user(tmp_path, call, variant, kept):
    with open_library(tmp_path, variant) as lib:
        lib.group_add("g")
        lib.user_add("g", "u", img(1), user_info="Alice")
        getattr(lib, call)("g", "u", img(2))
        assert lib.user_get("g", "u").memberships[0].user_info == ("Alice" if kept else "")


@pytest.mark.parametrize("variant", [LENIENT, HARSH])
def test_user_info_given_is_always_set(tmp_path, variant):
    with open_library(tmp_path, variant) as lib:
        lib.group_add("g")
        lib.user_add("g", "u", img(1), user_info="Alice")
        lib.user_add("g", "u", img(2), user_info="Alicia")
        assert lib.user_get("g", "u").memberships[0].user_info == "Alicia"
        lib.user_update("g", "u", img(3), user_info="Ali")
        assert lib.user_get("g", "u").memberships[0].user_info == "Ali"


# ---- FACE_TOKEN images ----

def test_face_token_of_a_removed_face(tmp_path):
    for variant in (LENIENT, HARSH):
        with open_library(tmp_path, variant) as lib:
            lib.group_add("g")
            lib.group_add("h")
            token = lib.user_add("g", "u", img(1)).face_token
            lib.user_add("g", "u", img(2))
            # while some face holds the token, both variants take it, in any group
            assert lib.user_add("h", "v", Image.from_face_token(token)).face_token == token
            lib.user_delete("h", "v")
            lib.face_delete("g", "u", token)
            reuse = Image.from_face_token(token)
            if variant == HARSH:
                assert code_of(lambda: lib.user_add("g", "u", reuse)) == 222209  # noqa: B023 (called at once)
            else:
                assert lib.user_add("g", "u", reuse).face_token == token


def test_harsh_face_token_of_a_group_being_deleted_is_gone(tmp_path):
    clock = [1000.0]
    with open_library(tmp_path, HARSH, background_group_delete=True, clock=lambda: clock[0]) as lib:
        lib.group_add("big")
        lib.group_add("other")
        tokens = [lib.user_add("big", f"u{i}", img(i)).face_token for i in range(501)]
        lib.group_delete("big")
        assert code_of(lambda: lib.user_add("other", "v", Image.from_face_token(tokens[0]))) == 222209


# ---- the same face on two users of one group ----

def test_same_face_on_two_users_of_one_group(tmp_path):
    for variant in (LENIENT, HARSH):
        with open_library(tmp_path, variant) as lib:
            lib.group_add("g")
            lib.group_add("h")
            lib.user_add("g", "alice", img(1))
            lib.user_add("g", "bob", img(2))
            lib.user_add("h", "carol", img(1))  # another group: allowed in both variants
            attempts = {
                "new user": lambda: lib.user_add("g", "dave", img(1)),
                "existing user": lambda: lib.user_add("g", "bob", img(1)),
                "update": lambda: lib.user_update("g", "bob", img(1)),
                "copy": lambda: lib.user_copy("carol", "h", "g"),
            }
            for what, attempt in attempts.items():
                if variant == HARSH:
                    with pytest.raises(AlreadyExistsError, match="on user alice") as raised:
                        attempt()
                    assert raised.value.error_code == 223105, what
                else:
                    attempt()
            if variant == HARSH:  # nothing was changed by the refusals
                assert [f.face_token for f in lib.face_getlist("g", "bob").faces] == [local_face_token(png(2))]
                assert set(lib.group_getusers("g").ids) == {"alice", "bob"}


# ---- implicit group creation ----

@pytest.mark.parametrize("variant", [LENIENT, HARSH])
def test_add_into_a_missing_group(tmp_path, variant):
    with open_library(tmp_path, variant) as lib:
        if variant == LENIENT:
            assert code_of(lambda: lib.user_add("new", "u", img(1))) == 223100
            assert lib.group_getlist().ids == ()
        else:
            lib.user_add("new", "u", img(1))
            assert lib.group_getlist().ids == ("new",)
            assert lib.group_getusers("new").ids == ("u",)
        # update and copy never create a group
        assert code_of(lambda: lib.user_update("other", "u", img(2))) == 223100


# ---- long pages ----

def test_length_above_1000(tmp_path):
    for variant in (LENIENT, HARSH):
        with open_library(tmp_path, variant) as lib:
            for i in range(1001):
                lib.group_add(f"g{i:04d}")
            if variant == LENIENT:
                with pytest.raises(InvalidInputError) as raised:
                    lib.group_getlist(0, 1001)
                assert raised.value.error_code == 222003
            else:
                page = lib.group_getlist(0, 5000)
                assert len(page.ids) == 1000 and page.ids[0] == "g0000"
                assert lib.group_getlist(1000, 1001).ids == ("g1000",)
            assert code_of(lambda: lib.group_getlist(0, 0)) == 222003  # too small is refused in both


# ---- detect's token ----

@pytest.mark.parametrize("variant", [LENIENT, HARSH])
def test_detect_token_against_the_stored_token(tmp_path, variant):
    with open_library(tmp_path, variant) as lib:
        lib.group_add("g")
        detected = lib.detect(img(7)).faces[0].face_token
        assert detected == lib.detect(img(7)).faces[0].face_token  # stable per image in both
        stored = lib.user_add("g", "u", img(7)).face_token
        assert stored == local_face_token(png(7))
        assert [f.face_token for f in lib.face_getlist("g", "u").faces] == [stored]
        assert (detected == stored) is (variant == LENIENT)
        if variant == HARSH:  # no face holds the detected token
            assert code_of(lambda: lib.user_add("g", "v", Image.from_face_token(detected))) == 222209


# ---- re-creating a group that is being deleted in the background ----

@pytest.mark.parametrize("variant, code", [(LENIENT, GROUP_BEING_DELETED_RECREATE_CODE),
                                           (HARSH, GROUP_BEING_DELETED_RECREATE_HARSH_CODE)])
def test_recreate_while_deleting_in_the_background(tmp_path, variant, code):
    clock = [1000.0]
    with open_library(tmp_path, variant, background_group_delete=True, clock=lambda: clock[0]) as lib:
        lib.group_add("big")
        for i in range(501):
            lib.user_add("big", f"u{i}", img(i))
        lib.group_delete("big")
        assert "big" not in lib.group_getlist().ids
        assert code_of(lambda: lib.group_add("big")) == code
        with pytest.raises(NotFoundError, match="being deleted") as raised:
            lib.user_add("big", "new", img(9999))  # harsh does not create it either
        assert raised.value.error_code == 223100
        clock[0] += 501 / 20 + 1
        lib.group_add("big")
        assert lib.group_getusers("big").ids == ()


# ---- over HTTP ----

def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.both_unknowns
def test_serve_answers_in_the_chosen_variant(serve, unknowns):
    harsh = unknowns == HARSH
    api = ApiClient(serve())
    missing_group = api.call("faceset/user/add", group_id="g", user_id="alice", image=b64(png(1)),
                             image_type="BASE64", user_info="Alice")
    if harsh:
        assert missing_group["error_code"] == 0
    else:
        assert missing_group["error_code"] == 223100
        api.ok("faceset/group/add", group_id="g")
        api.ok("faceset/user/add", group_id="g", user_id="alice", image=b64(png(1)), image_type="BASE64",
               user_info="Alice")
    assert api.ok("faceset/group/getlist")["group_id_list"] == ["g"]

    added = api.ok("faceset/user/add", group_id="g", user_id="alice", image=b64(png(2)), image_type="BASE64")
    info = api.ok("faceset/user/get", group_id="g", user_id="alice")["user_list"][0]["user_info"]
    assert info == ("" if harsh else "Alice")

    second_user = api.call("faceset/user/add", group_id="g", user_id="bob", image=b64(png(1)), image_type="BASE64")
    assert second_user["error_code"] == (223105 if harsh else 0)

    detected = api.ok("detect", image=b64(png(2)), image_type="BASE64")["face_list"][0]["face_token"]
    assert (detected == added["face_token"]) is not harsh
    assert added["face_token"] == local_face_token(png(2))

    api.ok("faceset/face/delete", group_id="g", user_id="alice", face_token=added["face_token"])
    reuse = api.call("faceset/user/add", group_id="g", user_id="alice", image=added["face_token"],
                     image_type="FACE_TOKEN")
    assert reuse["error_code"] == (222209 if harsh else 0)

    long_page = api.call("faceset/group/getlist", length=1001)
    assert long_page["error_code"] == (0 if harsh else 222003)
