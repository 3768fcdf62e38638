"""Where attachment bytes live: a small blocking interface and its filesystem default.

Like the store's backends, a blob store is blocking on purpose (file I/O, an S3 client's
synchronous calls) and never sees Trio: callers run it in worker threads. A store promises:

- ``put`` is atomic: when it returns the blob is durable and whole; when it raises, nothing is
  visible under the key (an existing blob under the key is either kept or wholly replaced).
- ``read`` returns exactly the bytes asked for when they exist, fewer only at the blob's end.
- keys are the ones :func:`check_key` accepts: ``/``-separated segments of ``[A-Za-z0-9._-]``,
  none empty or a dot segment, so that a key is both a safe relative path and an S3 object key.
- ``keys`` lists what is stored, so that blobs no record refers to can be found and removed.

An S3-compatible store maps these one to one: ``put`` is a PUT (atomic by nature; large blobs a
multipart upload that is aborted on failure), ``read`` a ranged GET, ``size`` a HEAD, ``keys``
a paged LIST.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO, Iterator, Protocol

_KEY = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
_COPY_CHUNK = 64 * 1024  # a put runs beside the event loop: short system calls let the kernel switch to it sooner


class BlobNotFound(KeyError):
    """No blob under the key."""


class BlobStore(Protocol):
    #: One line for logs and docs: where blobs live and what "durable" means there.
    durability: str

    def put(self, key: str, source: BinaryIO) -> int:
        """Store the rest of ``source`` (from its position to its end) under ``key``; return the
        number of bytes stored."""

    def read(self, key: str, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``offset``; raises BlobNotFound."""

    def size(self, key: str) -> int:
        """The blob's size in bytes; raises BlobNotFound."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool:
        """Remove the blob; False when there was none."""

    def keys(self) -> Iterator[tuple[str, float]]:
        """Every stored key with the time it was stored (seconds since the epoch), in no order."""


def check_key(key: str) -> str:
    if type(key) is not str or len(key) > 512 or not _KEY.fullmatch(key):
        raise ValueError(f"not a blob key: {key!r}")
    return key


class FilesystemBlobStore:
    """Blobs as files under ``root``: each written to a temporary file in ``root/.tmp``, fsynced,
    renamed into place and its directory fsynced. A crash mid-write leaves only a temporary file,
    which the next start removes; nothing ever appears half-written under a key."""

    durability = "files fsynced before they are renamed into place: a stored blob survives power loss"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():  # temporary files of writes a crash interrupted
            leftover.unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, source: BinaryIO) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp: Path | None = self._tmp / f"{os.getpid()}-{os.urandom(8).hex()}"
        try:
            size = 0
            with open(tmp, "xb") as out:
                while chunk := source.read(_COPY_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            tmp = None
            _fsync_dir(path.parent)
            return size
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)

    def read(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        try:
            with open(self._path(key), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def keys(self) -> Iterator[tuple[str, float]]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d != self._tmp.name]
            for name in filenames:
                path = Path(dirpath) / name
                try:
                    stored = path.stat().st_mtime
                except FileNotFoundError:  # deleted meanwhile
                    continue
                yield path.relative_to(self.root).as_posix(), stored

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _fsync_dir(path.parent)
        return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
