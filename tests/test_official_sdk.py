"""Baidu's own SDK (baidu-aip's AipFace) against ``facesync serve``: every faceset endpoint and detect."""

from __future__ import annotations

import base64

import aip
import pytest

from facesync.images import local_face_token
from tests.support.images import jpeg, png

_URLS = {  # AipFace's name-mangled URL attributes -> path under /rest/2.0/face/v3/
    "_AipFace__detectUrl": "detect",
    "_AipFace__userAddUrl": "faceset/user/add",
    "_AipFace__userUpdateUrl": "faceset/user/update",
    "_AipFace__faceDeleteUrl": "faceset/face/delete",
    "_AipFace__userGetUrl": "faceset/user/get",
    "_AipFace__faceGetlistUrl": "faceset/face/getlist",
    "_AipFace__groupGetusersUrl": "faceset/group/getusers",
    "_AipFace__userCopyUrl": "faceset/user/copy",
    "_AipFace__userDeleteUrl": "faceset/user/delete",
    "_AipFace__groupAddUrl": "faceset/group/add",
    "_AipFace__groupDeleteUrl": "faceset/group/delete",
    "_AipFace__groupGetlistUrl": "faceset/group/getlist",
}


def sdk_client(server) -> aip.AipFace:
    client = aip.AipFace(server.app_id, server.api_key, server.secret_key)
    client._AipBase__accessTokenUrl = f"{server.base_url}/oauth/2.0/token"
    for attribute, path in _URLS.items():
        assert hasattr(client, attribute), f"AipFace no longer has {attribute}"
        setattr(client, attribute, f"{server.base_url}/rest/2.0/face/v3/{path}")
    return client


def ok(answer: dict):
    assert answer["error_code"] == 0, answer
    assert answer["error_msg"] == "SUCCESS" and isinstance(answer["log_id"], int)
    return answer["result"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.lenient_unknowns  # the lenient answers, field by field (test_unknowns has both)
def test_the_official_sdk_drives_every_endpoint(serve):
    server = serve()
    client = sdk_client(server)
    first, second = png(21), jpeg(22)
    first_token, second_token = local_face_token(first), local_face_token(second)

    assert ok(client.groupAdd("staff")) is None
    assert ok(client.groupAdd("guests")) is None
    assert ok(client.getGroupList({"start": 0, "length": 10})) == {"group_id_list": ["staff", "guests"]}

    added = ok(client.addUser(b64(first), "BASE64", "staff", "alice", {"user_info": "Alice"}))
    assert added["face_token"] == first_token and set(added["location"]) >= {"left", "top", "width", "height"}
    assert ok(client.addUser(b64(second), "BASE64", "staff", "alice"))["face_token"] == second_token
    faces = ok(client.faceGetlist("alice", "staff"))["face_list"]
    assert [face["face_token"] for face in faces] == [first_token, second_token]

    assert ok(client.getUser("alice", "staff")) == {"user_list": [{"user_info": "Alice", "group_id": "staff"}]}
    assert ok(client.getGroupUsers("staff")) == {"user_id_list": ["alice"]}

    assert ok(client.userCopy("alice", {"src_group_id": "staff", "dst_group_id": "guests"})) is None
    assert ok(client.getUser("alice", "@ALL"))["user_list"] == [
        {"user_info": "Alice", "group_id": "staff"}, {"user_info": "Alice", "group_id": "guests"}]

    updated = ok(client.updateUser(first_token, "FACE_TOKEN", "guests", "alice", {"user_info": "Guest Alice"}))
    assert updated["face_token"] == first_token
    assert ok(client.getUser("alice", "guests"))["user_list"] == [{"user_info": "Guest Alice", "group_id": "guests"}]

    assert ok(client.faceDelete("alice", "staff", second_token)) is None
    assert [f["face_token"] for f in ok(client.faceGetlist("alice", "staff"))["face_list"]] == [first_token]
    assert ok(client.deleteUser("guests", "alice")) is None
    assert ok(client.getGroupUsers("guests")) == {"user_id_list": []}
    assert ok(client.groupDelete("guests")) is None
    assert ok(client.getGroupList()) == {"group_id_list": ["staff"]}

    detected = ok(client.detect(b64(png(23)), "BASE64", {"face_field": "age", "max_face_num": 1}))
    assert detected["face_num"] == 1 and detected["face_list"][0]["face_token"] == local_face_token(png(23))

    stats = server.stats()
    assert stats["token_requests"] == 1  # brain_all_scope in the scope: the SDK kept its token, no signing
    assert stats["errors"] == {}


def test_the_official_sdk_sees_the_contracts_errors(serve):
    client = sdk_client(serve())
    assert client.groupDelete("missing")["error_code"] == 223100
    ok(client.groupAdd("g"))
    assert client.groupAdd("g")["error_code"] == 223101
    assert client.getUser("nobody", "g")["error_code"] == 223103
