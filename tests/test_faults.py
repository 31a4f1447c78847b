"""Injected faults: the faults file's checks, the rates they hit at, and what they do over real HTTP."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest
import requests
import yaml

from facesync.errors import ConfigError
from facesync.local.faults import (
    ENDPOINTS,
    FaultInjector,
    FaultKind,
    image_check_for,
    load_faults,
    parse_faults,
)
from tests.support.images import png
from tests.test_server import ApiClient, b64

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "faults.example.yaml"


def write_faults(tmp_path: Path, document: dict) -> str:
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


# ---- the file ----

def test_the_documented_example_loads():
    config = load_faults(EXAMPLE)
    assert config.seed == 42
    assert {rule.kind for rule in config.rules} == set(FaultKind)
    assert {rejection.code for rejection in config.rejections} == {223120, 223113}


@pytest.mark.parametrize("document, complaint", [
    ({"fault": []}, "unknown key fault"),
    ({"faults": [{"kind": "explode", "rate": 0.1}]}, "kind must be one of"),
    ({"faults": [{"kind": "drop", "rate": 1.5}]}, "rate must be a number from 0 to 1"),
    ({"faults": [{"kind": "error", "rate": 0.1}]}, "needs codes"),
    ({"faults": [{"kind": "slow", "rate": 0.1}]}, "needs delay_ms"),
    ({"faults": [{"kind": "drop", "rate": 0.1, "endpoints": ["faceset/user/ad"]}]}, "unknown endpoint"),
    ({"faults": [{"kind": "drop", "rate": 0.6}, {"kind": "http_502", "rate": 0.6}]}, "add up to 1.2"),
    ({"reject_images": [{"code": 223120}]}, "name the images"),
    ({"reject_images": [{"face_token": "xyz", "code": 223120}]}, "not a face_token"),
    ({"reject_images": [{"face_token": "a" * 32, "code": 999}]}, "known error code"),
    ({"seed": "abc"}, "seed must be an integer"),
])
def test_bad_faults_files_are_refused_with_the_reason(document, complaint):
    with pytest.raises(ConfigError, match=complaint):
        parse_faults(document)


def test_rates_on_different_endpoints_may_add_up_past_one():
    config = parse_faults({"faults": [{"kind": "drop", "rate": 0.7, "endpoints": ["detect"]},
                                      {"kind": "http_502", "rate": 0.7, "endpoints": ["faceset/group/add"]}]})
    assert len(config.rules) == 2


def test_unreadable_and_invalid_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read faults file"):
        load_faults(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("faults: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_faults(broken)


def test_images_are_named_by_file(tmp_path):
    (tmp_path / "blurred.png").write_bytes(png(5))
    path = write_faults(tmp_path, {"reject_images": [{"images": ["blurred.png"], "code": 223114}]})
    check = image_check_for(load_faults(path))
    assert check(hashlib.md5(png(5)).hexdigest(), "NONE", "NONE") == 223114
    assert check(hashlib.md5(png(6)).hexdigest(), "NONE", "NONE") is None


def test_rejection_can_wait_for_the_call_to_ask_for_control():
    token = "b" * 32
    check = image_check_for(parse_faults({"reject_images": [
        {"face_token": token, "code": 223120, "when": "liveness_control"}]}))
    assert check(token, "HIGH", "NONE") is None
    assert check(token, "NONE", "LOW") == 223120


# ---- decisions ----

def test_decisions_hit_each_rate_and_repeat_with_the_seed():
    config = parse_faults({"seed": 7, "faults": [
        {"kind": "error", "rate": 0.2, "codes": [18, 222901]},
        {"kind": "drop", "rate": 0.1},
        {"kind": "slow", "rate": 0.05, "delay_ms": 10, "endpoints": ["detect"]},
    ]})
    first, second = FaultInjector(config), FaultInjector(config)
    decisions = [first.decide("detect") for _ in range(10000)]
    again = [second.decide("detect") for _ in range(10000)]
    assert decisions == again
    kinds = Counter(d.kind if d else None for d in decisions)
    assert 1800 <= kinds[FaultKind.ERROR] <= 2200
    assert 850 <= kinds[FaultKind.DROP] <= 1150
    assert 400 <= kinds[FaultKind.SLOW] <= 600
    codes = Counter(d.code for d in decisions if d and d.kind is FaultKind.ERROR)
    assert set(codes) == {18, 222901} and min(codes.values()) > 800
    other = [first.decide("faceset/group/add") for _ in range(1000)]
    assert all(d is None or d.kind is not FaultKind.SLOW for d in other)


def test_no_faults_no_decisions():
    injector = FaultInjector(parse_faults(None))
    assert all(injector.decide(endpoint) is None for endpoint in ENDPOINTS)


# ---- over HTTP ----

def test_each_fault_kind_happens_at_its_rate(serve, tmp_path):
    server = serve("--faults", write_faults(tmp_path, {"seed": 3, "faults": [
        {"kind": "error", "rate": 0.25, "codes": [18, 222901, 2], "endpoints": ["faceset/group/getlist"]},
        {"kind": "http_502", "rate": 0.15, "endpoints": ["faceset/group/getlist"]},
        {"kind": "drop", "rate": 0.15, "endpoints": ["faceset/group/getlist"]},
    ]}))
    api = ApiClient(server)
    seen: Counter = Counter()
    for _ in range(200):
        try:
            answer = requests.post(api.url("faceset/group/getlist"), params={"access_token": api.token}, json={},
                                   timeout=10)
        except requests.ConnectionError:
            seen["drop"] += 1
            continue
        if answer.status_code == 502:
            assert answer.headers["Content-Type"].startswith("text/html") and "<html>" in answer.text
            seen["http_502"] += 1
        else:
            body = answer.json()
            assert body["error_code"] in (0, 18, 222901, 2)
            seen["ok" if body["error_code"] == 0 else "error"] += 1
    assert 25 <= seen["error"] <= 75
    assert 12 <= seen["http_502"] <= 48
    assert 12 <= seen["drop"] <= 48
    assert seen["ok"] >= 60
    stats = server.stats()
    assert stats["faults"] == {"error": seen["error"], "http_502": seen["http_502"], "drop": seen["drop"]}
    assert stats["counters"]["faceset/group/getlist"] == 200
    assert stats["qps_rejections"] == stats["errors"].get("18", 0)


def test_a_faulted_call_changes_nothing(serve, tmp_path):
    server = serve("--faults", write_faults(tmp_path, {"faults": [
        {"kind": "error", "rate": 1, "codes": [222901], "endpoints": ["faceset/group/add"]},
        {"kind": "drop", "rate": 1, "endpoints": ["faceset/group/delete"]}]}))
    api = ApiClient(server)
    assert api.call("faceset/group/add", group_id="g")["error_code"] == 222901
    with pytest.raises(requests.ConnectionError):
        api.call("faceset/group/delete", group_id="g")
    assert api.ok("faceset/group/getlist") == {"group_id_list": []}
    entries = server.journal()
    assert [(e["endpoint"], e["error_code"], e["executed"], e["fault"]) for e in entries] == [
        ("faceset/group/add", 222901, False, "error"), ("faceset/group/delete", None, False, "drop")]


def test_drop_after_commit_loses_the_answer_but_keeps_the_write(serve, tmp_path):
    server = serve("--faults", write_faults(tmp_path, {"faults": [
        {"kind": "drop_after_commit", "rate": 1, "endpoints": ["faceset/group/add"]}]}))
    api = ApiClient(server)
    with pytest.raises(requests.ConnectionError):
        api.call("faceset/group/add", group_id="g")
    assert api.ok("faceset/group/getlist") == {"group_id_list": ["g"]}
    with pytest.raises(requests.ConnectionError):  # the retry meets "already exists", also unheard
        api.call("faceset/group/add", group_id="g")
    entries = server.journal()
    assert [(e["error_code"], e["executed"], e["fault"]) for e in entries] == [
        (0, True, "drop_after_commit"), (223101, True, "drop_after_commit")]


def test_slow_answers_arrive_late_but_complete(serve, tmp_path):
    import time

    server = serve("--faults", write_faults(tmp_path, {"faults": [
        {"kind": "slow", "rate": 1, "delay_ms": 300, "endpoints": ["faceset/group/add"]}]}))
    api = ApiClient(server)
    started = time.monotonic()
    assert api.call("faceset/group/add", group_id="g")["error_code"] == 0
    assert time.monotonic() - started >= 0.3
    assert server.stats()["faults"] == {"slow": 1}


def test_chosen_images_are_rejected_by_face_token(serve, tmp_path):
    rejected = png(11)
    server = serve("--faults", write_faults(tmp_path, {"reject_images": [
        {"face_token": hashlib.md5(rejected).hexdigest(), "code": 223120},
        {"face_tokens": [hashlib.md5(png(12)).hexdigest()], "code": 223113, "when": "quality_control"}]}))
    api = ApiClient(server)
    api.ok("faceset/group/add", group_id="g")
    refused = api.call("faceset/user/add", image=b64(rejected), image_type="BASE64", group_id="g", user_id="u")
    assert (refused["error_code"], refused["error_msg"], refused["result"]) == (223120, "liveness check fail", None)
    assert api.call("faceset/user/add", image=b64(png(12)), image_type="BASE64", group_id="g",
                    user_id="u")["error_code"] == 0
    assert api.call("faceset/user/add", image=b64(png(12)), image_type="BASE64", group_id="g", user_id="v",
                    quality_control="LOW")["error_code"] == 223113
    assert api.ok("faceset/group/getusers", group_id="g") == {"user_id_list": ["u"]}
