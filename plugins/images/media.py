"""A content-addressed media store on disk, with an index of who owns what.

Bytes live at ``<media_dir>/ab/cdef…`` where ``abcdef…`` is their SHA-256,
so the same picture sent twice is stored once. A small SQLite index records
each file's type and dimensions, its thumbnail, and which users own it: a
file is deleted when its last owner is forgotten.

Writes run inside an ``IMMEDIATE`` SQLite transaction, which serialises
them across threads and processes (several bot instances may share one
media directory), so a file cannot be deleted between another writer's
index row and its bytes. Every method blocks: call them through
``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS media (
    sha256 TEXT PRIMARY KEY,
    content_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    thumbnail TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS owners (
    sha256 TEXT NOT NULL,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (sha256, user_id)
);
CREATE INDEX IF NOT EXISTS owners_user ON owners (user_id);
"""


@dataclass(slots=True)
class MediaItem:
    sha256: str
    content_type: str
    size: int
    width: int | None
    height: int | None
    thumbnail: str | None
    kind: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_sha256(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class MediaStore:
    """Files by SHA-256 under ``root``, plus the ownership index."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "index.sqlite3", timeout=30, check_same_thread=False,
                                   isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # Forgotten ownership rows are overwritten, not left in free pages.
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def path_for(self, sha256: str) -> Path:
        if not _is_sha256(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256[2:]

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _write_file(self, sha256: str, data: bytes) -> None:
        path = self.path_for(sha256)
        if path.is_file() and path.stat().st_size == len(data):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def put(self, data: bytes, *, owner: str, content_type: str, width: int | None = None,
            height: int | None = None, thumbnail: bytes | None = None, kind: str = "upload",
            now: float = 0.0) -> str:
        """Store ``data`` (and its thumbnail) for ``owner``; return its SHA-256."""
        sha = hashlib.sha256(data).hexdigest()
        thumb_sha = hashlib.sha256(thumbnail).hexdigest() if thumbnail else None
        with self._write() as db:
            if thumbnail is not None and thumb_sha is not None:
                self._write_file(thumb_sha, thumbnail)
                db.execute(
                    "INSERT OR IGNORE INTO media (sha256, content_type, size, created_at) VALUES (?, 'image/png', ?, ?)",
                    (thumb_sha, len(thumbnail), now),
                )
            self._write_file(sha, data)
            db.execute(
                "INSERT OR IGNORE INTO media (sha256, content_type, size, width, height, thumbnail, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sha, content_type, len(data), width, height, thumb_sha, now),
            )
            if thumb_sha:
                db.execute("UPDATE media SET thumbnail = ? WHERE sha256 = ? AND thumbnail IS NULL", (thumb_sha, sha))
            db.execute(
                "INSERT OR IGNORE INTO owners (sha256, user_id, kind, created_at) VALUES (?, ?, ?, ?)",
                (sha, owner, kind, now),
            )
        return sha

    def get(self, sha256: str) -> bytes | None:
        """The bytes stored under ``sha256``, or ``None``."""
        try:
            return self.path_for(sha256).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def thumbnail(self, sha256: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT thumbnail FROM media WHERE sha256 = ?", (sha256,)).fetchone()
        return self.get(row[0]) if row and row[0] else None

    def owned_by(self, user_id: str) -> list[MediaItem]:
        """Everything ``user_id`` owns, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT m.sha256, m.content_type, m.size, m.width, m.height, m.thumbnail, o.kind, o.created_at"
                " FROM owners o JOIN media m ON m.sha256 = o.sha256 WHERE o.user_id = ?"
                " ORDER BY o.created_at, m.sha256",
                (user_id,),
            ).fetchall()
        return [MediaItem(*row) for row in rows]

    def owners_of(self, sha256: str) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT user_id FROM owners WHERE sha256 = ? ORDER BY user_id", (sha256,)).fetchall()
        return [r[0] for r in rows]

    def forget(self, user_id: str) -> dict[str, int]:
        """Drop ``user_id``'s ownership; delete files nobody owns any more
        (and their thumbnails). Returns what was deleted."""
        deleted_files = 0
        with self._write() as db:
            shas = [r[0] for r in db.execute("SELECT sha256 FROM owners WHERE user_id = ?", (user_id,))]
            db.execute("DELETE FROM owners WHERE user_id = ?", (user_id,))
            for sha in shas:
                if db.execute("SELECT 1 FROM owners WHERE sha256 = ? LIMIT 1", (sha,)).fetchone():
                    continue
                row = db.execute("SELECT thumbnail FROM media WHERE sha256 = ?", (sha,)).fetchone()
                db.execute("DELETE FROM media WHERE sha256 = ?", (sha,))
                deleted_files += self._unlink(sha)
                thumb = row[0] if row else None
                if thumb and not db.execute(
                    "SELECT 1 FROM media WHERE thumbnail = ? UNION SELECT 1 FROM owners WHERE sha256 = ? LIMIT 1",
                    (thumb, thumb),
                ).fetchone():
                    db.execute("DELETE FROM media WHERE sha256 = ?", (thumb,))
                    deleted_files += self._unlink(thumb)
        with self._lock:
            # The write-ahead log still holds the rows as they were.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return {"images": len(shas), "image_files": deleted_files}

    def _unlink(self, sha256: str) -> int:
        try:
            self.path_for(sha256).unlink()
        except FileNotFoundError:
            return 0
        return 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            files = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM media").fetchone()
            owners = self._db.execute("SELECT COUNT(DISTINCT user_id) FROM owners").fetchone()
        return {"files": files[0], "bytes": files[1], "owners": owners[0]}
