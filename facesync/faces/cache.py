"""What the detector saw in each image, by content hash, so a second check of the same photos is free.

Kept in ``faces.sqlite3`` in the cache folder beside the token cache (same place, same rules: SQLite in
WAL mode, so every write is atomic and several runs can share it; a damaged file is moved aside and
rebuilt; an unwritable folder degrades to memory). The key holds the detector's version and settings,
so upgrading OpenCV or changing a setting checks every photo again. The judgement (``rules.py``) is
not cached: changing a rule needs no new detection.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from facesync.cache import _Store, cache_dir
from facesync.faces.rules import FaceBox, FaceScan

FACES_NAME = "faces.sqlite3"
_SCHEMA = (("CREATE TABLE IF NOT EXISTS scans (sha256 TEXT NOT NULL, detector TEXT NOT NULL, scan TEXT NOT NULL,"
            " PRIMARY KEY (sha256, detector))"),)


class ScanCache:
    def __init__(self, path: str | os.PathLike, detector: str):
        self._store = _Store(path, _SCHEMA)
        self._detector = detector

    @classmethod
    def default(cls, detector: str, directory: str | os.PathLike | None = None) -> ScanCache:
        return cls(Path(directory if directory is not None else cache_dir()) / FACES_NAME, detector)

    def get(self, sha256: str) -> FaceScan | None:
        text = self._store.one("SELECT scan FROM scans WHERE sha256 = ? AND detector = ?", (sha256, self._detector))
        if text is None:
            return None
        try:
            raw = json.loads(text)
            return FaceScan(raw["width"], raw["height"], tuple(FaceBox(*box) for box in raw["faces"]),
                            raw["smallest_findable"], raw["decodable"])
        except (ValueError, KeyError, TypeError):
            return None  # written by another version: scan again and overwrite

    def put(self, sha256: str, scan: FaceScan) -> None:
        text = json.dumps({"width": scan.width, "height": scan.height,
                           "faces": [[b.left, b.top, b.width, b.height] for b in scan.faces],
                           "smallest_findable": scan.smallest_findable, "decodable": scan.decodable})
        self._store.write("INSERT OR REPLACE INTO scans (sha256, detector, scan) VALUES (?, ?, ?)",
                          (sha256, self._detector, text))

    def close(self) -> None:
        self._store.close()
