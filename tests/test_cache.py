"""The token cache: its place, its two kinds of facts, sharing between processes, and corruption."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap

from facesync.cache import TokenCache, cache_dir, cache_path


def test_place_follows_the_documented_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FACESYNC_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "facesync"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "facesync"
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"


def test_one_file_per_target_named_by_a_hash_of_its_identity(tmp_path):
    first = cache_path("http://127.0.0.1:8000 app 1", tmp_path)
    assert first == cache_path("http://127.0.0.1:8000 app 1", tmp_path)
    assert first != cache_path("local:/tmp/library.db", tmp_path)
    assert "127.0.0.1" not in first.name and first.parent == tmp_path


def test_remembers_tokens_urls_and_file_hashes_across_opens(tmp_path):
    with TokenCache.for_target("t", tmp_path) as cache:
        cache.record("a" * 64, "f" * 32)
        cache.record_url("https://example.com/x.png", "e" * 32)
        cache.record_file(str(tmp_path / "x.png"), 10, 123, "b" * 64)
    with TokenCache.for_target("t", tmp_path) as cache:
        assert cache.token("a" * 64) == "f" * 32
        assert cache.token("c" * 64) is None
        assert cache.url_token("https://example.com/x.png") == "e" * 32
        assert cache.file_sha256(str(tmp_path / "x.png"), 10, 123) == "b" * 64
        assert cache.file_sha256(str(tmp_path / "x.png"), 10, 124) is None  # touched: hash again
        assert cache.file_sha256(str(tmp_path / "x.png"), 11, 123) is None
    with TokenCache.for_target("another target", tmp_path) as cache:
        assert cache.token("a" * 64) is None


def test_a_corrupt_file_is_rebuilt_not_fatal(tmp_path, caplog):
    path = cache_path("t", tmp_path)
    path.write_bytes(b"this is not a database at all" * 100)
    with TokenCache(path) as cache:
        assert cache.token("a" * 64) is None
        cache.record("a" * 64, "f" * 32)
        assert cache.path == str(path)
    with TokenCache(path) as cache:
        assert cache.token("a" * 64) == "f" * 32
    assert "rebuilding" in caplog.text


def test_a_cache_damaged_while_open_is_rebuilt(tmp_path):
    path = cache_path("t", tmp_path)
    with TokenCache(path) as cache:
        cache.record("a" * 64, "f" * 32)
        other = sqlite3.connect(path)
        other.execute("DROP TABLE tokens")
        other.close()
        assert cache.token("a" * 64) is None  # answered, not raised
        cache.record("b" * 64, "e" * 32)
        assert cache.token("b" * 64) == "e" * 32


def test_an_unwritable_place_degrades_to_memory(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with TokenCache(blocker / "sub" / "tokens.sqlite3") as cache:
        cache.record("a" * 64, "f" * 32)
        assert cache.token("a" * 64) == "f" * 32
    assert "in memory" in caplog.text


def test_two_processes_write_one_cache_at_once(tmp_path):
    path = cache_path("shared", tmp_path)
    TokenCache(path).close()
    script = textwrap.dedent("""
        import sys
        from facesync.cache import TokenCache
        path, tag = sys.argv[1], sys.argv[2]
        cache = TokenCache(path)
        for i in range(200):
            cache.record(f"{tag}{i:063d}", f"{tag}{i:031d}")
        cache.close()
    """)
    workers = [subprocess.Popen([sys.executable, "-c", script, str(path), tag]) for tag in ("a", "b")]
    assert [worker.wait(60) for worker in workers] == [0, 0]
    with TokenCache(path) as cache:
        assert cache.path == str(path)
        for tag in ("a", "b"):
            assert all(cache.token(f"{tag}{i:063d}") == f"{tag}{i:031d}" for i in range(200))
