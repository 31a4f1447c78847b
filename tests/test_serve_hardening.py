"""``facesync serve`` left running: hostile bodies, admin access, forged tokens, idle sockets, exposure.

Every test talks to a real server process over real sockets.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.support.server import API_KEY, SECRET_KEY, ApiClient, fetch_token

API = "/rest/2.0/face/v3/"


def raw_exchange(server, payload: bytes, timeout: float = 20.0) -> bytes:
    """Send ``payload`` on a fresh connection and read until the server closes it."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as conn:
        conn.sendall(payload)
        received = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    return received


def hidden_group_add(token: str) -> bytes:
    body = json.dumps({"group_id": "hidden"}).encode()
    return (f"POST {API}faceset/group/add?access_token={token} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.fixture
def server(serve):
    return serve()


@pytest.mark.parametrize("headers, status", [
    ("Content-Length: 99999999\r\n", 413),
    ("Content-Length: -60\r\n", 400),
    ("Content-Length: sixty\r\n", 400),
    ("Transfer-Encoding: gzip\r\n", 400),
    ("Transfer-Encoding: chunked\r\nContent-Length: 10\r\n", 400),
    ("Transfer-Encoding: chunked\r\n", 400),  # the body starts with "POST", not a chunk size
])
def test_a_refused_body_is_never_read_as_further_requests(server, headers, status):
    token = fetch_token(server)["access_token"]
    outer = (f"POST {API}faceset/group/getlist?access_token={token} HTTP/1.1\r\nHost: x\r\n"
             f"Content-Type: application/json\r\n{headers}\r\n").encode()
    answer = raw_exchange(server, outer + hidden_group_add(token) + hidden_group_add(token))
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1 and b"Connection: close" in answer
    assert ApiClient(server, token).ok("faceset/group/getlist")["group_id_list"] == []
    assert server.journal() == []


def test_keep_alive_still_serves_well_formed_requests_in_a_row(server):
    token = fetch_token(server)["access_token"]
    closing = (f"GET {API}faceset/group/getlist?access_token={token} HTTP/1.1\r\nHost: x\r\n"
               "Connection: close\r\n\r\n").encode()
    answer = raw_exchange(server, hidden_group_add(token) + closing)
    assert answer.count(b"HTTP/1.1 200 ") == 2
    assert b'"group_id_list": ["hidden"]' in answer


@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"a":', "}")])
def test_a_deeply_nested_body_gets_an_error_answer(server, opening, closing):
    token = fetch_token(server)["access_token"]
    body = opening * 100_000 + "1" + closing * 100_000
    answer = requests.post(f"{server.base_url}{API}faceset/group/add", params={"access_token": token},
                           data=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["error_code"] == 222001  # no parameters could be read: group_id is missing
    assert ApiClient(server, token).ok("faceset/group/getlist") == {"group_id_list": []}
    assert server.process.poll() is None


def test_admin_endpoints_need_a_valid_access_token(server):
    api = ApiClient(server)
    api.ok("faceset/group/add", group_id="g")
    forged = api.token[:3] + ("0" if api.token[3] != "0" else "1") + api.token[4:]
    for token in (None, "", "24.nonsense", forged):
        params = {} if token is None else {"access_token": token}
        for method, what in (("GET", "stats"), ("GET", "journal"), ("POST", "reset")):
            answer = requests.request(method, f"{server.base_url}/_facesync/{what}", params=params, timeout=10)
            assert answer.status_code == 401, (token, what)
            assert "entries" not in answer.json() and "counters" not in answer.json()
    assert server.stats()["counters"] == {"faceset/group/add": 1}  # no refused reset ran
    answer = requests.get(f"{server.base_url}/_facesync/journal", params={"access_token": api.token}, timeout=10)
    assert answer.status_code == 200 and answer.json()["entries"][0]["params"] == {"group_id": "g"}


def old_style_token(secret_key: str, app_id: str) -> str:
    """A token signed the way anyone who knows the secret key could compute it offline."""
    rest = f"2592000.{int(time.time())}.123456-{app_id}"
    signature = hmac.new(secret_key.encode(), rest.encode(), hashlib.md5).hexdigest()
    return f"24.{signature}.{rest}"


def test_tokens_cannot_be_made_offline_even_with_the_default_keys(serve, tmp_path):
    db = str(tmp_path / "lib.db")
    first = serve("--api-key", "local-api-key", "--secret-key", "local-secret-key", db=db)
    first.api_key, first.secret_key = "local-api-key", "local-secret-key"
    issued = fetch_token(first)["access_token"]
    assert ApiClient(first, issued).call("faceset/group/getlist")["error_code"] == 0
    forged = old_style_token("local-secret-key", first.app_id)
    assert ApiClient(first, forged).call("faceset/group/getlist")["error_code"] == 110
    first.stop()
    second = serve("--api-key", "local-api-key", "--secret-key", "local-secret-key", db=db)
    second.api_key, second.secret_key = "local-api-key", "local-secret-key"
    # a token of an earlier run is refused too: clients fetch a new one
    assert ApiClient(second, issued).call("faceset/group/getlist")["error_code"] == 110
    assert ApiClient(second).call("faceset/group/getlist")["error_code"] == 0


def test_idle_connections_are_closed(serve):
    server = serve("--idle-timeout", "0.5")
    host, port = server.base_url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(1000)]
    try:
        for conn in idle:  # the server closes each one: recv sees the end of the stream
            assert conn.recv(1) == b""
    finally:
        for conn in idle:
            conn.close()
    # Each stats() is itself a connection, and the server counts the previous one closed only once its
    # handler thread has seen the end of the stream, so judge by the last answer of the polling loop.
    deadline = time.monotonic() + 30
    while (still_open := server.stats()["open_connections"]) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert still_open <= 1  # at most the admin request asking
    assert ApiClient(server).ok("faceset/group/getlist") == {"group_id_list": []}


def run_serve(tmp_path, *args: str, keys: bool = False) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if not name.startswith("BAIDU_")}
    if keys:
        env.update(BAIDU_API_KEY=API_KEY, BAIDU_SECRET_KEY=SECRET_KEY)
    return subprocess.Popen([sys.executable, "-m", "facesync", "serve", "--db", str(tmp_path / "lib.db"),
                             "--port", "0", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)


def first_line_and_stop(process: subprocess.Popen) -> tuple[str, str]:
    line = process.stdout.readline()
    process.terminate()
    _, errors = process.communicate(timeout=20)
    return line, errors


def test_listening_beyond_loopback_with_the_default_keys_is_refused(tmp_path):
    refused = run_serve(tmp_path, "--host", "0.0.0.0")
    out, errors = refused.communicate(timeout=60)
    assert refused.returncode == 1 and out == ""
    assert "refusing to listen on 0.0.0.0 with the default keys" in errors
    assert "--allow-default-keys-remote" in errors and "Traceback" not in errors
    assert "local-secret-key" not in errors

    line, errors = first_line_and_stop(run_serve(tmp_path, "--host", "0.0.0.0", "--allow-default-keys-remote"))
    assert line.startswith("facesync serve: listening on http://0.0.0.0:")
    assert "warning: listening on 0.0.0.0 with the default keys" in errors

    line, errors = first_line_and_stop(run_serve(tmp_path, "--host", "0.0.0.0", keys=True))
    assert line.startswith("facesync serve: listening on http://0.0.0.0:") and "warning" not in errors

    line, _ = first_line_and_stop(run_serve(tmp_path, "--host", "localhost"))
    assert line.startswith("facesync serve: listening on http://")
