"""Run ``facesync serve`` as a real process on 127.0.0.1 for tests and benchmarks, and read its admin API."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import requests

API_KEY = "test-api-key-0123456789"
SECRET_KEY = "test-secret-key-9876543210"
APP_ID = "10000001"
_READY = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


@dataclass
class RunningServer:
    process: subprocess.Popen
    base_url: str
    db: str
    api_key: str = API_KEY
    secret_key: str = SECRET_KEY
    app_id: str = APP_ID
    output: list = field(default_factory=list)
    _admin_token: str | None = field(default=None, repr=False)
    _admin_token_fetches: int = 0  # since the last reset; not the code under test's token requests

    def admin(self, what: str, method: str = "GET") -> dict:
        """An admin endpoint's answer; fetches (and renews, once refused) the access_token it needs."""
        for renew in (False, True):
            if renew or self._admin_token is None:
                self._admin_token = fetch_token(self)["access_token"]
                self._admin_token_fetches += 1
            answer = requests.request(method, f"{self.base_url}/_facesync/{what}",
                                      params={"access_token": self._admin_token}, timeout=10)
            if answer.status_code != 401:
                break
        answer.raise_for_status()
        return answer.json()

    def stats(self) -> dict:
        """{"counters": {endpoint: calls}, "total": n, ...} since start or the last reset; token_requests
        leaves out the tokens this helper fetched for itself."""
        stats = self.admin("stats")
        stats["token_requests"] -= self._admin_token_fetches
        return stats

    def journal(self) -> list[dict]:
        """Every mutating call answered, in order: endpoint, parameters (images left out), error_code."""
        return self.admin("journal")["entries"]

    def reset(self) -> None:
        self.admin("reset", method="POST")
        self._admin_token_fetches = 0

    def env(self) -> dict:
        """The environment a facesync process needs to use this server as its target."""
        return {**os.environ, "BAIDU_API_KEY": self.api_key, "BAIDU_SECRET_KEY": self.secret_key,
                "FACESYNC_TARGET": self.base_url}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_server(db: str, *extra: str, timeout: float = 20.0) -> RunningServer:
    """Start ``facesync serve --db DB --port 0 EXTRA...`` and wait for its "listening on" line."""
    command = [sys.executable, "-m", "facesync", "serve", "--db", str(db), "--host", "127.0.0.1", "--port", "0",
               "--api-key", API_KEY, "--secret-key", SECRET_KEY, "--app-id", APP_ID, *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = _READY.search(line)
        if found:
            _drain(process)
            return RunningServer(process, found.group(1), str(db), output=lines)
    process.kill()
    raise RuntimeError("facesync serve did not start:\n" + "".join(lines))


def _drain(process: subprocess.Popen) -> None:
    """Keep reading the server's output so that a full pipe never blocks it."""
    import threading

    def pump():
        for _ in process.stdout:
            pass

    threading.Thread(target=pump, daemon=True).start()


class ApiClient:
    """A bare Baidu client: one token, one keep-alive session, JSON bodies unless told otherwise."""

    def __init__(self, server, token: str | None = None):
        self.server = server
        self.session = requests.Session()
        self.token = token or fetch_token(server)["access_token"]

    def url(self, path: str) -> str:
        return f"{self.server.base_url}/rest/2.0/face/v3/{path}"

    def call(self, path: str, **params) -> dict:
        answer = self.session.post(self.url(path), params={"access_token": self.token}, json=params, timeout=10)
        assert answer.status_code == 200
        return answer.json()

    def ok(self, path: str, **params):
        body = self.call(path, **params)
        assert body["error_code"] == 0, body
        return body["result"]


def fetch_token(server, **overrides) -> dict:
    params = {"grant_type": "client_credentials", "client_id": server.api_key, "client_secret": server.secret_key}
    answer = requests.get(f"{server.base_url}/oauth/2.0/token", params={**params, **overrides}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()
