"""The content-addressed media store and its ownership index."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from plugins.images.media import MediaStore


def test_files_are_stored_by_hash_and_deduplicated(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    data = b"\x89PNG pretend"
    sha = hashlib.sha256(data).hexdigest()
    assert store.put(data, owner="alice", content_type="image/png", now=1.0) == sha
    assert store.put(data, owner="bob", content_type="image/png", now=2.0) == sha
    assert (tmp_path / sha[:2] / sha[2:]).read_bytes() == data
    assert store.get(sha) == data
    assert store.owners_of(sha) == ["alice", "bob"]
    assert store.stats()["files"] == 1


def test_forget_keeps_files_someone_else_still_owns(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    shared = store.put(b"shared", owner="alice", content_type="image/png", thumbnail=b"thumb-shared")
    own = store.put(b"alices only", owner="alice", content_type="image/jpeg", thumbnail=b"thumb-own")
    store.put(b"shared", owner="bob", content_type="image/png")

    result = store.forget("alice")

    assert result == {"images": 2, "image_files": 2}  # her file and its thumbnail
    assert store.get(own) is None and store.thumbnail(own) is None
    assert store.get(shared) == b"shared" and store.thumbnail(shared) == b"thumb-shared"
    assert store.owned_by("alice") == []
    assert [item.sha256 for item in store.owned_by("bob")] == [shared]
    assert store.forget("bob") == {"images": 1, "image_files": 2}
    assert store.stats() == {"files": 0, "bytes": 0, "owners": 0}
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.startswith("index.sqlite3")]
    assert leftovers == []


def test_index_survives_reopening(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    sha = store.put(b"kept", owner="carol", content_type="image/png", width=3, height=4, kind="generated", now=5.0)
    store.close()
    again = MediaStore(tmp_path)
    [item] = again.owned_by("carol")
    assert (item.sha256, item.width, item.height, item.kind, item.created_at) == (sha, 3, 4, "generated", 5.0)


def test_paths_only_for_real_hashes(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    with pytest.raises(ValueError):
        store.path_for("../../etc/passwd")
    assert store.get("../../etc/passwd") is None
