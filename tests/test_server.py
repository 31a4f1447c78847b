"""``facesync serve`` over real HTTP: Baidu's token flow, envelope, bodies, endpoints, QPS, latency, admin API."""

from __future__ import annotations

import base64
import json
import re
import threading
import time

import pytest
import requests

from facesync.images import local_face_token
from tests.support.images import png
from tests.support.server import ApiClient, fetch_token

TOKEN_FORMAT = re.compile(r"^24\.[0-9a-f]{32}\.(\d+)\.(\d+)\.\d+-(\d+)$")
ENVELOPE_KEYS = {"error_code", "error_msg", "log_id", "timestamp", "cached", "result"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def server(serve):
    return serve()


@pytest.fixture
def api(server):
    return ApiClient(server)


# ---- token ----

def test_token_has_baidus_shape(server):
    token = fetch_token(server)
    found = TOKEN_FORMAT.match(token["access_token"])
    assert found, token["access_token"]
    ttl, issued, app_id = found.groups()
    assert int(ttl) == token["expires_in"] == 2592000
    assert abs(int(issued) - time.time()) < 60
    assert app_id == server.app_id
    assert "brain_all_scope" in token["scope"].split() and "public" in token["scope"].split()
    assert {"refresh_token", "session_key", "session_secret"} <= set(token)


def test_token_by_post_form(server):
    answer = requests.post(f"{server.base_url}/oauth/2.0/token", timeout=10, data={
        "grant_type": "client_credentials", "client_id": server.api_key, "client_secret": server.secret_key})
    assert answer.status_code == 200
    assert ApiClient(server, answer.json()["access_token"]).ok("faceset/group/getlist") == {"group_id_list": []}


@pytest.mark.parametrize("field, value, description", [
    ("client_id", "someone-else", "unknown client id"),
    ("client_secret", "not-the-secret", "Client authentication failed"),
])
def test_wrong_credentials_are_401_invalid_client(server, field, value, description):
    params = {"grant_type": "client_credentials", "client_id": server.api_key, "client_secret": server.secret_key,
              field: value}
    answer = requests.get(f"{server.base_url}/oauth/2.0/token", params=params, timeout=10)
    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_client", "error_description": description}


def test_unknown_grant_type_is_refused(server):
    answer = requests.get(f"{server.base_url}/oauth/2.0/token", timeout=10, params={
        "grant_type": "password", "client_id": server.api_key, "client_secret": server.secret_key})
    assert answer.status_code == 400 and answer.json()["error"] == "unsupported_grant_type"


def test_missing_and_unknown_tokens(server):
    url = f"{server.base_url}/rest/2.0/face/v3/faceset/group/getlist"
    missing = requests.post(url, json={}, timeout=10)
    assert missing.status_code == 200 and missing.json()["error_code"] == 100
    real = fetch_token(server)["access_token"]
    forged = real[:3] + ("0" if real[3] != "0" else "1") + real[4:]
    for token in (forged, "24.nonsense", real.replace(f"-{server.app_id}", "-999")):
        body = requests.post(url, params={"access_token": token}, json={}, timeout=10).json()
        assert body["error_code"] == 110 and body["result"] is None
    assert requests.post(url, params={"access_token": real}, json={}, timeout=10).json()["error_code"] == 0


def test_expired_token_is_111(serve):
    server = serve("--token-ttl", "1")
    token = fetch_token(server)
    assert token["expires_in"] == 1
    client = ApiClient(server, token["access_token"])
    client.ok("faceset/group/add", group_id="g1")
    time.sleep(2.1)
    expired = client.call("faceset/group/getlist")
    assert expired["error_code"] == 111 and expired["result"] is None
    assert ApiClient(server).ok("faceset/group/getlist") == {"group_id_list": ["g1"]}


def test_token_in_form_body(server):
    token = fetch_token(server)["access_token"]
    answer = requests.post(f"{server.base_url}/rest/2.0/face/v3/faceset/group/add", timeout=10,
                           data={"access_token": token, "group_id": "in_form"})
    assert answer.json()["error_code"] == 0


# ---- envelope and bodies ----

def test_envelope_on_success_and_on_error(api):
    before = int(time.time())
    good = api.call("faceset/group/add", group_id="g1")
    bad = api.call("faceset/group/add", group_id="g1")
    for body in (good, bad):
        assert set(body) == ENVELOPE_KEYS
        assert isinstance(body["log_id"], int) and 0 < body["log_id"] < 2**64
        assert before - 1 <= body["timestamp"] <= time.time() + 1
        assert body["cached"] == 0
    assert (good["error_code"], good["error_msg"], good["result"]) == (0, "SUCCESS", None)
    assert (bad["error_code"], bad["error_msg"], bad["result"]) == (223101, "group is already exist", None)
    assert good["log_id"] != bad["log_id"]


def test_json_form_and_get_bodies_are_all_understood(server, api):
    url = api.url("faceset/group/add")
    token = {"access_token": api.token}
    as_json = requests.post(url, params=token, timeout=10, data=json.dumps({"group_id": "by_json"}),
                            headers={"Content-Type": "application/json; charset=UTF-8"})
    as_form = requests.post(url, params=token, data={"group_id": "by_form"}, timeout=10)
    as_get = requests.get(url, params={**token, "group_id": "by_get"}, timeout=10)
    assert [r.json()["error_code"] for r in (as_json, as_form, as_get)] == [0, 0, 0]
    listing = requests.get(api.url("faceset/group/getlist"), params={**token, "start": "1", "length": "2"},
                           timeout=10).json()
    assert listing["result"] == {"group_id_list": ["by_form", "by_get"]}


def test_a_json_body_with_a_bad_value_type_is_a_format_error(api):
    assert api.call("faceset/group/add", group_id=["a", "b"])["error_code"] == 222006
    assert api.call("faceset/group/add", group_id=7)["error_code"] == 0  # a number is read as its text
    assert api.ok("faceset/group/getlist") == {"group_id_list": ["7"]}


# ---- endpoints ----

@pytest.mark.lenient_unknowns  # the lenient answers, field by field (test_unknowns has both)
def test_every_endpoint_happy_path(api):
    image, other = png(1), png(2)
    token, other_token = local_face_token(image), local_face_token(other)
    assert api.ok("faceset/group/add", group_id="staff") is None
    assert api.ok("faceset/group/add", group_id="visitors") is None
    assert api.ok("faceset/group/getlist") == {"group_id_list": ["staff", "visitors"]}

    added = api.ok("faceset/user/add", image=b64(image), image_type="BASE64", group_id="staff", user_id="alice",
                   user_info="Alice")
    assert added["face_token"] == token
    assert set(added["location"]) == {"left", "top", "width", "height", "rotation"}
    assert api.ok("faceset/user/add", image=b64(other), image_type="BASE64", group_id="staff",
                  user_id="alice")["face_token"] == other_token

    faces = api.ok("faceset/face/getlist", group_id="staff", user_id="alice")["face_list"]
    assert [face["face_token"] for face in faces] == [token, other_token]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", face["ctime"]) for face in faces)

    assert api.ok("faceset/user/get", group_id="staff", user_id="alice") == {
        "user_list": [{"user_info": "Alice", "group_id": "staff"}]}
    assert api.ok("faceset/group/getusers", group_id="staff") == {"user_id_list": ["alice"]}

    assert api.ok("faceset/user/copy", user_id="alice", src_group_id="staff", dst_group_id="visitors") is None
    assert api.ok("faceset/user/get", group_id="@ALL", user_id="alice") == {"user_list": [
        {"user_info": "Alice", "group_id": "staff"}, {"user_info": "Alice", "group_id": "visitors"}]}

    updated = api.ok("faceset/user/update", image=token, image_type="FACE_TOKEN", group_id="visitors",
                     user_id="alice", user_info="Alice B.")
    assert updated["face_token"] == token
    assert [f["face_token"] for f in api.ok("faceset/face/getlist", group_id="visitors",
                                            user_id="alice")["face_list"]] == [token]

    assert api.ok("faceset/face/delete", group_id="staff", user_id="alice", face_token=other_token) is None
    assert api.ok("faceset/user/delete", group_id="visitors", user_id="alice") is None
    assert api.ok("faceset/group/getusers", group_id="visitors") == {"user_id_list": []}
    assert api.ok("faceset/group/delete", group_id="visitors") is None
    assert api.ok("faceset/group/getlist") == {"group_id_list": ["staff"]}

    detected = api.ok("detect", image=b64(png(3)), image_type="BASE64", face_field="age", max_face_num=1)
    assert detected["face_num"] == 1
    face = detected["face_list"][0]
    assert face["face_token"] == local_face_token(png(3))
    assert {"location", "face_probability", "angle"} <= set(face)


@pytest.mark.parametrize("path, params, code", [
    ("faceset/group/add", {}, 222001),
    ("faceset/group/add", {"group_id": "bad-id!"}, 222006),
    ("faceset/group/delete", {"group_id": "nowhere"}, 223100),
    ("faceset/user/add", {"image": "0" * 32, "image_type": "FACE_TOKEN", "group_id": "nowhere", "user_id": "u"},
     222209),
    ("faceset/user/add", {"image": "x", "image_type": "JPEG", "group_id": "g", "user_id": "u"}, 222015),
    ("faceset/face/getlist", {"group_id": "nowhere", "user_id": "u"}, 223100),
    ("faceset/user/copy", {"user_id": "u", "src_group_id": "nowhere", "dst_group_id": "other"}, 223100),
    ("faceset/group/getlist", {"start": "abc"}, 222002),
    ("faceset/group/getlist", {"length": "many"}, 222003),
    ("faceset/group/getusers", {"group_id": "g", "start": 1.5}, 222002),
])
def test_library_errors_pass_through(api, path, params, code):
    body = api.call(path, **params)
    assert body["error_code"] == code and body["result"] is None
    assert body["error_msg"]


def test_unknown_method_is_error_3(api):
    for path in ("faceset/user/search", "search", "../../v2/faceset"):
        body = api.call(path)
        assert (body["error_code"], body["error_msg"]) == (3, "Unsupported openapi method")


def test_no_such_path_outside_the_api_is_404(server):
    assert requests.get(f"{server.base_url}/nothing/here", timeout=10).status_code == 404


# ---- QPS and latency ----

def test_qps_limit_answers_18_above_n_calls_a_second(serve):
    server = serve("--qps", "5")
    api = ApiClient(server)
    codes = [api.call("faceset/group/getlist")["error_code"] for _ in range(20)]
    assert set(codes) <= {0, 18}
    assert codes[:5] == [0] * 5 and 18 in codes
    stats = server.stats()
    assert stats["max_calls_in_one_second"] <= 5
    assert stats["qps_rejections"] == codes.count(18) == stats["errors"]["18"]
    assert stats["counters"]["faceset/group/getlist"] == 20  # refused calls are counted as received
    time.sleep(1.1)  # refused calls do not count: one quiet second and the next calls pass
    assert api.call("faceset/group/getlist")["error_code"] == 0


def test_qps_limit_holds_for_concurrent_clients(serve):
    server = serve("--qps", "4")
    token = fetch_token(server)["access_token"]
    codes: list[int] = []

    def burst():
        client = ApiClient(server, token)
        for _ in range(5):
            codes.append(client.call("faceset/group/getlist")["error_code"])

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(codes) == 20 and 18 in codes and codes.count(0) >= 4
    assert server.stats()["max_calls_in_one_second"] <= 4


def test_token_calls_do_not_count_toward_qps(serve):
    server = serve("--qps", "2")
    for _ in range(5):
        fetch_token(server)
    stats = server.stats()
    assert stats["token_requests"] == 5 and stats["total"] == 0
    assert ApiClient(server).call("faceset/group/getlist")["error_code"] == 0


def test_latency_delays_answers_without_serialising_them(serve):
    server = serve("--latency-ms", "400")
    token = fetch_token(server)["access_token"]
    started = time.monotonic()
    assert ApiClient(server, token).call("faceset/group/getlist")["error_code"] == 0
    assert time.monotonic() - started >= 0.4

    def one():
        ApiClient(server, token).call("faceset/group/getlist")

    started = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 5 * 0.4 * 0.75  # five overlapping answers, not five in a row


# ---- admin API ----

def test_stats_count_calls_and_errors(server, api):
    api.call("faceset/group/add", group_id="g")
    api.call("faceset/group/add", group_id="g")
    api.call("faceset/group/getlist")
    requests.post(api.url("faceset/group/getlist"), json={}, timeout=10)  # no token: counted too
    stats = server.stats()
    assert stats["counters"] == {"faceset/group/add": 2, "faceset/group/getlist": 2}
    assert stats["total"] == 4
    assert stats["errors"] == {"223101": 1, "100": 1}
    assert stats["qps_rejections"] == 0 and stats["max_calls_in_one_second"] >= 3


def test_journal_records_mutating_calls_in_order_without_images_or_tokens(server, api):
    image = png(9)
    api.call("faceset/group/add", group_id="g")
    api.call("faceset/user/add", image=b64(image), image_type="BASE64", group_id="g", user_id="u", user_info="x")
    api.call("faceset/group/getlist")  # a read: not journaled
    api.call("faceset/face/delete", group_id="g", user_id="u", face_token="f" * 32)
    api.call("faceset/user/delete", group_id="g", user_id="u")
    entries = server.journal()
    assert [(e["endpoint"], e["error_code"]) for e in entries] == [
        ("faceset/group/add", 0), ("faceset/user/add", 0), ("faceset/face/delete", 223106),
        ("faceset/user/delete", 0)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert entries[1]["params"] == {"group_id": "g", "user_id": "u", "user_info": "x", "image_type": "BASE64"}
    assert all(e["executed"] and e["fault"] is None and e["log_id"] for e in entries)
    assert api.token not in json.dumps(entries) and b64(image) not in json.dumps(entries)


def test_reset_clears_stats_and_journal(server, api):
    api.call("faceset/group/add", group_id="g")
    server.reset()
    assert server.stats()["total"] == 0 and server.journal() == []
    api.call("faceset/group/delete", group_id="g")
    assert [e["endpoint"] for e in server.journal()] == ["faceset/group/delete"]
    assert server.stats()["counters"] == {"faceset/group/delete": 1}


def test_journal_file_survives_a_restart(serve, tmp_path):
    journal = tmp_path / "journal.jsonl"
    db = str(tmp_path / "lib.db")
    first = serve("--journal", str(journal), db=db)
    ApiClient(first).call("faceset/group/add", group_id="g1")
    first.stop()
    second = serve("--journal", str(journal), db=db)
    ApiClient(second).call("faceset/group/delete", group_id="g1")
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert [(e["seq"], e["endpoint"], e["params"]) for e in lines] == [
        (1, "faceset/group/add", {"group_id": "g1"}), (2, "faceset/group/delete", {"group_id": "g1"})]
    assert [e["seq"] for e in second.journal()] == [2]


def test_stops_cleanly_and_prints_no_secret(server, api):
    api.call("faceset/group/add", group_id="g")
    server.stop()
    assert server.process.returncode == 0
    output = "".join(server.output)
    listening = [line for line in output.splitlines() if "listening on" in line]
    assert listening == [f"facesync serve: listening on {server.base_url}"]
    for secret in (server.api_key, server.secret_key, api.token):
        assert secret not in output
