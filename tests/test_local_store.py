"""LocalLibrary against the contract: every endpoint's answers and error codes, images, pagination."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import re
import sqlite3
import threading
import time

import pytest

from facesync.api.errors import (
    AlreadyExistsError,
    FaceApiError,
    ImageRejectedError,
    InvalidInputError,
    NotFoundError,
    RetryableError,
)
from facesync.api.protocol import FaceLibrary, Image, ImageType, iter_group_ids, iter_user_ids
from facesync.images import MAX_BASE64_CHARS
from facesync.local.store import LocalLibrary, LocalStoreError, location_for
from tests.support.images import GIF, bmp, jpeg, png

CTIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\Z")


def code_of(call, *args, **kwargs) -> int:
    with pytest.raises(FaceApiError) as caught:
        call(*args, **kwargs)
    assert caught.value.log_id is not None and caught.value.log_id > 0
    return caught.value.error_code


def img(seed: int) -> Image:
    return Image.from_bytes(png(seed))


def token(seed: int) -> str:
    return hashlib.md5(png(seed)).hexdigest()


@pytest.fixture
def grouped(library):
    library.group_add("g1")
    return library


# ---- construction ----

def test_implements_the_protocol_and_names_its_file(tmp_path):
    path = tmp_path / "deep" / "er" / "lib.db"
    with LocalLibrary(str(path)) as lib:
        assert isinstance(lib, FaceLibrary)
        assert lib.identity == f"local:{path.resolve()}"
        assert path.exists()


def test_refuses_a_file_that_is_not_a_library(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("this is not sqlite at all, just some text " * 20)
    with pytest.raises(LocalStoreError, match="cannot open local library"):
        LocalLibrary(str(bad))


def test_closed_library_refuses_calls(tmp_path):
    lib = LocalLibrary(str(tmp_path / "lib.db"))
    lib.close()
    with pytest.raises(LocalStoreError, match="closed"):
        lib.group_getlist()


# ---- groups ----

def test_group_add_list_delete(library):
    first = library.group_add("a")
    assert first.log_id > 0
    library.group_add("b_2")
    assert library.group_getlist().ids == ("a", "b_2")
    assert code_of(library.group_add, "a") == 223101
    library.group_delete("a")
    assert library.group_getlist().ids == ("b_2",)
    assert code_of(library.group_delete, "a") == 223100


@pytest.mark.parametrize("bad", ["has-dash", "sp ace", "x" * 49, "中文", "@ALL"])
def test_group_id_format(library, bad):
    assert code_of(library.group_add, bad) == 222006


def test_group_id_of_48_bytes_is_fine(library):
    library.group_add("g" * 48)
    assert library.group_getlist().ids == ("g" * 48,)


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_group_id(library, missing):
    with pytest.raises(InvalidInputError, match=r"param\[group_id\] is null"):
        library.group_add(missing)


def test_group_delete_removes_users_and_faces(grouped):
    grouped.user_add("g1", "u1", img(1))
    grouped.group_delete("g1")
    grouped.group_add("g1")
    assert grouped.group_getusers("g1").ids == ()
    assert code_of(grouped.user_get, "@ALL", "u1") == 223103


# ---- pagination ----

def test_group_getlist_pagination(library):
    for n in range(1005):
        library.group_add(f"g{n:04d}")
    assert library.group_getlist().ids == tuple(f"g{n:04d}" for n in range(100))
    assert library.group_getlist(1000, 1000).ids == tuple(f"g{n:04d}" for n in range(1000, 1005))
    assert len(library.group_getlist(0, 1000).ids) == 1000
    assert library.group_getlist(3, 2).ids == ("g0003", "g0004")
    assert library.group_getlist(2000, 10).ids == ()
    assert list(iter_group_ids(library)) == [f"g{n:04d}" for n in range(1005)]


@pytest.mark.lenient_unknowns  # the lenient variant's own answers (test_unknowns has both)
@pytest.mark.parametrize("start, length, code", [(-1, 10, 222002), ("x", 10, 222002), (True, 10, 222002),
                                                 (0, 1001, 222003), (0, 0, 222003), (0, -5, 222003),
                                                 (0, "ten", 222003)])
def test_bad_page_bounds(grouped, start, length, code):
    assert code_of(grouped.group_getlist, start, length) == code
    assert code_of(grouped.group_getusers, "g1", start, length) == code


def test_page_bounds_as_digit_strings_and_defaults(grouped):
    assert grouped.group_getlist("0", "1").ids == ("g1",)
    assert grouped.group_getlist(None, "").ids == ("g1",)


def test_group_getusers_insertion_order_and_pages(grouped):
    names = [f"user{n}" for n in range(250)][::-1]  # insertion order, not alphabetical
    for n, name in enumerate(names):
        grouped.user_add("g1", name, img(n))
    assert grouped.group_getusers("g1").ids == tuple(names[:100])
    assert grouped.group_getusers("g1", 200, 1000).ids == tuple(names[200:])
    assert list(iter_user_ids(grouped, "g1")) == names
    assert code_of(grouped.group_getusers, "nope") == 223100


# ---- user/add ----

def test_user_add_creates_user_with_token_location_ctime(grouped):
    added = grouped.user_add("g1", "u1", img(1), user_info="Ann")
    assert added.face_token == token(1)
    assert added.location == location_for(token(1))
    assert added.location.width > 0
    faces = grouped.face_getlist("g1", "u1").faces
    assert [f.face_token for f in faces] == [token(1)]
    assert CTIME.match(faces[0].ctime)
    assert grouped.user_get("g1", "u1").memberships[0].user_info == "Ann"


@pytest.mark.parametrize("make", [png, jpeg, bmp])
def test_accepted_formats(grouped, make):
    data = make(7)
    assert grouped.user_add("g1", "u1", Image.from_bytes(data)).face_token == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("data", [GIF, os.urandom(300), b"BM", b"\x89PNG"])
def test_refused_content(grouped, data):
    with pytest.raises(ImageRejectedError) as caught:
        grouped.user_add("g1", "u1", Image.from_bytes(data))
    assert caught.value.error_code == 222203
    assert caught.value.error_msg == "image check fail"
    assert grouped.group_getusers("g1").ids == ()


def test_not_base64_is_refused(grouped):
    assert code_of(grouped.user_add, "g1", "u1", Image("not*base64!", ImageType.BASE64)) == 222203
    assert code_of(grouped.user_add, "g1", "u1", Image("data:image/png;base64,AAAA", ImageType.BASE64)) == 222203


def test_base64_over_two_megabytes_is_refused(grouped):
    data = png(1) + b"\x00" * (MAX_BASE64_CHARS * 3 // 4 + 10)
    image = Image.from_bytes(data)
    assert len(image.value) > MAX_BASE64_CHARS
    assert code_of(grouped.user_add, "g1", "u1", image) == 222013
    assert grouped.group_getusers("g1").ids == ()


def test_base64_with_line_breaks_is_accepted(grouped):
    text = base64.encodebytes(png(3)).decode()
    assert "\n" in text
    assert grouped.user_add("g1", "u1", Image(text, ImageType.BASE64)).face_token == token(3)


@pytest.mark.lenient_unknowns  # the lenient variant's own answers (test_unknowns has both)
def test_user_add_appends_and_overwrites_user_info_only_when_given(grouped):
    grouped.user_add("g1", "u1", img(1), user_info="first")
    grouped.user_add("g1", "u1", img(2))
    assert grouped.user_get("g1", "u1").memberships[0].user_info == "first"
    grouped.user_add("g1", "u1", img(3), user_info="second")
    assert grouped.user_get("g1", "u1").memberships[0].user_info == "second"
    grouped.user_add("g1", "u1", img(4), user_info="")
    assert grouped.user_get("g1", "u1").memberships[0].user_info == ""
    assert [f.face_token for f in grouped.face_getlist("g1", "u1").faces] == [token(n) for n in (1, 2, 3, 4)]


def test_new_user_without_user_info_has_empty_info(grouped):
    grouped.user_add("g1", "u1", img(1))
    assert grouped.user_get("g1", "u1").memberships[0].user_info == ""


@pytest.mark.lenient_unknowns  # the lenient variant's own answers (test_unknowns has both)
def test_user_add_errors(grouped):
    grouped.user_add("g1", "u1", img(1))
    with pytest.raises(AlreadyExistsError) as caught:
        grouped.user_add("g1", "u1", img(1), user_info="changed")
    assert caught.value.error_code == 223105
    assert caught.value.error_msg == "face is already exist"
    assert grouped.user_get("g1", "u1").memberships[0].user_info == ""
    assert code_of(grouped.user_add, "nogroup", "u1", img(2)) == 223100
    assert grouped.group_getlist().ids == ("g1",)  # no implicit group creation


@pytest.mark.lenient_unknowns  # the lenient variant's own answers (test_unknowns has both)
def test_same_face_on_two_users_is_fine(grouped):
    grouped.user_add("g1", "u1", img(1))
    assert grouped.user_add("g1", "u2", img(1)).face_token == token(1)


@pytest.mark.parametrize("args, param", [
    (("g1", "u1", None), "image"),
    (("g1", "u1", Image("", ImageType.BASE64)), "image"),
    (("g1", "u1", Image("abcd", "")), "image_type"),
    ((None, "u1", Image("abcd", ImageType.BASE64)), "group_id"),
    (("g1", "", Image("abcd", ImageType.BASE64)), "user_id"),
])
def test_user_add_missing_params(grouped, args, param):
    with pytest.raises(InvalidInputError) as caught:
        grouped.user_add(*args)
    assert caught.value.error_code == 222001
    assert caught.value.error_msg == f"param[{param}] is null"


@pytest.mark.parametrize("kwargs, code", [
    ({"user_id": "bad-id"}, 222018),
    ({"user_id": "u" * 129}, 222018),
    ({"group_id": "bad group"}, 222006),
    ({"user_info": "x" * 257}, 222010),
    ({"user_info": "é" * 129}, 222010),  # 258 bytes in UTF-8
    ({"quality_control": "MEDIUM"}, 222019),
    ({"liveness_control": "low"}, 222020),
    ({"image": Image("abcd", "PNG")}, 222015),
])
def test_user_add_format_errors(grouped, kwargs, code):
    call = {"group_id": "g1", "user_id": "u1", "image": img(1), **kwargs}
    assert code_of(grouped.user_add, **call) == code
    assert grouped.group_getusers("g1").ids == ()


def test_limits_at_the_edge_are_accepted(tmp_path):
    with LocalLibrary(str(tmp_path / "lib.db"), user_id_limits_per_endpoint=False) as grouped:
        grouped.group_add("g1")
        grouped.user_add("g1", "u" * 128, img(1), user_info="é" * 128, quality_control="HIGH",
                         liveness_control="LOW")
        assert grouped.user_get("@ALL", "u" * 128).memberships[0].user_info == "é" * 128


def test_face_cap(tmp_path):
    with LocalLibrary(str(tmp_path / "lib.db"), max_faces_per_user=2) as lib:
        lib.group_add("g")
        lib.user_add("g", "u", img(1))
        lib.user_add("g", "u", img(2))
        with pytest.raises(InvalidInputError) as caught:
            lib.user_add("g", "u", img(3))
        assert caught.value.error_code == 222208
        assert len(lib.face_getlist("g", "u").faces) == 2
        lib.user_update("g", "u", img(3))  # update leaves one face: always within the cap
        lib.user_add("g", "u", img(4))
        assert [f.face_token for f in lib.face_getlist("g", "u").faces] == [token(3), token(4)]


def test_image_check_hook_refuses_as_baidu_would(tmp_path):
    seen = []

    def check(face_token, quality, liveness):
        seen.append((face_token, quality, liveness))
        return 223120 if liveness == "HIGH" else None

    with LocalLibrary(str(tmp_path / "lib.db"), image_check=check) as lib:
        lib.group_add("g")
        with pytest.raises(ImageRejectedError) as caught:
            lib.user_add("g", "u", img(1), liveness_control="HIGH")
        assert caught.value.error_code == 223120
        assert code_of(lib.user_get, "g", "u") == 223103
        lib.user_add("g", "u", img(1), quality_control="LOW")
        lib.user_update("g", "u", Image.from_face_token(token(1)), quality_control=None)
        assert seen == [(token(1), "NONE", "HIGH"), (token(1), "LOW", "NONE"), (token(1), "NONE", "NONE")]


# ---- FACE_TOKEN images and detect ----

@pytest.mark.lenient_unknowns  # the lenient variant's own answers (test_unknowns has both)
def test_face_token_images(grouped):
    grouped.user_add("g1", "u1", img(1))
    assert grouped.user_add("g1", "u2", Image.from_face_token(token(1))).face_token == token(1)
    assert code_of(grouped.user_add, "g1", "u3", Image.from_face_token(token(99))) == 222209
    assert code_of(grouped.user_add, "g1", "u3", Image.from_face_token("ABC")) == 222025
    assert code_of(grouped.user_add, "g1", "u3", Image.from_face_token(token(1).upper())) == 222025


@pytest.mark.lenient_unknowns  # the lenient variant's own answers (test_unknowns has both)
def test_token_stays_known_after_its_face_is_deleted(grouped):
    grouped.user_add("g1", "u1", img(1))
    grouped.user_delete("g1", "u1")
    assert grouped.user_add("g1", "u2", Image.from_face_token(token(1))).face_token == token(1)


@pytest.mark.lenient_unknowns  # the lenient variant's own answers (test_unknowns has both)
def test_detect_makes_the_token_known(library):
    found = library.detect(img(5))
    assert found.face_num == 1
    face = found.faces[0]
    assert face.face_token == token(5)
    assert face.face_probability == 1.0
    assert face.location == location_for(token(5))
    assert library.detect(img(5)).faces[0].face_token == token(5)  # same image, same token
    library.group_add("g")
    assert library.user_add("g", "u", Image.from_face_token(token(5))).face_token == token(5)
    assert library.counts().faces == 1


def test_detect_errors(library):
    assert code_of(library.detect, Image.from_bytes(GIF)) == 222203
    assert code_of(library.detect, Image("", ImageType.BASE64)) == 222001
    assert code_of(library.detect, Image("x", "RAW")) == 222015
    assert code_of(library.detect, Image.from_face_token(token(1))) == 222209
    assert library.counts().known_tokens == 0


# ---- URL images ----

class _ImageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/face.png":
            self._send(png(42))
        elif self.path == "/face.gif":
            self._send(GIF)
        elif self.path == "/big-declared":
            self._send(png(1) + b"\x00" * 5000)
        elif self.path == "/big-streamed":
            self.send_response(200)
            self.end_headers()  # no Content-Length: only the streamed count can stop it
            self.wfile.write(png(1) + b"\x00" * 5000)
        elif self.path == "/slow":
            time.sleep(1.5)
            self._send(png(43))
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def url_library(tmp_path):
    with LocalLibrary(str(tmp_path / "lib.db"), url_timeout=0.5, url_max_bytes=2000) as lib:
        lib.group_add("g")
        yield lib


def test_url_image(url_library, image_server):
    added = url_library.user_add("g", "u", Image.from_url(f"{image_server}/face.png"))
    assert added.face_token == hashlib.md5(png(42)).hexdigest()
    assert url_library.detect(Image.from_url(f"{image_server}/face.png")).faces[0].face_token == added.face_token


@pytest.mark.parametrize("path, code", [("/missing", 222204), ("/big-declared", 222204), ("/big-streamed", 222204),
                                        ("/slow", 222204), ("/face.gif", 222203)])
def test_url_image_failures(url_library, image_server, path, code):
    assert code_of(url_library.user_add, "g", "u", Image.from_url(image_server + path)) == code
    assert url_library.group_getusers("g").ids == ()


def test_url_that_cannot_connect(url_library):
    assert code_of(url_library.user_add, "g", "u", Image.from_url("http://127.0.0.1:9/x.png")) == 222204
    assert code_of(url_library.user_add, "g", "u", Image.from_url("ftp://example.invalid/x.png")) == 222204


# ---- user/update ----

@pytest.mark.lenient_unknowns  # the lenient variant's own answers (test_unknowns has both)
def test_user_update_replaces_every_face(grouped):
    for n in (1, 2, 3):
        grouped.user_add("g1", "u1", img(n), user_info="old")
    answer = grouped.user_update("g1", "u1", img(9))
    assert answer.face_token == token(9)
    assert [f.face_token for f in grouped.face_getlist("g1", "u1").faces] == [token(9)]
    assert grouped.user_get("g1", "u1").memberships[0].user_info == "old"
    grouped.user_update("g1", "u1", Image.from_face_token(token(2)), user_info="new")
    assert [f.face_token for f in grouped.face_getlist("g1", "u1").faces] == [token(2)]
    assert grouped.user_get("g1", "u1").memberships[0].user_info == "new"


def test_user_update_errors(grouped):
    assert code_of(grouped.user_update, "g1", "ghost", img(1)) == 223103
    assert code_of(grouped.user_update, "nogroup", "ghost", img(1)) == 223100
    assert code_of(grouped.user_update, "g1", "bad-id", img(1)) == 222018
    assert grouped.group_getusers("g1").ids == ()


# ---- face/delete ----

def test_face_delete(grouped):
    grouped.user_add("g1", "u1", img(1))
    grouped.user_add("g1", "u1", img(2))
    grouped.face_delete("g1", "u1", token(1))
    assert [f.face_token for f in grouped.face_getlist("g1", "u1").faces] == [token(2)]
    assert code_of(grouped.face_delete, "g1", "u1", token(1)) == 223106
    grouped.face_delete("g1", "u1", token(2))  # the last face: the user goes with it
    assert code_of(grouped.face_getlist, "g1", "u1") == 223103
    assert grouped.group_getusers("g1").ids == ()


def test_face_delete_errors(grouped):
    grouped.user_add("g1", "u1", img(1))
    assert code_of(grouped.face_delete, "nogroup", "u1", token(1)) == 223100
    assert code_of(grouped.face_delete, "g1", "u2", token(1)) == 223103
    assert code_of(grouped.face_delete, "g1", "u1", "not-a-token") == 222025
    with pytest.raises(InvalidInputError, match=r"param\[face_token\] is null"):
        grouped.face_delete("g1", "u1", None)


# ---- user/get, face/getlist ----

def test_user_get_named_group_and_all(library):
    for group in ("b", "a", "c"):
        library.group_add(group)
    library.user_add("b", "u", img(1), user_info="in b")
    library.user_add("c", "u", img(2), user_info="in c")
    assert [(m.group_id, m.user_info) for m in library.user_get("@ALL", "u").memberships] == [
        ("b", "in b"), ("c", "in c")]
    assert [m.group_id for m in library.user_get("c", "u").memberships] == ["c"]
    assert code_of(library.user_get, "a", "u") == 223103
    assert code_of(library.user_get, "nogroup", "u") == 223103
    assert code_of(library.user_get, "@ALL", "ghost") == 223103
    assert code_of(library.user_get, "@all", "u") == 222006


def test_face_getlist_errors(grouped):
    assert code_of(grouped.face_getlist, "nogroup", "u") == 223100
    assert code_of(grouped.face_getlist, "g1", "u") == 223103
    assert code_of(grouped.face_getlist, "@ALL", "u") == 222006


# ---- user/copy ----

@pytest.mark.lenient_unknowns  # the lenient variant's own answers (test_unknowns has both)
def test_user_copy_is_independent_afterwards(library):
    library.group_add("src")
    library.group_add("dst")
    library.user_add("src", "u", img(1), user_info="info")
    library.user_add("src", "u", img(2))
    library.user_copy("u", "src", "dst")
    copied = library.face_getlist("dst", "u").faces
    assert copied == library.face_getlist("src", "u").faces
    assert library.user_get("dst", "u").memberships[0].user_info == "info"
    library.face_delete("dst", "u", token(1))
    library.user_update("src", "u", img(3), user_info="changed")
    assert [f.face_token for f in library.face_getlist("dst", "u").faces] == [token(2)]
    assert [f.face_token for f in library.face_getlist("src", "u").faces] == [token(3)]
    assert library.user_get("dst", "u").memberships[0].user_info == "info"


def test_user_copy_errors(library):
    library.group_add("src")
    library.group_add("dst")
    library.user_add("src", "u", img(1))
    assert code_of(library.user_copy, "u", "nosrc", "dst") == 223100
    assert code_of(library.user_copy, "u", "src", "nodst") == 223111
    assert code_of(library.user_copy, "ghost", "src", "dst") == 223103
    library.user_copy("u", "src", "dst")
    with pytest.raises(AlreadyExistsError) as caught:
        library.user_copy("u", "src", "dst")
    assert caught.value.error_code == 223102
    assert code_of(library.user_copy, "u", "src", "src") == 223102
    with pytest.raises(InvalidInputError, match=r"param\[dst_group_id\] is null"):
        library.user_copy("u", "src", "")


# ---- user/delete ----

def test_user_delete_named_and_all(library):
    for group in ("a", "b", "c"):
        library.group_add(group)
        library.user_add(group, "u", img(1))
        library.user_add(group, "keep", img(2))
    library.user_delete("a", "u")
    assert [m.group_id for m in library.user_get("@ALL", "u").memberships] == ["b", "c"]
    library.user_delete("@ALL", "u")
    assert code_of(library.user_get, "@ALL", "u") == 223103
    assert code_of(library.user_delete, "@ALL", "u") == 223103
    assert code_of(library.user_delete, "a", "u") == 223103
    assert code_of(library.user_delete, "nogroup", "u") == 223100
    assert [m.group_id for m in library.user_get("@ALL", "keep").memberships] == ["a", "b", "c"]
    assert library.consistency_problems() == []


# ---- error objects ----

def test_errors_carry_kind_message_and_a_fresh_log_id(grouped):
    with pytest.raises(NotFoundError) as first:
        grouped.face_getlist("g1", "nobody")
    with pytest.raises(NotFoundError) as second:
        grouped.face_getlist("g1", "nobody")
    assert first.value.error_msg == "user is not exist"
    assert first.value.log_id != second.value.log_id
    assert "log_id" in str(first.value)


def test_every_answer_has_its_own_log_id(grouped):
    ids = {grouped.group_getlist().log_id, grouped.group_getusers("g1").log_id,
           grouped.user_add("g1", "u", img(1)).log_id, grouped.face_getlist("g1", "u").log_id}
    assert len(ids) == 4 and all(0 < i < 2**64 for i in ids)


# ---- background group deletion ----

class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_large_group_is_deleted_in_the_background(tmp_path):
    clock = FakeClock()
    path = str(tmp_path / "lib.db")
    with LocalLibrary(path, background_group_delete=True, clock=clock) as lib:
        lib.group_add("big")
        lib.group_add("small")
        lib.user_add("big", "first", img(0))
        for n in range(1, 501):
            lib.user_add("big", f"u{n % 30}", img(n))
        lib.user_add("small", "u", img(1))
        assert lib.counts().faces == 502
        lib.group_delete("small")  # one face: deleted at once
        lib.group_delete("big")  # 501 faces: about 25 s in the background
        assert lib.group_getlist().ids == ()
        assert code_of(lib.group_getusers, "big") == 223100
        assert code_of(lib.user_add, "big", "u1", img(999)) == 223100
        assert code_of(lib.user_get, "@ALL", "u1") == 223103
        assert code_of(lib.group_delete, "big") == 223100
        with pytest.raises(RetryableError) as caught:
            lib.group_add("big")
        assert caught.value.error_code == 222901
        assert "being deleted" in caught.value.error_msg
        lib.group_add("small")  # a small group's id is free at once
        clock.now += 26
    with LocalLibrary(path, background_group_delete=True, clock=clock) as reopened:
        reopened.group_add("big")
        assert reopened.group_getusers("big").ids == ()
        assert reopened.group_getlist().ids == ("small", "big")
        assert reopened.counts().faces == 0
        assert reopened.consistency_problems() == []


def test_without_background_deletion_large_groups_go_at_once(tmp_path):
    with LocalLibrary(str(tmp_path / "lib.db"), background_group_delete=False) as lib:
        lib.group_add("g")
        for n in range(501):
            lib.user_add("g", f"u{n % 30}", img(n))
        lib.group_delete("g")
        lib.group_add("g")
        assert lib.group_getusers("g").ids == ()


# ---- durability and performance shape ----

def test_a_second_library_on_the_same_file_sees_committed_writes(tmp_path):
    path = str(tmp_path / "lib.db")
    writer = LocalLibrary(path)
    reader = LocalLibrary(path)
    writer.group_add("g")
    writer.user_add("g", "u", img(1), user_info="seen")
    assert reader.user_get("g", "u").memberships[0].user_info == "seen"
    writer.close()
    reader.close()
    with LocalLibrary(path) as reopened:
        assert [f.face_token for f in reopened.face_getlist("g", "u").faces] == [token(1)]


def test_listings_are_index_reads(tmp_path):
    conn = sqlite3.connect(str(tmp_path / "lib.db"))
    LocalLibrary(str(tmp_path / "lib.db")).close()
    queries = [
        "SELECT user_id FROM users WHERE group_seq = 1 ORDER BY seq LIMIT 1000 OFFSET 0",
        "SELECT face_token, ctime FROM faces WHERE user_seq = 1 ORDER BY seq",
        "SELECT group_id FROM groups WHERE deleting_until IS NULL ORDER BY seq LIMIT 1000 OFFSET 0",
        ("SELECT g.group_id, u.user_info FROM users u JOIN groups g ON g.seq = u.group_seq "
         "WHERE u.user_id = 'u' AND g.deleting_until IS NULL ORDER BY g.seq"),
    ]
    for query in queries[:3]:
        plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + query))
        assert "TEMP B-TREE" not in plan, plan
        assert "SCAN users" not in plan and "SCAN faces" not in plan, plan
    plan = " ".join(row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + queries[3]))
    assert "users_by_id" in plan, plan
