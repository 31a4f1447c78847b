"""The application layer and the library lifecycle under it: Session, close(), observers, identity."""

from __future__ import annotations

import pytest

from facesync.api.baidu import BaiduClient
from facesync.api.errors import GroupExistsError
from facesync.api.protocol import CallRecord, Endpoint, FaceLibrary, Image
from facesync.errors import PlanStaleError
from facesync.local.store import LocalLibrary, LocalStoreError
from facesync.session import Session
from facesync.targets import EMPTY, open_target, parse_target
from tests.support import images


def write_manifest(root, users: dict[str, int]) -> str:
    (root / "faces").mkdir(exist_ok=True)
    lines = ["version: 1", "groups:", "  staff:", "    users:"]
    for user_id, seed in users.items():
        (root / "faces" / f"{user_id}.png").write_bytes(images.png(seed))
        lines.append(f"      {user_id}: {{images: [faces/{user_id}.png]}}")
    path = root / "faceset.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_every_library_kind_reports_its_calls_to_its_observers_and_closes_in_a_with_block(tmp_path, serve):
    server = serve()
    with BaiduClient(server.base_url, server.api_key, server.secret_key, qps=None) as client, \
            LocalLibrary(str(tmp_path / "local.db")) as local:
        for library in (client, local):
            assert isinstance(library, FaceLibrary)
            records: list[CallRecord] = []
            library.observers.append(records.append)
            library.group_add("staff")
            with pytest.raises(GroupExistsError):
                library.group_add("staff")
            assert [(r.endpoint, r.error_code) for r in records] == [
                (Endpoint.GROUP_ADD, 0), (Endpoint.GROUP_ADD, 223101)]
            assert records[0].log_id is not None and all(r.attempt == 1 for r in records)
    with pytest.raises(LocalStoreError, match="is closed"):
        local.group_getlist()


def test_a_library_that_does_not_exist_yet_reports_its_empty_answers_then_the_created_ones(tmp_path):
    path = tmp_path / "later.db"
    with open_target(parse_target(f"local:{path}"), if_missing=EMPTY) as library:
        records: list[CallRecord] = []
        library.observers.append(records.append)
        assert library.group_getlist().ids == ()
        assert not path.exists()
        library.group_add("staff")
        assert path.exists()
        assert library.group_getlist().ids == ("staff",)
    assert [(r.endpoint, r.error_code) for r in records] == [
        (Endpoint.GROUP_GETLIST, 0), (Endpoint.GROUP_ADD, 0), (Endpoint.GROUP_GETLIST, 0)]


def test_reading_a_remote_identity_makes_no_call_and_opening_the_target_learns_the_app(serve, monkeypatch):
    server = serve()
    client = BaiduClient(server.base_url, server.api_key, server.secret_key, qps=None)
    server.reset()
    assert client.identity == f"{server.base_url} app unknown"
    assert server.stats()["total"] == 0
    client.close()

    monkeypatch.setenv("BAIDU_API_KEY", server.api_key)
    monkeypatch.setenv("BAIDU_SECRET_KEY", server.secret_key)
    with Session(server.base_url) as session:
        assert session.identity == f"{server.base_url} app {server.app_id}"


def test_a_session_plans_applies_with_progress_and_refuses_a_plan_the_library_moved_under(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "cache"))
    manifest = write_manifest(tmp_path, {"alice": 1, "bob": 2})
    target = f"local:{tmp_path / 'library.db'}"
    with Session(target, progress=False) as session:
        plan = session.plan(manifest)
        assert [(op.kind.value, op.user_id) for op in plan.operations] == [
            ("create_group", None), ("add_face", "alice"), ("add_face", "bob")]
        seen: list[str] = []
        result = session.apply(plan, on_result=lambda r: seen.append(f"{r.outcome} {r.operation.kind.value}"))
        assert result.ok and result.plan is not None and result.plan.operations == plan.operations
        assert sorted(seen) == ["done add_face", "done add_face", "done create_group"]
        assert session.plan(manifest).empty

        write_manifest(tmp_path, {"alice": 1, "bob": 2, "carol": 3})
        growing = session.plan(manifest)
        session.library.user_add("staff", "carol", Image.from_bytes(images.png(3)))  # behind the plan's back
        with pytest.raises(PlanStaleError, match="changed since this plan was made"):
            session.apply(growing)
