"""``facesync validate`` as a user runs it: a real process, its exit code and what it prints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.cli import run_facesync
from tests.support.images import png

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart" / "faceset.yaml"


def validate(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_facesync("validate", *args, cwd=cwd)


def test_good_manifest_exits_0_with_a_summary():
    result = validate(str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "manifest OK: 2 groups, 5 users, 7 faces"


def test_bad_manifest_exits_1_listing_every_error_without_traceback(tmp_path):
    (tmp_path / "faceset.yaml").write_text(
        "version: 1\ngroups:\n  staff:\n    users:\n      alice:\n        imges: [a.png]\n      bo b:\n"
        "        images: []\n")
    result = validate("faceset.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "faceset.yaml:6:9: error: unknown key 'imges' (at groups.staff.users.alice.imges)"
    assert lines[1] == "  hint: did you mean 'images'?"
    assert "faceset.yaml:8:17: error: images must not be empty" in result.stderr
    # a bad id is reported with the structure errors, though the content checks that find it never ran
    assert "faceset.yaml:7:7: error: invalid user_id 'bo b': only A-Z, a-z, 0-9 and _ are allowed" in result.stderr
    assert lines[-1] == "manifest invalid: 3 errors"


def test_json_format_is_machine_readable(tmp_path):
    (tmp_path / "faceset.yaml").write_text("version: 1\ngroups:\n  g:\n    users:\n      u:\n"
                                           "        images: [missing.png]\n")
    result = validate("--format", "json", "faceset.yaml", cwd=tmp_path)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    assert [(d["line"], d["column"], d["path"]) for d in report["diagnostics"]] == [
        (6, 18, "groups.g.users.u.images[0]")]
    ok = json.loads(validate("--format", "json", str(EXAMPLE)).stdout)
    assert ok == {"manifest": str(EXAMPLE), "valid": True, "summary": {"groups": 2, "users": 5, "faces": 7},
                  "diagnostics": []}


def test_several_manifests_are_all_checked_and_any_bad_one_fails(tmp_path):
    (tmp_path / "bad.yaml").write_text("version: 1\ngroups:\n  g:\n    users:\n      u:\n"
                                       "        images: [missing.png]\n")
    result = validate("--format", "json", str(EXAMPLE), str(tmp_path / "bad.yaml"), cwd=tmp_path)
    assert result.returncode == 1
    reports = json.loads(result.stdout)
    assert [(r["manifest"], r["valid"]) for r in reports] == [(str(EXAMPLE), True), (str(tmp_path / "bad.yaml"), False)]
    text = validate(str(EXAMPLE), str(tmp_path / "bad.yaml"), cwd=tmp_path)
    assert text.returncode == 1
    assert "manifest OK" in text.stdout and "bad.yaml:6:18: error:" in text.stderr


def test_every_error_of_every_kind_comes_in_one_run(tmp_path):
    """A duplicate key, structure errors, bad ids inside a broken mapping and missing files: all at once."""
    (tmp_path / "a.png").write_bytes(png(1))
    (tmp_path / "faceset.yaml").write_text(
        "version: 1\n"
        "groups:\n"
        "  staff:\n"
        "    users:\n"
        "      alice:\n"
        "        images: [a.png]\n"
        "      alice:\n"                      # 7: duplicate key
        "        images: [a.png]\n"
        "      bob-smith:\n"                  # 9: bad id, in a mapping with structure errors
        "        images: [a.png]\n"
        "      carol:\n"
        "        imagez: [a.png]\n"           # 12: unknown key
        "      dave:\n"
        "        images: [missing.png]\n"     # 14: a file error, found by the content pass
        "      erin:\n"
        "        images: [a.png]\n"
        "        quality_control: MEDIUM\n"   # 17: not one of the levels
        "people:\n"
        "  frank-o:\n"                        # 19: bad id of a person with its own structure error
        "    groups: staff\n"                 # 20: not a list
        "    images: [a.png]\n"
        "  gina:\n"
        "    groups: [nowhere]\n"             # 23: group not defined
        "    images: [gone.png]\n"            # 24: missing file
        "policy:\n"
        "  prune: yes please\n")              # 26: not a boolean
    result = validate("faceset.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    headlines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert [line.split(": error: ")[0] for line in headlines] == [
        "faceset.yaml:7:7", "faceset.yaml:9:7", "faceset.yaml:12:9", "faceset.yaml:14:18", "faceset.yaml:17:26",
        "faceset.yaml:19:3", "faceset.yaml:20:13", "faceset.yaml:22:3", "faceset.yaml:24:14", "faceset.yaml:26:10"]
    assert "duplicate key 'alice'" in headlines[0]
    assert "invalid user_id 'bob-smith'" in headlines[1]
    assert "unknown key 'imagez'" in headlines[2]
    assert "image file not found: missing.png" in headlines[3]
    assert "invalid user_id 'frank-o'" in headlines[5]
    assert "group 'nowhere' is not defined under groups" in headlines[7]
    assert result.stderr.splitlines()[-1] == "manifest invalid: 10 errors"


def test_errors_after_a_duplicate_key_in_an_included_file_are_reported(tmp_path):
    (tmp_path / "faceset.yaml").write_text("version: 1\ninclude: [team.yaml]\ngroups:\n  staff: {}\n")
    (tmp_path / "team.yaml").write_text("people:\n  ann:\n    groups: [staff]\n    images: [x.png]\n"
                                        "  ann:\n    groups: [staff]\n    images: [y.png]\n"
                                        "  bo b:\n    groups: [staff]\n    images: [z.png]\n")
    result = validate("faceset.yaml", cwd=tmp_path)
    headlines = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert [line.split(": error: ")[0] for line in headlines] == [
        "team.yaml:4:14", "team.yaml:5:3", "team.yaml:8:3", "team.yaml:10:14"]
    assert "image file not found: x.png" in headlines[0] and "duplicate key 'ann'" in headlines[1]
    assert "invalid user_id 'bo b'" in headlines[2] and "image file not found: z.png" in headlines[3]


def test_a_rule_broken_thousands_of_times_prints_a_few_and_a_count(tmp_path):
    (tmp_path / "a.png").write_bytes(png(1))
    lines = ["version: 1", "groups:"] + [f"  empty{n}: {{}}" for n in range(12)] + ["  g:", "    users:"]
    lines += [f"      {'u' * 49}{n}: {{images: [a.png]}}" for n in range(3000)]
    lines += ["      bo b: {images: [a.png]}"]
    (tmp_path / "faceset.yaml").write_text("\n".join(lines) + "\n")

    result = validate("faceset.yaml", cwd=tmp_path)
    assert result.returncode == 1
    shown = result.stderr.splitlines()
    assert sum(": error: user_id 'uuuuuuuuuuuuuuuuuuuu'... is 50 bytes long" in line for line in shown) == 10
    assert "... and 2,990 more errors of this kind: user_id … is … bytes long; the limit is … " \
           "(facesync -v validate, or --format json, lists every one)" in shown
    assert "... and 2 more warnings of this kind: group … has no users " \
           "(facesync -v validate, or --format json, lists every one)" in shown
    assert sum("invalid user_id 'bo b'" in line for line in shown) == 1  # another kind: shown in full
    assert shown[-1] == "manifest invalid: 3001 errors"
    assert len(shown) < 60

    everything = run_facesync("-v", "validate", "faceset.yaml", cwd=tmp_path)
    assert sum(": error: user_id " in line for line in everything.stderr.splitlines()) == 3000
    report = json.loads(validate("--format", "json", "faceset.yaml", cwd=tmp_path).stdout)
    assert sum(d["severity"] == "error" for d in report["diagnostics"]) == 3001
    assert sum(d["severity"] == "warning" for d in report["diagnostics"]) == 13  # 12 empty groups, 1 shared photo
