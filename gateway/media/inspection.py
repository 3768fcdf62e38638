"""What an upload is, decided from its bytes: kind rules, content type, image facts, a video's
poster, duration.

:func:`inspect` is blocking and CPU-bound (Pillow decodes, mutagen parses); :class:`Inspector`
runs it off the event loop, at most ``concurrency`` uploads at once however many arrive: in worker
processes at a lower CPU priority (``gateway.media.pool``; the default), or in Trio worker threads
(``processes=False``), which share the GIL with the event loop that carries messages.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

import trio

from .blobs import BlobStore
from .durations import duration_ms
from .errors import MediaError
from .images import inspect_image
from .kinds import NEEDS_DISPLAY_COPY, MediaLimits
from .pool import InspectionPool, WorkerDied
from .sniffing import content_type
from .video import inspect_video, played_ms

log = logging.getLogger("kefu.media")


@dataclass(frozen=True, slots=True)
class Inspection:
    kind: str
    content_type: str
    size: int
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    thumbnail: bytes | None = None  # a JPEG, for images and for videos with a decodable first frame
    display: bytes | None = None  # a JPEG of the whole image, for types browsers do not show (kinds.NEEDS_DISPLAY_COPY)
    display_size: int | None = None  # its size, once stored (the bytes stay where they were made)


def check_size(kind: str, size: int, limits: MediaLimits) -> None:
    """The checks that need no bytes: also run while the body streams in, to stop early."""
    rule = limits.rule(kind)
    if size > rule.max_bytes:
        raise MediaError("file_too_large", f"{kind} uploads may be at most {rule.max_bytes} bytes")


def inspect(kind: str, source: BinaryIO, size: int, limits: MediaLimits) -> Inspection:
    """Check ``source`` (``size`` bytes) against ``kind``'s rule and read its facts; raises MediaError."""
    rule = limits.rule(kind)
    if size == 0:
        raise MediaError("empty_file", "the upload has no bytes")
    check_size(kind, size, limits)
    found = content_type(source)
    if found not in rule.content_types:
        what = f"the bytes are {found}" if found else "the bytes are of no allowed type"
        raise MediaError("unsupported_type", f"{what}; {kind} uploads must be one of {', '.join(sorted(rule.content_types))}")
    if kind == "image":
        facts = inspect_image(source, max_pixels=limits.image_pixels, thumbnail_edge=limits.thumbnail_edge, display=found in NEEDS_DISPLAY_COPY)
        return Inspection(kind, found, size, facts.width, facts.height, thumbnail=facts.thumbnail, display=facts.display)
    if kind == "video":
        video = inspect_video(source, max_pixels=limits.image_pixels, thumbnail_edge=limits.thumbnail_edge)
        ms = duration_ms(source)
        if ms is None and video is not None:
            ms = video.duration_ms  # WebM, and MP4s mutagen cannot parse
        if ms is None:
            ms = played_ms(source)  # a recorded WebM: no duration in its header
        _check_duration(kind, ms, rule.max_duration_ms)
        if video is None:  # not a video PyAV can open: no poster, no size (still a video by its bytes)
            return Inspection(kind, found, size, duration_ms=ms)
        return Inspection(kind, found, size, video.width, video.height, duration_ms=ms, thumbnail=video.poster)
    if kind == "voice":
        ms = duration_ms(source)
        if ms is None:
            ms = played_ms(source)  # WebM (browsers record voice so), which mutagen does not read
        _check_duration(kind, ms, rule.max_duration_ms)
        return Inspection(kind, found, size, duration_ms=ms)
    return Inspection(kind, found, size)


def _check_duration(kind: str, ms: int | None, max_ms: int | None) -> None:
    if ms is not None and max_ms is not None and ms > max_ms:
        raise MediaError("too_long", f"{kind} uploads may play at most {max_ms // 1000} s; this one plays {ms / 1000:.1f} s")


@dataclass(frozen=True, slots=True)
class Keep:
    """Where an upload that passes inspection is stored: its file under ``key``, its thumbnail
    under ``thumbnail_key`` and its display copy under ``display_key``, in ``blobs`` (picklable: a
    worker process writes them)."""

    blobs: BlobStore
    key: str
    thumbnail_key: str
    display_key: str = ""


def keep(found: Inspection, source: BinaryIO, where: Keep) -> Inspection:
    """Store the inspected ``source``, its thumbnail and its display copy; on failure nothing
    stays (raises OSError). Returns ``found`` with the display copy's size in place of its bytes."""
    source.seek(0)
    where.blobs.put(where.key, source)
    stored = [where.key]
    try:
        if found.thumbnail is not None:
            where.blobs.put(where.thumbnail_key, io.BytesIO(found.thumbnail))
            stored.append(where.thumbnail_key)
        if found.display is not None:
            if not where.display_key:
                raise OSError("no key for the display copy")
            where.blobs.put(where.display_key, io.BytesIO(found.display))
    except BaseException:
        for key in stored:
            where.blobs.delete(key)
        raise
    return found if found.display is None else replace(found, display=None, display_size=len(found.display))


def inspect_job(job: tuple, source: BinaryIO) -> tuple:
    """:func:`inspect`, then :func:`keep` when ``job`` says where, as a worker process (or a
    thread) runs it: ``job`` is (kind, size, limits, Keep or None); the reply is ("ok",
    Inspection), ("refused", code, message) or ("failed", code, what went wrong).

    The blobs are written here rather than by the gateway because copying megabytes into the blob
    store is work too: done in the gateway's threads, it took the event loop's core from it
    (measured: docs/benchmarks.md, "2026-12-07 (third session): media, the event loop's core and the disk")."""
    kind, size, limits, where = job
    try:
        found = inspect(kind, source, size, limits)
    except MediaError as exc:
        return ("refused", exc.code, exc.message)
    except Exception as exc:  # a bug or an unexpected decoder error: reported, the worker lives on
        return ("failed", "inspection_failed", f"{type(exc).__name__}: {exc}")
    if where is not None:
        try:
            found = keep(found, source, where)  # the display copy's megabytes stay here, not in the reply
        except Exception as exc:  # a full disk, an unreachable store
            return ("failed", "storage_failed", f"{type(exc).__name__}: {exc}")
    return ("ok", found)


def display_job(job: tuple, source: BinaryIO) -> tuple:
    """Make and store the display copy of an image stored without one (uploaded before Kefu made
    display copies), as a worker runs it: ``job`` is (limits, BlobStore, key); the reply is ("ok",
    its size), ("refused", code, message) or ("failed", code, what went wrong)."""
    limits, blobs, key = job
    try:
        facts = inspect_image(source, max_pixels=limits.image_pixels, thumbnail_edge=limits.thumbnail_edge, display=True)
    except MediaError as exc:
        return ("refused", exc.code, exc.message)
    except Exception as exc:
        return ("failed", "inspection_failed", f"{type(exc).__name__}: {exc}")
    assert facts.display is not None
    try:
        return ("ok", blobs.put(key, io.BytesIO(facts.display)))
    except Exception as exc:
        return ("failed", "storage_failed", f"{type(exc).__name__}: {exc}")


JOBS = {"inspect": inspect_job, "display": display_job}


def run_job(job: tuple, source: BinaryIO) -> tuple:
    """What a worker process (or a thread) runs: ``job`` is (name in JOBS, that job's tuple)."""
    name, args = job
    return JOBS[name](args, source)


class Inspector:
    """Runs :func:`inspect` off the event loop, ``concurrency`` at a time; more than ``max_waiting``
    uploads waiting for a turn are refused as ``busy`` rather than queued without bound.

    With ``processes`` (the default) a source with a file descriptor (the spool file) is inspected
    in a worker process (on ``cpus``, when given); one without (an in-memory buffer) in a thread."""

    def __init__(
        self, limits: MediaLimits, *, concurrency: int = 2, max_waiting: int = 32, processes: bool = True, cpus: frozenset[int] | None = None
    ) -> None:
        self.limits = limits
        self._limiter = trio.CapacityLimiter(concurrency)
        self._max_waiting = max_waiting
        self.pool = InspectionPool(concurrency, run_job, cpus=cpus) if processes else None

    async def inspect(self, kind: str, source: BinaryIO, size: int, where: Keep | None = None) -> Inspection:
        """Inspect ``source``; with ``where``, also store it there once it passes (a refusal
        stores nothing; a worker that dies may leave a blob, which the caller removes)."""
        return await self._run(("inspect", (kind, size, self.limits, where)), source, f"a {kind} upload of {size} bytes", "upload")

    async def make_display_copy(self, source: BinaryIO, blobs: BlobStore, key: str) -> int:
        """Make the display copy of the image in ``source`` and store it under ``key``; its size."""
        return await self._run(("display", (self.limits, blobs, key)), source, f"the display copy {key}", "display copy")

    async def _run(self, job: tuple, source: BinaryIO, what: str, noun: str) -> Any:
        """Run ``job`` (see :func:`run_job`) on ``source``; ``what`` names it in logs, ``noun`` in errors."""
        if self._limiter.statistics().tasks_waiting >= self._max_waiting:
            raise MediaError("busy", "too many uploads are being processed; retry shortly")
        fd = _fileno(source) if self.pool is not None else None
        if fd is None:
            reply = await trio.to_thread.run_sync(run_job, job, source, limiter=self._limiter)
        else:
            async with self._limiter:
                try:
                    reply = await self.pool.run(job, fd)
                except WorkerDied as exc:
                    log.error("media inspection worker died on %s (%s)", what, exc)
                    raise MediaError("inspection_failed", f"the process handling the {noun} died (it ran out of memory or crashed)") from None
        if reply[0] == "ok":
            return reply[1]
        if reply[0] == "refused":
            raise MediaError(reply[1], reply[2])
        code, failure = reply[1], reply[2]
        if code == "storage_failed":
            log.error("could not store %s in the blob store: %s", what, failure)
            raise MediaError(code, f"the {noun} could not be stored; nothing was kept")
        log.error("media inspection failed on %s: %s", what, failure)
        raise MediaError("inspection_failed", f"the {noun} could not be processed")

    def close(self) -> None:
        """Stop the worker processes (idle ones now, busy ones when their inspection ends)."""
        if self.pool is not None:
            self.pool.close()


def _fileno(source: BinaryIO) -> int | None:
    try:
        return source.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return None
