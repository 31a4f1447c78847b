"""Errors say what was missing or already there (group, user, face), the same kind from every target:
the local library in process and the HTTP client talking to ``facesync serve``."""

from __future__ import annotations

import pytest

from facesync.api.baidu import BaiduClient
from facesync.api.errors import (
    AlreadyExistsError,
    AuthError,
    FaceApiError,
    FaceExistsError,
    FaceNotFoundError,
    FaceTokenNotFoundError,
    GroupExistsError,
    GroupNotFoundError,
    NotFoundError,
    QuotaExhaustedError,
    UserExistsError,
    UserNotFoundError,
    error_for,
    kind_of,
)
from facesync.api.protocol import Image
from tests.support.images import png

KINDS = (GroupNotFoundError, UserNotFoundError, FaceNotFoundError, FaceTokenNotFoundError,
         GroupExistsError, UserExistsError, FaceExistsError)


@pytest.fixture(params=["local", "http"])
def target(request, library, serve):
    if request.param == "local":
        return library
    server = serve()
    return BaiduClient(server.base_url, server.api_key, server.secret_key, qps=None)


def _raised(call) -> FaceApiError:
    with pytest.raises(FaceApiError) as caught:
        call()
    error = caught.value
    assert [kind for kind in KINDS if isinstance(error, kind)] == [type(error)]  # exactly one of the kinds
    return error


def test_each_missing_or_existing_thing_has_its_kind_on_every_target(target):
    target.group_add("staff")
    target.group_add("guests")
    added = target.user_add("staff", "alice", Image.from_bytes(png(1)))

    cases = {
        GroupExistsError: lambda: target.group_add("staff"),
        GroupNotFoundError: lambda: target.face_getlist("nowhere", "alice"),
        UserNotFoundError: lambda: target.user_get("staff", "bob"),
        FaceNotFoundError: lambda: target.face_delete("staff", "alice", "0" * 32),
        FaceExistsError: lambda: target.user_add("staff", "alice", Image.from_bytes(png(1))),
        FaceTokenNotFoundError: lambda: target.user_add("staff", "bob", Image.from_face_token("f" * 32)),
    }
    for kind, call in cases.items():
        error = _raised(call)
        assert type(error) is kind, (kind, error)
        assert error.log_id

    target.user_copy("alice", "staff", "guests")
    assert type(_raised(lambda: target.user_copy("alice", "staff", "guests"))) is UserExistsError
    missing_destination = _raised(lambda: target.user_copy("alice", "staff", "elsewhere"))
    assert type(missing_destination) is GroupNotFoundError and missing_destination.error_code == 223111
    assert [f.face_token for f in target.face_getlist("guests", "alice").faces] == [added.face_token]


def test_the_kinds_keep_the_broad_ones_callers_already_catch():
    assert issubclass(GroupNotFoundError, NotFoundError) and issubclass(FaceTokenNotFoundError, NotFoundError)
    assert issubclass(FaceExistsError, AlreadyExistsError) and issubclass(UserExistsError, AlreadyExistsError)
    assert isinstance(error_for(223100), GroupNotFoundError) and not isinstance(error_for(223100), UserNotFoundError)
    assert isinstance(error_for(222207), NotFoundError) and not isinstance(error_for(222207), KINDS)


def test_a_code_kept_in_a_record_has_the_kind_it_would_be_raised_as():
    assert kind_of(223103) is UserNotFoundError and kind_of(17) is QuotaExhaustedError
    assert issubclass(kind_of(110), AuthError) and issubclass(kind_of(6), AuthError)
    assert kind_of(999999) is FaceApiError and kind_of(0) is FaceApiError
