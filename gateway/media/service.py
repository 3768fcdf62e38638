"""The media feature as the HTTP API uses it: upload into a conversation, see an attachment,
sign its URLs, fetch it by token or by signed URL, delete it. Each call checks who may do it (access.py)
before anything else, and counts refusals."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import AsyncIterable

import trio

from ..model import Attachment, MarkAttachmentDeleted
from ..store.base import StoreError
from ..store.writer import Store
from .access import check_delete, check_download, check_present, check_upload
from .blobs import BlobNotFound, BlobStore, FilesystemBlobStore
from .downloads import Download, has_display_copy, plan_download
from .errors import MediaError
from .inspection import Inspector
from .kinds import MediaLimits
from .signing import UrlSigner
from .stats import MediaStats
from .uploads import Uploads, blob_key, blob_keys, display_key

log = logging.getLogger("kefu.media")


class Media:
    def __init__(
        self,
        store: Store,
        blobs: BlobStore,
        signer: UrlSigner,
        spool_dir: str | Path,
        *,
        limits: MediaLimits = MediaLimits(),
        concurrency: int = 2,
        processes: bool = True,
        cpus: frozenset[int] | None = None,
        stats: MediaStats | None = None,
    ) -> None:
        """``concurrency`` uploads are inspected at once, in worker processes (``processes``, on
        ``cpus`` when given) or threads."""
        self.store = store
        self.blobs = blobs
        self.signer = signer
        self.limits = limits
        self.stats = stats or MediaStats()
        self.uploads = Uploads(store, blobs, Inspector(limits, concurrency=concurrency, processes=processes, cpus=cpus), spool_dir, self.stats)
        self._making_display: dict[str, trio.Event] = {}  # attachment id -> set once its display copy is made (or failed)

    @classmethod
    def in_directory(cls, store: Store, root: str | Path, secret: str, **kwargs) -> Media:
        """Blobs under ``root/blobs``, uploads spooled in ``root/spool``, URLs signed with a key
        derived from the token secret."""
        root = Path(root)
        ttl_s = kwargs.pop("url_ttl_s", 300)
        return cls(store, FilesystemBlobStore(root / "blobs"), UrlSigner.derived_from(secret, ttl_s=ttl_s), root / "spool", **kwargs)

    async def run(self, *, sweep_every_s: float = 3600.0, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep blobs without a record at start and then every ``sweep_every_s``, until cancelled
        (then the inspection workers are stopped)."""
        task_status.started()
        try:
            await self._sweep_forever(sweep_every_s)
        finally:
            self.uploads.inspector.close()

    async def _sweep_forever(self, sweep_every_s: float) -> None:
        while True:
            try:
                removed = await self.uploads.sweep(older_than_s=sweep_every_s)
            except (OSError, StoreError) as exc:  # the blob store is unwell, or the store closing: next time
                log.error("blob sweep failed: %s", exc)
            else:
                if removed:
                    log.info("blob sweep removed %d blobs without a record", removed)
            await trio.sleep(sweep_every_s)

    async def _member(self, conv_id: str, user: str) -> bool:
        return any(p.user == user for p in await self.store.participants(conv_id))

    def _refused(self, exc: MediaError) -> MediaError:
        self.stats.refused[exc.code] += 1
        return exc

    async def upload(
        self, tenant: str, user: str, role: str, conv_id: str, kind: str, body: AsyncIterable[bytes], *, name: str = "", tenant_wide: bool = False
    ) -> Attachment:
        """Store ``body`` as an attachment of ``conv_id`` uploaded by ``user`` (in ``role``).
        Only those who may send there may upload, or ``tenant_wide`` (an API key acting for the
        whole tenant)."""
        conv = await self.store.get_conversation(conv_id)
        member = not tenant_wide and conv is not None and await self._member(conv_id, user)
        try:
            check_upload(conv, tenant, role, member=member, tenant_wide=tenant_wide)
        except MediaError as exc:
            raise self._refused(exc) from None
        assert conv is not None
        return await self.uploads.receive(conv, user, kind, body, name=name)

    async def visible(self, tenant: str, user: str, role: str, attachment_id: str, *, tenant_wide: bool = False) -> Attachment:
        """The attachment, if ``user`` may fetch it (a participant of its conversation, a
        supervisor of its tenant, or ``tenant_wide``: an API key of its tenant)."""
        attachment = await self.store.get_attachment(attachment_id)
        member = not tenant_wide and attachment is not None and await self._member(attachment.conv_id, user)
        try:
            return check_present(check_download(attachment, tenant, role, member=member, tenant_wide=tenant_wide))
        except MediaError as exc:
            raise self._refused(exc) from None

    async def by_signature(self, attachment_id: str, variant: str, expires: str, sig: str) -> Attachment:
        """The attachment a signed URL opens; raises MediaError (bad_signature, url_expired, not_found)."""
        try:
            self.signer.verify(attachment_id, variant, expires, sig)
            attachment = await self.store.get_attachment(attachment_id)
            if attachment is None:
                raise MediaError("not_found", "no such attachment")
            check_present(attachment)
        except MediaError as exc:
            raise self._refused(exc) from None
        return attachment

    async def delete(self, tenant: str, user: str, role: str, attachment_id: str) -> Attachment:
        """Delete the attachment as ``user`` (its uploader, a supervisor, or the tenant's
        backend: the authorization table decides): its record is marked deleted, then its blobs
        are removed. Deleting a deleted attachment again succeeds (a retried request) and removes
        whatever blob is left. Returns the attachment as marked."""
        try:
            attachment = check_delete(await self.store.get_attachment(attachment_id), tenant, user, role)
        except MediaError as exc:
            raise self._refused(exc) from None
        with trio.CancelScope(shield=True):  # a client gone mid-way leaves no record unmarked with blobs half-removed
            marked = await self.store.execute(MarkAttachmentDeleted(attachment.id, time.time_ns() // 1_000_000))
            for key in blob_keys(attachment.id):
                try:
                    await trio.to_thread.run_sync(self.blobs.delete, key)
                except OSError as exc:  # the sweep removes it later: a deleted record's blobs are swept
                    log.error("could not remove blob %s of deleted attachment %s: %s", key, attachment.id, exc)
        if attachment.deleted_at is None:
            self.stats.deletions[attachment.kind] += 1
            log.info("attachment %s deleted: kind=%s tenant=%s by=%s role=%s uploader=%s",
                     attachment.id, attachment.kind, tenant, user, role, attachment.uploader)
        return marked

    def describe(self, attachment: Attachment, content_path: str) -> dict:
        """The attachment as the API shows it, with fresh signed URLs under ``content_path``
        (the path of the attachment's content endpoint)."""
        original = self.signer.query(attachment.id, "original")
        out = {
            "id": attachment.id,
            "conversation": attachment.conv_id,
            "uploader": attachment.uploader,
            "kind": attachment.kind,
            "content_type": attachment.content_type,
            "size": attachment.size,
            "name": attachment.name,
            "created_at": attachment.created_at,
            "width": attachment.width,
            "height": attachment.height,
            "duration_ms": attachment.duration_ms,
            "url": f"{content_path}?{original}",
            "display_url": None,
            "thumbnail_url": None,
            "urls_expire_at": int(original.split("expires=", 1)[1].split("&", 1)[0]),
        }
        if attachment.kind == "image":  # what an <img> shows: the original, or its JPEG copy (HEIC)
            out["display_url"] = f"{content_path}?{self.signer.query(attachment.id, 'display')}"
        if attachment.thumbnail_size is not None:
            out["thumbnail_url"] = f"{content_path}?{self.signer.query(attachment.id, 'thumbnail')}"
        return out

    async def display_size(self, attachment: Attachment) -> int | None:
        """The size of an attachment's display copy (None when it has none, or it is missing)."""
        if not has_display_copy(attachment):
            return None
        try:
            return await trio.to_thread.run_sync(self.blobs.size, display_key(attachment.id))
        except (BlobNotFound, OSError):
            return None

    async def make_display_copy(self, attachment: Attachment) -> int | None:
        """Make the display copy an image stored before Kefu made them lacks (a HEIC photo
        uploaded before): on its first ``display`` download, in a worker like an upload, once
        however many ask at the same time. Its size, or None when it cannot be made (logged)."""
        making = self._making_display.get(attachment.id)
        if making is not None:
            await making.wait()
            return await self.display_size(attachment)
        self._making_display[attachment.id] = making = trio.Event()
        try:
            spool = await trio.to_thread.run_sync(self.uploads.spool_blob, blob_key(attachment.id))
            try:
                size = await self.uploads.inspector.make_display_copy(spool, self.blobs, display_key(attachment.id))
            finally:
                await trio.to_thread.run_sync(spool.close)
        except MediaError as exc:
            if exc.code == "busy":  # the workers have more than they can take: retry shortly (503), not a 404
                raise
            log.error("could not make the missing display copy of attachment %s: %s", attachment.id, exc.message)
            return None
        except (BlobNotFound, OSError) as exc:
            log.error("could not make the missing display copy of attachment %s: %s", attachment.id, exc)
            return None
        finally:
            del self._making_display[attachment.id]
            making.set()
        self.stats.display_copies_made += 1
        log.info("made the missing display copy of attachment %s (%d bytes)", attachment.id, size)
        return size

    async def download(self, attachment: Attachment, variant: str, range_header: str | None) -> Download:
        try:
            display = await self.display_size(attachment) if variant == "display" else None
            if display is None and variant == "display" and has_display_copy(attachment):
                display = await self.make_display_copy(attachment)
            planned = plan_download(attachment, variant, range_header, self.blobs, display)
            if not await trio.to_thread.run_sync(self.blobs.exists, planned.key):
                # A record whose bytes are gone (removed by hand, a restored backup): an operator's problem.
                log.error("attachment %s has a record but no blob %s", attachment.id, planned.key)
                raise MediaError("not_found", "the attachment's bytes are missing")
        except MediaError as exc:
            raise self._refused(exc) from None
        self.stats.downloads[variant] += 1
        self.stats.download_bytes += planned.length
        return planned

