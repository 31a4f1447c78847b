"""BaiduClient without a server: configuration, credentials from the environment, secrets kept out."""

from __future__ import annotations

import dataclasses
import logging
import socket

import pytest

from facesync import logs
from facesync.api.baidu import DAY, BaiduClient, CallRecord, app_id_of, renewal_delay, scrub
from facesync.api.errors import TransportError
from facesync.api.protocol import FaceLibrary
from facesync.errors import ConfigError

API_KEY = "unit-api-key-AAAA1111"
SECRET_KEY = "unit-secret-key-BBBB2222"


def closed_port_url() -> str:
    """A base URL where nothing listens: every connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_client_has_every_method_of_the_face_library():
    # Checked on the class: isinstance() on a runtime protocol would read ``identity``, which fetches a token.
    wanted = [name for name in dir(FaceLibrary) if not name.startswith("_")]
    assert "user_add" in wanted and "identity" in wanted
    assert [name for name in wanted if not hasattr(BaiduClient, name)] == []


def test_repr_shows_no_secret():
    client = BaiduClient("https://aip.baidubce.com", API_KEY, SECRET_KEY, app_id="123")
    shown = repr(client)
    assert "aip.baidubce.com" in shown and "123" in shown
    assert API_KEY not in shown and SECRET_KEY not in shown


@pytest.mark.parametrize("missing", ["BAIDU_API_KEY", "BAIDU_SECRET_KEY"])
def test_from_environment_names_the_missing_variable(monkeypatch, missing):
    monkeypatch.setenv("BAIDU_API_KEY", API_KEY)
    monkeypatch.setenv("BAIDU_SECRET_KEY", SECRET_KEY)
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigError) as caught:
        BaiduClient.from_environment("https://aip.baidubce.com", qps=10, concurrency=4)
    assert missing in str(caught.value)
    assert API_KEY not in str(caught.value) and SECRET_KEY not in str(caught.value)


def test_from_environment_reads_credentials_and_app_id(monkeypatch):
    monkeypatch.setenv("BAIDU_API_KEY", API_KEY)
    monkeypatch.setenv("BAIDU_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("BAIDU_APP_ID", "4242")
    client = BaiduClient.from_environment("http://127.0.0.1:9/", qps=3, concurrency=2)
    assert client.base_url == "http://127.0.0.1:9"
    assert client.limiter.cap == 3 and client.concurrency == 2
    assert "4242" in repr(client)


def test_base_url_must_be_http():
    with pytest.raises(ConfigError):
        BaiduClient("ftp://example.org", API_KEY, SECRET_KEY)


def test_pool_and_tls_settings():
    client = BaiduClient("https://aip.baidubce.com", API_KEY, SECRET_KEY, concurrency=5,
                         connect_timeout=2, read_timeout=7)
    adapter = client._session.get_adapter("https://aip.baidubce.com/")
    assert adapter._pool_maxsize == 5
    assert client._session.verify is True and client._session.trust_env is True
    assert client.timeout == (2, 7)


def test_scrub_masks_credentials_in_urls_and_registered_secrets():
    logs.register_secret("24.deadbeefdeadbeef.2592000.1700000000.1-10000001")
    text = ("HTTPConnectionPool(host='x', port=1): Max retries exceeded with url: "
            "/oauth/2.0/token?grant_type=client_credentials&client_id=abc123&client_secret=xyz789 "
            "and /rest/2.0/face/v3/detect?access_token=24.deadbeefdeadbeef.2592000.1700000000.1-10000001")
    clean = scrub(text)
    assert "abc123" not in clean and "xyz789" not in clean and "deadbeef" not in clean
    assert "client_id=***" in clean and "grant_type=client_credentials" in clean


def test_app_id_comes_from_the_token_suffix():
    assert app_id_of("24.0123abcd.2592000.1700000000.282335-10000001") == "10000001"
    assert app_id_of("opaque-token-without-app") is None
    assert app_id_of("nodash") is None


def test_tokens_are_renewed_before_they_expire():
    assert renewal_delay(30 * DAY) == pytest.approx(27 * DAY)  # 90 % comes first
    assert renewal_delay(5 * DAY) == pytest.approx(4 * DAY)  # one day before comes first
    assert renewal_delay(2) == pytest.approx(1.8)


def test_call_record_is_frozen():
    record = CallRecord("detect", 0, 7, 0.01, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.error_code = 1  # type: ignore[misc]


def test_refused_connection_is_a_scrubbed_transport_error(caplog):
    caplog.set_level(logging.DEBUG)
    client = BaiduClient(closed_port_url(), API_KEY, SECRET_KEY, max_attempts=2, max_elapsed=5)
    with pytest.raises(TransportError) as caught:
        client.group_getlist()
    text = str(caught.value) + caplog.text
    assert "connection failed" in str(caught.value)
    assert API_KEY not in text and SECRET_KEY not in text
    assert caught.value.__cause__ is None and caught.value.__context__ is None
    assert "retry 1" in caplog.text  # the first failure was retried


def test_an_unreachable_server_is_named_with_its_root_cause_and_no_secret():
    with socket.socket() as probe:  # a port nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = BaiduClient(f"http://127.0.0.1:{port}", "unreachable-api-key", "unreachable-secret-key",
                         max_attempts=1)
    with pytest.raises(TransportError) as caught:
        client.group_getlist()
    message = str(caught.value)
    assert message.startswith(f"no usable answer: oauth/2.0/token at http://127.0.0.1:{port}: connection failed")
    assert "Connection refused" in message
    assert "unreachable-api-key" not in message and "unreachable-secret-key" not in message
