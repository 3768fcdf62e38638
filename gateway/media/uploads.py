"""An upload's way in: stream the body to a spool file, inspect it, store its blobs, then its record.

The order is what keeps storage clean. The body goes to an anonymous temporary file (it has no
name, so an interrupted upload or a crash leaves nothing); only an upload that passes inspection
reaches the blob store (the inspection worker writes it there, atomically); its record is written
only once its blobs are durable, and if the record cannot be written, or the worker died
mid-way, the blobs are removed again. The record's write and that removal run shielded from
cancellation, so a client that goes away cannot leave a blob without its row.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
import time
from functools import partial
from typing import AsyncIterable, BinaryIO

import trio

from ..model import AddAttachment, Attachment, Conversation, DeleteAttachment
from ..store.writer import Store
from .blobs import BlobStore
from .errors import MediaError
from .inspection import Inspector, Keep, check_size
from .stats import MediaStats

log = logging.getLogger("kefu.media")

_SPOOL_WRITE = 256 * 1024  # body bytes gathered before one write to the spool file
NAME_CHARS = 256


def new_attachment_id() -> str:
    """Time-ordered like conversation ids, with 64 random bits: not guessable."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def blob_key(attachment_id: str) -> str:
    return f"{attachment_id[-2:]}/{attachment_id}"


def thumbnail_key(attachment_id: str) -> str:
    return f"{attachment_id[-2:]}/{attachment_id}.thumb"


def display_key(attachment_id: str) -> str:
    return f"{attachment_id[-2:]}/{attachment_id}.display"


def blob_keys(attachment_id: str) -> tuple[str, str, str]:
    """Every blob an attachment may have: its file, its thumbnail, its display copy."""
    return blob_key(attachment_id), thumbnail_key(attachment_id), display_key(attachment_id)


def attachment_of(key: str) -> str | None:
    """The attachment id a blob key belongs to (its file, its thumbnail or its display copy), or
    None for a key these uploads did not make."""
    shard, _, name = key.partition("/")
    attachment_id = name.removesuffix(".thumb").removesuffix(".display")
    if not attachment_id or "/" in attachment_id or shard != attachment_id[-2:]:
        return None
    return attachment_id


def clean_name(name: str) -> str:
    """The uploader's file name, for display: no path, no control characters, bounded."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:NAME_CHARS]


class Uploads:
    def __init__(
        self, store: Store, blobs: BlobStore, inspector: Inspector, spool_dir: str | os.PathLike[str], stats: MediaStats,
        *, max_in_progress: int = 64,
    ) -> None:
        self.store = store
        self.max_in_progress = max_in_progress  # bodies being received at once; more are ``busy``
        self.blobs = blobs
        self.inspector = inspector
        self.spool_dir = os.fspath(spool_dir)
        os.makedirs(self.spool_dir, exist_ok=True)
        self.stats = stats

    async def receive(self, conv: Conversation, uploader: str, kind: str, body: AsyncIterable[bytes], *, name: str = "") -> Attachment:
        """Store the upload ``body`` as an attachment of ``conv``; raises MediaError when it is
        refused, and lets the body's own errors (a client gone) through. Either way nothing stays."""
        limits = self.inspector.limits
        limits.rule(kind)  # unknown_kind before a byte is read
        if self.stats.uploads_in_progress >= self.max_in_progress:
            self.stats.refused["busy"] += 1
            raise MediaError("busy", "too many uploads in progress; retry shortly")
        self.stats.uploads_in_progress += 1
        spool: BinaryIO = await trio.to_thread.run_sync(partial(tempfile.TemporaryFile, dir=self.spool_dir))
        attachment_id = new_attachment_id()
        where = Keep(self.blobs, *blob_keys(attachment_id))
        recorded = False
        maybe_stored = False  # blobs may exist under ``where``: removed again unless the record is written
        try:
            size = await self._spool(kind, body, spool)
            maybe_stored = True
            found = await self.inspector.inspect(kind, spool, size, where)
            attachment = Attachment(
                id=attachment_id,
                tenant=conv.tenant,
                conv_id=conv.id,
                uploader=uploader,
                kind=kind,
                content_type=found.content_type,
                size=size,
                created_at=time.time_ns() // 1_000_000,
                name=clean_name(name),
                width=found.width,
                height=found.height,
                duration_ms=found.duration_ms,
                thumbnail_size=None if found.thumbnail is None else len(found.thumbnail),
            )
            with trio.CancelScope(shield=True):
                await self.store.execute(AddAttachment(attachment))
            recorded = True
        except MediaError as exc:
            if exc.code not in ("inspection_failed", "storage_failed"):
                maybe_stored = False  # refused before anything was stored
            self.stats.refused[exc.code] += 1
            log.info("upload refused: %s (%s) kind=%s tenant=%s", exc.code, exc.message, kind, conv.tenant)
            raise
        finally:
            self.stats.uploads_in_progress -= 1
            with trio.CancelScope(shield=True):
                if maybe_stored and not recorded:
                    await self._remove(where)
                await trio.to_thread.run_sync(spool.close)
        self.stats.uploads[kind] += 1
        self.stats.upload_bytes[kind] += size
        return attachment

    async def _remove(self, where: Keep) -> None:
        """Remove what an upload that got no record may have stored (the sweep catches what this misses)."""
        for key in (where.key, where.thumbnail_key, where.display_key):
            try:
                await trio.to_thread.run_sync(self.blobs.delete, key)
            except OSError as exc:  # left for an operator and the sweep: logged with its key
                log.error("could not remove blob %s of a failed upload: %s", key, exc)

    async def _spool(self, kind: str, body: AsyncIterable[bytes], spool: BinaryIO) -> int:
        size = 0
        pending: list[bytes] = []
        pending_bytes = 0
        async for chunk in body:
            size += len(chunk)
            check_size(kind, size, self.inspector.limits)  # stop reading as soon as it is too large
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= _SPOOL_WRITE:
                await trio.to_thread.run_sync(spool.write, b"".join(pending))
                pending, pending_bytes = [], 0
        if pending:
            await trio.to_thread.run_sync(spool.write, b"".join(pending))
        await trio.to_thread.run_sync(spool.flush)
        return size

    def spool_blob(self, key: str) -> BinaryIO:
        """A spool file holding the stored blob ``key`` (blocking): what a worker reads by its file
        descriptor, whatever the blob store (raises BlobNotFound)."""
        spool = tempfile.TemporaryFile(dir=self.spool_dir)
        try:
            offset = 0
            while chunk := self.blobs.read(key, offset, _SPOOL_WRITE):
                spool.write(chunk)
                offset += len(chunk)
            spool.flush()
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool

    async def discard(self, attachment: Attachment) -> None:
        """Remove an attachment's record, then its blobs (a reader never finds a record without bytes)."""
        await self.store.execute(DeleteAttachment(attachment.id))
        for key in blob_keys(attachment.id):
            await trio.to_thread.run_sync(self.blobs.delete, key)

    async def sweep(self, *, older_than_s: float = 3600.0, batch: int = 500) -> int:
        """Remove blobs that no record refers to, or whose record is marked deleted, and that are
        older than ``older_than_s``: what a crash between a blob's write and its record's leaves,
        or a deletion whose blob removal failed. Younger blobs are left alone, since
        their record may be being written (here or on another node sharing the blob store).
        Returns how many were removed."""
        cutoff = time.time() - older_than_s
        listing = iter(self.blobs.keys())
        removed = 0
        while True:
            keys = await trio.to_thread.run_sync(lambda: [k for _, k in zip(range(batch), listing)])
            if not keys:
                return removed
            for key, stored in keys:
                attachment_id = attachment_of(key)
                if stored > cutoff or attachment_id is None:
                    continue
                record = await self.store.get_attachment(attachment_id)
                if record is None or record.deleted_at is not None:
                    await trio.to_thread.run_sync(self.blobs.delete, key)
                    removed += 1
                    log.warning("removed blob %s: %s", key, "no attachment record refers to it" if record is None else "its attachment was deleted")
