"""facesync doctor: over real HTTP against facesync serve, lenient and harsh, and its scratch groups."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import pytest
import yaml

from facesync.api.baidu import BaiduClient
from facesync.doctor import SCRATCH_PREFIX, DoctorError, examine, image_variant, read_photos
from facesync.local.store import LocalLibrary
from tests.support.cli import run_facesync
from tests.support.images import GIF, bmp, jpeg, png

# The rows whose answer the emulator's two variants give differently (local/unknowns.py).
VARIANT_ROWS = {"user_info_on_add", "user_info_on_update", "detect_token", "face_token_reuse",
                "same_face_two_users", "implicit_group", "page_length"}


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every PNG chunk, checking each CRC."""
    found, at = [], 8
    while at < len(data):
        length = struct.unpack(">I", data[at:at + 4])[0]
        kind, body = data[at + 4:at + 8], data[at + 8:at + 8 + length]
        assert struct.unpack(">I", data[at + 8 + length:at + 12 + length])[0] == zlib.crc32(kind + body)
        found.append((kind, body))
        at += 12 + length
    return found


def test_variants_change_the_bytes_and_keep_the_pixels():
    photo = png(3, size=4)
    first, second = image_variant(photo, "probe 1"), image_variant(photo, "probe 2")
    assert len({photo, first, second}) == 3
    pixels = [(kind, body) for kind, body in chunks(photo) if kind != b"tEXt"]
    assert [(kind, body) for kind, body in chunks(first) if kind != b"tEXt"] == pixels
    assert (b"tEXt", b"Comment\x00probe 1") in chunks(first)

    photo = jpeg(5)
    varied = image_variant(photo, "probe 1")
    assert varied.startswith(b"\xff\xd8\xff\xfe\x00\x09probe 1") and varied.endswith(photo[2:])
    for other in (bmp(1), GIF):
        with pytest.raises(DoctorError, match="JPEG or PNG"):
            image_variant(other, "x")
    with pytest.raises(DoctorError, match="needs a photo"):
        read_photos([])


def doctor(server, *args: str) -> subprocess.CompletedProcess:
    return run_facesync("doctor", "--target", server.base_url, *args, env=server.env(), timeout=180)


def scratch_groups(server) -> list[str]:
    with LocalLibrary(server.db) as library:
        return [g for g in library.group_getlist(0, 1000).ids if g.startswith(SCRATCH_PREFIX)]


def made_and_removed(server) -> tuple[set[str], set[str]]:
    journal = server.journal()
    made = {e["params"]["group_id"] for e in journal if e["endpoint"] == "faceset/group/add" and e["error_code"] == 0}
    removed = {e["params"]["group_id"] for e in journal if e["endpoint"] == "faceset/group/delete"
               and e["error_code"] == 0}
    return made, removed


@pytest.fixture
def photo() -> str:
    """A real face: the server finds it in every varied copy (--detect-faces), so the pixels are unchanged."""
    return os.path.join(os.path.dirname(__file__), "photos", "face_a.jpg")


def test_lenient_and_harsh_reports_differ_exactly_where_the_variants_do(serve, photo):
    reports = {}
    for variant in ("lenient", "harsh"):
        server = serve("--unknowns", variant, "--detect-faces")
        done = doctor(server, "--image", photo, "--format", "json")
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["calls"] < 100 and report["scratch_groups_removed"]
        made, removed = made_and_removed(server)
        assert set(report["scratch_groups"]) >= made and made <= removed and scratch_groups(server) == []
        reports[variant] = {row["key"]: row for row in report["findings"]}
    lenient, harsh = reports["lenient"], reports["harsh"]
    assert lenient.keys() == harsh.keys()
    differing = {key for key in lenient if lenient[key]["observed"] != harsh[key]["observed"]}
    assert differing == VARIANT_ROWS
    assert {lenient[key]["matches"] for key in VARIANT_ROWS} == {"lenient"}
    assert {harsh[key]["matches"] for key in VARIANT_ROWS} == {"harsh"}
    for rows in (lenient, harsh):
        assert [key for key, row in rows.items() if row["matches"] == "not observed"] == ["background_delete"]
        assert rows["face_cap"]["observed"].startswith("face 21 refused: 222208")
        assert rows["copy_into_existing"]["observed"].startswith("refused: 223102")
        assert {rows[key]["matches"] for key in ("face_cap", "copy_into_existing", "copy_linked", "list_order")} \
            == {"as assumed"}
        assert rows["qps"]["observed"].startswith("all 8 answered")
    assert harsh["implicit_group"]["observed"] == "creates the group"  # and that group was removed too


def test_text_report_names_each_row_and_the_calls_spent(serve, photo):
    server = serve()
    done = doctor(server, "--image", photo)
    assert done.returncode == 0, done.stderr
    assert "user/update without user_info" in done.stdout and "what facesync does about it" in done.stdout
    assert "calls of a budget of 100" in done.stdout and "removed" in done.stdout
    assert scratch_groups(server) == []


def test_without_a_photo_the_error_says_what_to_pass(serve):
    server = serve()
    done = doctor(server)
    assert done.returncode == 1 and "--image FILE" in done.stderr and "Traceback" not in done.stderr
    assert server.journal() == []  # nothing was touched


def test_a_local_library_that_does_not_exist_is_refused_not_created(tmp_path, photo):
    missing = tmp_path / "nothing.db"
    done = run_facesync("doctor", "--target", f"local:{missing}", "--image", photo)
    assert done.returncode == 1 and "does not exist" in done.stderr and not missing.exists()


def test_a_failure_midway_still_removes_the_scratch_groups(serve, photo, tmp_path):
    faults = tmp_path / "faults.yaml"
    faults.write_text(yaml.safe_dump({"faults": [
        {"kind": "error", "rate": 1.0, "codes": [17], "endpoints": ["faceset/user/copy"]}]}))
    server = serve("--faults", str(faults))
    done = doctor(server, "--image", photo)
    assert done.returncode == 1 and "17" in done.stderr and "Traceback" not in done.stderr
    made, removed = made_and_removed(server)
    assert len(made) == 2 and made <= removed and scratch_groups(server) == []


def test_sigterm_midway_still_removes_the_scratch_groups(serve, photo):
    server = serve("--latency-ms", "100")
    process = subprocess.Popen([sys.executable, "-m", "facesync", "doctor", "--target", server.base_url,
                                "--image", photo], env=server.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not any(e["endpoint"] == "faceset/user/add" for e in server.journal()) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "Traceback" not in stderr, stderr  # interrupted, not finished
    made, removed = made_and_removed(server)
    assert made and made <= removed and scratch_groups(server) == []


def test_the_qps_limit_is_observed_with_one_burst(serve, tmp_path):
    server = serve("--qps", "3")
    with LocalLibrary(str(tmp_path / "lib.db")) as library:
        report = examine(library, [png(12, size=4)], burst=lambda: BaiduClient(
            server.base_url, server.api_key, server.secret_key, qps=None, max_attempts=1, max_elapsed=0))
    qps = next(f for f in report.findings if f.key == "qps")
    assert "refused with 18" in qps.observed and "below 8 calls/s" in qps.observed
    assert report.removed and report.calls < 100
