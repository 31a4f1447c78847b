"""BaiduClient over real HTTP against ``facesync serve``: rate limit, tokens, faults, credentials, secrets."""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time

import pytest

from facesync.api.baidu import BaiduClient, CallRecord
from facesync.api.errors import (
    AlreadyExistsError,
    FaceApiError,
    NotFoundError,
    QuotaExhaustedError,
    TransportError,
)
from facesync.api.protocol import (
    Ack,
    AddedFace,
    Detection,
    FaceList,
    IdPage,
    Image,
    UserRecord,
    iter_group_ids,
    iter_user_ids,
)
from facesync.api.retry import RetryPolicy
from facesync.errors import ConfigError
from tests.support.images import png

TOKEN_PATTERN = re.compile(r"24\.[0-9a-f]{16,}")


def client_for(server, **options) -> BaiduClient:
    options.setdefault("qps", None)
    return BaiduClient(server.base_url, server.api_key, server.secret_key, **options)


def run_in_threads(threads: int, calls: int, call) -> list[BaseException]:
    """Run ``call(i)`` for i in range(calls) spread over ``threads`` threads; the errors raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()
    counter = iter(range(calls))

    def worker():
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            try:
                call(index)
            except Exception as error:  # noqa: BLE001 - collected for the assertion
                with lock:
                    errors.append(error)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return errors


def write_faults(tmp_path, text: str) -> str:
    path = tmp_path / "faults.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.lenient_unknowns  # the lenient answers, field by field (test_unknowns has both)
def test_every_endpoint_round_trips_with_typed_results(serve):
    server = serve()
    records: list[CallRecord] = []
    client = client_for(server, on_call=records.append)
    client.connect()
    assert client.identity == f"{server.base_url} app {server.app_id}"

    assert isinstance(client.group_add("staff"), Ack)
    assert isinstance(client.group_add("guests"), Ack)
    first = client.user_add("staff", "alice", Image.from_bytes(png(1)), user_info="Alice")
    assert isinstance(first, AddedFace) and re.fullmatch(r"[0-9a-f]{32}", first.face_token)
    assert first.location.width >= 0 and first.log_id > 0
    second = client.user_add("staff", "alice", Image.from_bytes(png(2)))
    faces = client.face_getlist("staff", "alice")
    assert isinstance(faces, FaceList)
    assert {face.face_token for face in faces.faces} == {first.face_token, second.face_token}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", face.ctime) for face in faces.faces)

    assert isinstance(client.user_copy("alice", "staff", "guests"), Ack)
    record = client.user_get("@ALL", "alice")
    assert isinstance(record, UserRecord)
    assert sorted((m.group_id, m.user_info) for m in record.memberships) == [("guests", "Alice"), ("staff", "Alice")]
    users = client.group_getusers("staff")
    assert isinstance(users, IdPage) and users.ids == ("alice",)
    groups = client.group_getlist()
    assert set(groups.ids) == {"staff", "guests"}

    updated = client.user_update("guests", "alice", Image.from_face_token(first.face_token), user_info="A.")
    assert updated.face_token == first.face_token
    assert client.user_get("guests", "alice").memberships[0].user_info == "A."
    detection = client.detect(Image.from_bytes(png(3)))
    assert isinstance(detection, Detection) and detection.face_num >= 1
    assert re.fullmatch(r"[0-9a-f]{32}", detection.faces[0].face_token)

    assert isinstance(client.face_delete("staff", "alice", second.face_token), Ack)
    assert [f.face_token for f in client.face_getlist("staff", "alice").faces] == [first.face_token]
    assert isinstance(client.user_delete("guests", "alice"), Ack)
    assert isinstance(client.group_delete("guests"), Ack)

    with pytest.raises(AlreadyExistsError) as exists:
        client.group_add("staff")
    assert exists.value.error_code == 223101 and exists.value.log_id
    with pytest.raises(NotFoundError) as missing:
        client.user_get("staff", "bob")
    assert missing.value.error_code == 223103

    counters = server.stats()["counters"]
    assert sum(counters.values()) == len(records)  # one record per HTTP attempt, no more, no less
    assert records[-1].error_code == 223103 and records[-1].log_id == missing.value.log_id
    assert all(r.error_code == 0 for r in records[:-2]) and all(r.log_id for r in records)


def test_burst_under_the_servers_qps_limit_never_fails(serve):
    server = serve("--qps", "5")
    client = client_for(server, qps=5, concurrency=8)
    client.group_getlist()  # the token fetch is not part of the burst
    server.reset()
    errors = run_in_threads(8, 100, lambda i: client.group_getlist())
    stats = server.stats()
    assert errors == []
    assert stats["counters"]["faceset/group/getlist"] >= 100
    assert stats["max_calls_in_one_second"] <= 5
    assert stats["qps_rejections"] <= 3


def test_free_tier_app_with_the_default_qps_sees_no_error_18(serve):
    server = serve("--qps", "2")
    client = client_for(server, qps=10.0, concurrency=4)
    errors = run_in_threads(4, 12, lambda i: client.group_getlist())
    stats = server.stats()
    assert errors == []
    assert stats["counters"]["faceset/group/getlist"] >= 12
    assert client.limiter.rate < 10  # it slowed down to the app's real limit


def test_token_expiring_mid_run_is_renewed_transparently(serve):
    server = serve("--token-ttl", "2")
    client = client_for(server)
    started = time.monotonic()
    calls = 0
    while time.monotonic() - started < 4.5:
        client.group_getlist()
        calls += 1
        time.sleep(0.1)
    stats = server.stats()
    assert stats["token_requests"] >= 2
    refused = stats["errors"].get("111", 0)  # a 111 is repeated after renewal, never surfaced
    assert stats["counters"]["faceset/group/getlist"] == calls + refused
    assert refused <= stats["token_requests"] - 1


def test_token_refused_by_the_server_is_renewed_once_and_the_call_repeated(serve):
    server = serve("--token-ttl", "1")
    records: list[CallRecord] = []
    client = client_for(server, on_call=records.append)
    client.group_getlist()
    # The client believes its token good for ever (as after a revocation or a clock jump): the server says 111.
    client._token = dataclasses.replace(client._token, renew_at=math.inf)
    time.sleep(2.1)  # past the 1 s lifetime, whole seconds rounded in the token's favour
    assert isinstance(client.group_getlist(), IdPage)
    assert [r.error_code for r in records] == [0, 111, 0]
    assert server.stats()["token_requests"] == 2


def test_thirty_percent_transient_faults_still_complete_every_call(serve, tmp_path):
    faults = write_faults(tmp_path, """
seed: 7
faults:
  - kind: error
    rate: 0.2
    codes: [18, 2, 222901]
  - kind: http_502
    rate: 0.05
  - kind: drop
    rate: 0.05
""")
    server = serve("--faults", faults)
    records: list[CallRecord] = []
    client = client_for(server, on_call=records.append)
    # At 30 % faults six in a row hit about one call in 1,400; ten attempts make that one in 170,000.
    # Short waits keep the test fast: what is tested is that every call completes, not the waits.
    client.policy = RetryPolicy(max_attempts=10, base_delay=0.05, max_delay=0.5)
    for index in range(20):
        client.group_add(f"group_{index}")
        client.group_getlist()
    assert set(iter_group_ids(client)) == {f"group_{index}" for index in range(20)}
    stats = server.stats()
    assert sum(stats["faults"].values()) + sum(stats["errors"].values()) >= 5  # faults were really met
    assert any(r.error_code is None for r in records)  # a 502 or a dropped connection was retried
    assert any(r.error_code in (18, 2, 222901) for r in records)


def test_a_committed_call_whose_answer_was_lost_comes_back_as_already_exists(serve, tmp_path):
    """The documented behaviour for non-idempotent retries: the client retries, the caller decides it is done."""
    faults = write_faults(tmp_path, """
seed: 1
faults:
  - kind: drop_after_commit
    rate: 0.5
    endpoints: [faceset/group/add]
""")
    server = serve("--faults", faults)
    client = client_for(server, max_attempts=10)
    answers = {}
    for index in range(10):
        try:
            answers[f"g{index}"] = client.group_add(f"g{index}")
        except AlreadyExistsError as caught:
            assert caught.error_code == 223101
            answers[f"g{index}"] = caught
    assert any(isinstance(answer, AlreadyExistsError) for answer in answers.values())
    assert set(client.group_getlist().ids) == set(answers)  # every group exists, created exactly once


@pytest.mark.parametrize(("wrong", "setting"), [("api_key", "BAIDU_API_KEY"), ("secret_key", "BAIDU_SECRET_KEY")])
def test_wrong_credentials_name_the_setting_to_fix(serve, wrong, setting):
    server = serve()
    keys = {"api_key": server.api_key, "secret_key": server.secret_key, wrong: "wrong-value-0000"}
    client = BaiduClient(server.base_url, keys["api_key"], keys["secret_key"], qps=None)
    with pytest.raises(ConfigError) as caught:
        client.group_getlist()
    message = str(caught.value)
    assert setting in message
    other = {"BAIDU_API_KEY", "BAIDU_SECRET_KEY"} - {setting}
    assert other.pop() not in caught.value.message
    for value in (server.api_key, server.secret_key, "wrong-value-0000"):
        assert value not in message
    assert server.stats()["total"] == 0  # no API call was made without a token


def test_app_id_mismatch_is_refused_before_any_call(serve, monkeypatch):
    server = serve()
    monkeypatch.setenv("BAIDU_API_KEY", server.api_key)
    monkeypatch.setenv("BAIDU_SECRET_KEY", server.secret_key)
    monkeypatch.setenv("BAIDU_APP_ID", "99999999")
    client = BaiduClient.from_environment(server.base_url, qps=None, concurrency=2)
    with pytest.raises(ConfigError) as caught:
        client.group_add("should_not_exist")
    assert "99999999" in str(caught.value) and server.app_id in str(caught.value)
    assert server.stats()["total"] == 0

    monkeypatch.setenv("BAIDU_APP_ID", server.app_id)
    matching = BaiduClient.from_environment(server.base_url, qps=None, concurrency=2)
    assert matching.group_getlist().ids == ()
    assert matching.identity.endswith(f"app {server.app_id}")


def test_no_secret_in_logs_or_errors_of_a_faulty_run(serve, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # urllib3 writes request lines, query string included, at DEBUG
    faults = write_faults(tmp_path, """
seed: 3
faults:
  - kind: drop
    rate: 0.3
  - kind: http_502
    rate: 0.1
  - kind: error
    rate: 0.1
    codes: [222901]
""")
    server = serve("--faults", faults, "--token-ttl", "1")
    client = client_for(server, max_attempts=1, transport_budget=0)  # every failure surfaces
    failures: list[str] = []
    for index in range(25):
        try:
            client.group_add(f"g{index}")
        except FaceApiError as error:
            failures.append(f"{error!s} {error!r}")
        if index == 12:
            time.sleep(1.0)  # a second token
    for wrong in ("api_key", "secret_key"):
        keys = {"api_key": server.api_key, "secret_key": server.secret_key, wrong: "wrong-secret-1234"}
        try:
            BaiduClient(server.base_url, keys["api_key"], keys["secret_key"], qps=None).group_getlist()
        except ConfigError as error:
            failures.append(f"{error!s} {error!r}")
    token = client._token.value
    text = caplog.text + "\n".join(failures) + repr(client)
    assert any("connection failed" in failure for failure in failures)  # the run really was faulty
    assert "access_token=***" in caplog.text  # urllib3's request lines were captured, scrubbed
    for secret in (server.api_key, server.secret_key, "wrong-secret-1234", token):
        assert secret not in text
    assert not TOKEN_PATTERN.search(text)


def test_iter_user_ids_pages_through_2500_users_in_three_calls(serve, tmp_path):
    from facesync.local.store import LocalLibrary

    db = str(tmp_path / "big.db")
    library = LocalLibrary(db)
    library.group_add("crowd")
    image = Image.from_bytes(png(11))
    for index in range(2500):
        library.user_add("crowd", f"u{index:05d}", image)
    library.close()
    server = serve(db=db)
    client = client_for(server)
    ids = list(iter_user_ids(client, "crowd"))
    assert ids == [f"u{index:05d}" for index in range(2500)]
    assert server.stats()["counters"]["faceset/group/getusers"] == 3


def test_transport_error_when_the_server_goes_away(serve):
    server = serve()
    client = client_for(server, max_attempts=2, max_elapsed=5)
    client.group_getlist()
    server.stop()
    with pytest.raises(TransportError) as caught:
        client.group_getlist()
    assert caught.value.error_code == 0 and "faceset/group/getlist" in str(caught.value)


@pytest.mark.parametrize(("code", "word"), [(17, "daily"), (19, "total")])
def test_quota_exhausted_stops_at_once_with_a_message_about_the_quota(serve, tmp_path, code, word):
    faults = write_faults(tmp_path, f"""
faults:
  - kind: error
    rate: 1.0
    codes: [{code}]
""")
    server = serve("--faults", faults)
    client = client_for(server)
    with pytest.raises(QuotaExhaustedError) as caught:
        client.group_getlist()
    assert caught.value.error_code == code and word in str(caught.value)
    assert server.stats()["total"] == 1  # not retried


def test_slow_answer_is_a_timeout_transport_error(serve, tmp_path):
    faults = write_faults(tmp_path, """
faults:
  - kind: slow
    rate: 1.0
    delay_ms: 1500
    endpoints: [faceset/group/getlist]
""")
    server = serve("--faults", faults)
    client = client_for(server, read_timeout=0.3, max_attempts=2, transport_budget=0)
    with pytest.raises(TransportError) as caught:
        client.group_getlist()
    assert "no answer in time" in str(caught.value)
    assert server.stats()["counters"]["faceset/group/getlist"] == 2


def test_many_threads_share_one_token_fetch(serve):
    server = serve()
    client = client_for(server, concurrency=8)
    errors = run_in_threads(8, 40, lambda i: client.group_getlist())
    assert errors == []
    assert server.stats()["token_requests"] == 1


def test_a_server_restart_of_two_seconds_costs_no_failed_call(serve):
    """Refused connections while the server restarts are retried for a time budget, not a few attempts."""
    server = serve()
    client = client_for(server)
    client.group_add("before")
    port = server.base_url.rsplit(":", 1)[1]
    server.stop()
    restarted = []
    timer = threading.Timer(2.0, lambda: restarted.append(serve("--port", port, db=server.db)))
    timer.start()
    try:
        client.group_add("during")  # refused for about two seconds, then the new process answers
    finally:
        timer.join()
        client.close()
    assert restarted and {"before", "during"} <= set(client_for(restarted[0]).group_getlist().ids)
