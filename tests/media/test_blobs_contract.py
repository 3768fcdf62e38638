"""The BlobStore contract (gateway/media/blobs.py), run against every store through one factory.

A new store (an S3-compatible one) joins by adding itself to BLOB_STORES.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Callable

import pytest

from gateway.media.blobs import BlobNotFound, BlobStore, FilesystemBlobStore

BLOB_STORES: dict[str, Callable[[Path], BlobStore]] = {
    "filesystem": lambda tmp_path: FilesystemBlobStore(tmp_path / "blobs"),
}


@pytest.fixture(params=list(BLOB_STORES))
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    return BLOB_STORES[request.param](tmp_path)


class Breaks(io.RawIOBase):
    """A source that fails after ``good`` bytes: an upload interrupted mid-copy."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.left <= 0:
            raise OSError("connection reset")
        n = min(len(b), self.left, 1000)
        b[:n] = b"y" * n
        self.left -= n
        return n


def test_put_then_read_size_exists_delete(blobs: BlobStore) -> None:
    data = bytes(range(256)) * 5000  # more than one copy chunk
    assert not blobs.exists("ab/one")
    assert blobs.put("ab/one", io.BytesIO(data)) == len(data)
    assert blobs.exists("ab/one")
    assert blobs.size("ab/one") == len(data)
    assert blobs.read("ab/one", 0, len(data)) == data
    assert blobs.read("ab/one", 1000, 10) == data[1000:1010]
    assert blobs.read("ab/one", len(data) - 3, 10) == data[-3:]  # fewer only at the end
    assert blobs.read("ab/one", len(data) + 5, 10) == b""
    assert blobs.delete("ab/one") is True
    assert blobs.delete("ab/one") is False
    assert not blobs.exists("ab/one")


def test_put_stores_the_rest_of_the_source_from_its_position(blobs: BlobStore) -> None:
    source = io.BytesIO(b"headbody")
    source.read(4)
    assert blobs.put("k", source) == 4
    assert blobs.read("k", 0, 100) == b"body"


def test_keys_lists_every_blob_with_its_time(blobs: BlobStore) -> None:
    before = time.time()
    for key in ("ab/one", "ab/one.thumb", "cd/two", "top"):
        blobs.put(key, io.BytesIO(b"x"))
    listed = dict(blobs.keys())
    assert set(listed) == {"ab/one", "ab/one.thumb", "cd/two", "top"}
    assert all(before - 5 <= t <= time.time() + 5 for t in listed.values())
    blobs.delete("cd/two")
    assert set(dict(blobs.keys())) == {"ab/one", "ab/one.thumb", "top"}


def test_missing_blobs_raise_blob_not_found(blobs: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        blobs.read("nope", 0, 1)
    with pytest.raises(BlobNotFound):
        blobs.size("nope")


def test_a_failed_put_leaves_nothing(blobs: BlobStore) -> None:
    with pytest.raises(OSError):
        blobs.put("ab/broken", io.BufferedReader(Breaks(3000)))
    assert not blobs.exists("ab/broken")


def test_a_failed_put_over_an_existing_blob_keeps_the_old_one_whole(blobs: BlobStore) -> None:
    blobs.put("k", io.BytesIO(b"old contents"))
    with pytest.raises(OSError):
        blobs.put("k", io.BufferedReader(Breaks(5000)))
    assert blobs.read("k", 0, 100) == b"old contents"
    blobs.put("k", io.BytesIO(b"new"))
    assert blobs.read("k", 0, 100) == b"new"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a//b", ".hidden", "a/.tmp", "a b", "a\\b", "é", "a/", 7, "x" * 513])
def test_unsafe_keys_are_refused(blobs: BlobStore, key) -> None:
    with pytest.raises(ValueError):
        blobs.put(key, io.BytesIO(b"x"))
    with pytest.raises(ValueError):
        blobs.exists(key)


# ---- the filesystem store's own promises ----------------------------------------------------------


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_filesystem_a_failed_put_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path / "blobs")
    with pytest.raises(OSError):
        store.put("ab/broken", io.BufferedReader(Breaks(3000)))
    assert files_under(tmp_path / "blobs") == []


def test_filesystem_start_removes_temporary_files_a_crash_left(tmp_path: Path) -> None:
    FilesystemBlobStore(tmp_path / "blobs").put("ab/kept", io.BytesIO(b"kept"))
    leftover = tmp_path / "blobs" / ".tmp" / "123-deadbeef"
    leftover.write_bytes(b"half an upload")
    FilesystemBlobStore(tmp_path / "blobs")
    assert files_under(tmp_path / "blobs") == [os.path.join("ab", "kept")]
