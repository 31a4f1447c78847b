"""The SQLite layout of the local library and how a connection to it is opened.

Insertion order (which the contract promises for every listing) is the ``seq`` INTEGER PRIMARY KEY
AUTOINCREMENT of each table, so that a page of 1000 users or faces is one indexed range read.

Durability: WAL with ``synchronous=NORMAL``. A committed transaction is in the WAL file before
``COMMIT`` returns, so it survives the process being killed at any point (what an interrupted apply
meets); only an operating-system crash or power loss can lose the last commits, and a reconciler repairs
that on its next run. FULL would add an fsync to every call for no gain against a process kill.
"""

from __future__ import annotations

import sqlite3
import time

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

_DDL = """
CREATE TABLE IF NOT EXISTS groups (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id TEXT NOT NULL,
    deleting_until REAL  -- set while a large group is being deleted in the background
);
CREATE UNIQUE INDEX IF NOT EXISTS groups_by_id ON groups (group_id);
CREATE INDEX IF NOT EXISTS groups_being_deleted ON groups (deleting_until) WHERE deleting_until IS NOT NULL;
CREATE TABLE IF NOT EXISTS users (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_seq INTEGER NOT NULL REFERENCES groups (seq) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    user_info TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS users_by_group_and_id ON users (group_seq, user_id);
CREATE INDEX IF NOT EXISTS users_by_group_in_order ON users (group_seq, seq);
CREATE INDEX IF NOT EXISTS users_by_id ON users (user_id);
CREATE TABLE IF NOT EXISTS faces (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user_seq INTEGER NOT NULL REFERENCES users (seq) ON DELETE CASCADE,
    face_token TEXT NOT NULL,
    ctime TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS faces_by_user_and_token ON faces (user_seq, face_token);
CREATE INDEX IF NOT EXISTS faces_by_user_in_order ON faces (user_seq, seq);
CREATE TABLE IF NOT EXISTS known_tokens (
    face_token TEXT PRIMARY KEY
) WITHOUT ROWID;
"""


class SchemaError(Exception):
    """The file is not a facesync local library this version can use."""


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, foreign keys on."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                 check_same_thread=False)
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        _set_wal(connection)
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as error:
        connection.close()
        raise SchemaError(f"{path} is not a SQLite database ({error})") from error
    return connection


def _set_wal(connection: sqlite3.Connection) -> None:
    """Switch to WAL; another process opening the file at the same instant can hold the lock briefly."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
            continue
        if mode.lower() != "wal":
            raise SchemaError(f"cannot use WAL journal mode (got {mode})")
        return


def ensure_schema(connection: sqlite3.Connection, path: str) -> None:
    """Create the tables in an empty file; refuse a file made by something else or a newer version."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION:
        return
    if version > SCHEMA_VERSION:
        raise SchemaError(f"{path} was written by a newer facesync (schema {version}); upgrade facesync")
    connection.execute("BEGIN IMMEDIATE")
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            foreign = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN "
                "('groups', 'users', 'faces', 'known_tokens', 'sqlite_sequence') LIMIT 1").fetchone()
            if foreign:
                raise SchemaError(f"{path} is a SQLite database of something else (table {foreign[0]!r})")
            for statement in _DDL.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
