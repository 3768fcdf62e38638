"""The way in, on a real store (memory and SQLite) and a filesystem blob store: every kind is
stored with its facts, and every refusal, interruption or failure leaves no file and no row."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import AsyncIterator

import pytest
import trio
from PIL import Image

from gateway.media.blobs import FilesystemBlobStore
from gateway.media.errors import MediaError
from gateway.media.inspection import Inspector
from gateway.media.kinds import MediaLimits
from gateway.media.stats import MediaStats
from gateway.media.uploads import Uploads, attachment_of, blob_key, clean_name, display_key, thumbnail_key
from gateway.metrics import Stats
from gateway.model import OPEN, Conversation, CreateConversation, MarkAttachmentDeleted, Participant
from gateway.store import MemoryBackend, SqliteBackend
from gateway.store.writer import Store

from . import samples

LIMITS = MediaLimits(image_bytes=300_000, video_bytes=400_000, voice_bytes=100_000, file_bytes=60_000, voice_ms=3_000, thumbnail_edge=32)
CONV = Conversation("c1", "shop1", "alice", "app", OPEN, 1_000)


class Setup:
    def __init__(self, store: Store, root: Path) -> None:
        self.store = store
        self.root = root
        self.stats = MediaStats()
        self.blobs = FilesystemBlobStore(root / "blobs")
        self.uploads = Uploads(store, self.blobs, Inspector(LIMITS), root / "spool", self.stats)

    def files(self) -> list[str]:
        """Every file under the blob store and the spool directory (temporary ones included)."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file() and p.suffix != ".db" and "kefu.db" not in p.name)


@pytest.fixture(params=["memory", "sqlite"])
async def setup(request, nursery, tmp_path: Path) -> AsyncIterator[Setup]:
    backend = MemoryBackend() if request.param == "memory" else SqliteBackend(tmp_path / "kefu.db")
    store = Store(backend, Stats())
    await nursery.start(store.run)
    await store.execute(CreateConversation(CONV, (Participant("c1", "alice", "shopper", 1_000),)))
    yield Setup(store, tmp_path)


async def chunks(data: bytes, size: int = 7_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
        await trio.lowlevel.checkpoint()


async def receive(setup: Setup, kind: str, data: bytes, name: str = "x"):
    with trio.fail_after(20):
        return await setup.uploads.receive(CONV, "alice", kind, chunks(data), name=name)


@pytest.mark.parametrize(
    "kind, data, facts",
    [
        ("image", samples.jpeg(640, 480), {"content_type": "image/jpeg", "width": 640, "height": 480}),
        ("video", samples.mp4(10_000), {"content_type": "video/mp4", "duration_ms": 10_000}),
        ("voice", samples.wav(2.0), {"content_type": "audio/wav", "duration_ms": 2_000}),
        ("file", samples.pdf(), {"content_type": "application/pdf", "width": None}),
    ],
)
async def test_every_kind_is_stored_with_its_facts(setup: Setup, kind: str, data: bytes, facts: dict) -> None:
    att = await receive(setup, kind, data, name="C:\\Users\\alice\\发票\u0007.pdf")
    assert (att.tenant, att.conv_id, att.uploader, att.kind, att.size, att.name) == ("shop1", "c1", "alice", kind, len(data), "发票.pdf")
    for field, value in facts.items():
        assert getattr(att, field) == value, field
    assert await setup.store.get_attachment(att.id) == att
    assert setup.blobs.read(blob_key(att.id), 0, len(data) + 1) == data
    assert setup.stats.uploads[kind] == 1 and setup.stats.upload_bytes[kind] == len(data)
    if kind == "image":
        thumb = Image.open(io.BytesIO(setup.blobs.read(thumbnail_key(att.id), 0, 1 << 20)))
        assert thumb.size == (32, 24) and att.thumbnail_size == setup.blobs.size(thumbnail_key(att.id))
        assert sorted(setup.files()) == sorted([f"blobs/{blob_key(att.id)}", f"blobs/{thumbnail_key(att.id)}"])
    else:
        assert att.thumbnail_size is None
        assert setup.files() == [f"blobs/{blob_key(att.id)}"]
    assert setup.stats.uploads_in_progress == 0


@pytest.mark.parametrize(
    "kind, data, code",
    [
        ("image", b"", "empty_file"),
        ("image", samples.EXE, "unsupported_type"),
        ("image", samples.HTML, "unsupported_type"),
        ("image", samples.truncated(samples.jpeg(400, 400)), "undecodable"),
        ("image", samples.png_bomb(), "decompression_bomb"),
        ("voice", samples.wav(5.0), "too_long"),
        ("file", b"a" * 60_001, "file_too_large"),
        ("video", samples.mp4(1_000, media_bytes=500_000), "file_too_large"),
        ("location", samples.TEXT, "unknown_kind"),
    ],
)
async def test_a_refused_upload_leaves_no_file_and_no_row(setup: Setup, kind: str, data: bytes, code: str) -> None:
    with pytest.raises(MediaError) as info:
        await receive(setup, kind, data)
    assert info.value.code == code
    assert setup.files() == []
    assert setup.stats.uploads[kind] == 0
    if code != "unknown_kind":
        assert setup.stats.refused[code] == 1
    assert setup.stats.uploads_in_progress == 0


async def test_an_oversized_body_is_stopped_while_it_streams(setup: Setup) -> None:
    read = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal read
        while True:
            read += 10_000
            yield b"a" * 10_000

    with pytest.raises(MediaError) as info:
        with trio.fail_after(20):
            await setup.uploads.receive(CONV, "alice", "file", endless())
    assert info.value.code == "file_too_large"
    assert read <= LIMITS.file_bytes + 10_000
    assert setup.files() == []


async def test_an_upload_interrupted_mid_body_leaves_nothing(setup: Setup) -> None:
    data = samples.jpeg(640, 480)

    async def cut() -> AsyncIterator[bytes]:
        yield data[:5000]
        await trio.lowlevel.checkpoint()
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        with trio.fail_after(20):
            await setup.uploads.receive(CONV, "alice", "image", cut())
    assert setup.files() == []
    assert setup.stats.uploads_in_progress == 0


async def test_an_upload_cancelled_mid_body_leaves_nothing(setup: Setup) -> None:
    started = trio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield samples.jpeg()[:100]
        started.set()
        await trio.sleep_forever()
        yield b""  # pragma: no cover

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(setup.uploads.receive, CONV, "alice", "image", stalls())
            await started.wait()
            nursery.cancel_scope.cancel()
    assert setup.files() == []


@pytest.mark.parametrize("photo", [samples.jpeg, samples.heic], ids=["jpeg", "heic-with-a-display-copy"])
async def test_a_record_that_cannot_be_written_takes_its_blobs_with_it(setup: Setup, photo) -> None:
    gone = Conversation("nope", "shop1", "alice", "app", OPEN, 1_000)  # no such conversation in the store
    with pytest.raises(Exception) as info:
        with trio.fail_after(20):
            await setup.uploads.receive(gone, "alice", "image", chunks(photo()))
    assert "not found" in str(info.value)
    assert setup.files() == []


async def test_a_blob_store_that_cannot_write_refuses_the_upload_and_keeps_nothing(setup: Setup) -> None:
    tmp = setup.root / "blobs" / ".tmp"  # where every blob is written first: a file there fails each put
    tmp.rmdir()
    tmp.write_bytes(b"")
    with pytest.raises(MediaError) as info:
        await receive(setup, "image", samples.jpeg())
    assert info.value.code == "storage_failed" and setup.stats.refused["storage_failed"] == 1
    assert setup.files() == ["blobs/.tmp"]
    assert setup.stats.uploads["image"] == 0 and setup.stats.uploads_in_progress == 0
    tmp.unlink()
    tmp.mkdir()
    assert (await receive(setup, "image", samples.jpeg())).width == 64  # the store writes again: so do uploads


async def test_discard_removes_the_record_and_the_blobs(setup: Setup) -> None:
    att = await receive(setup, "image", samples.jpeg())
    await setup.uploads.discard(att)
    assert await setup.store.get_attachment(att.id) is None
    assert setup.files() == []


def test_clean_name() -> None:
    assert clean_name("../../etc/passwd") == "passwd"
    assert clean_name("a\\b\\c.txt") == "c.txt"
    assert clean_name("x\r\ny.pdf") == "xy.pdf"
    assert len(clean_name("n" * 1000)) == 256


async def test_uploads_past_the_bound_in_progress_are_busy(setup: Setup) -> None:
    setup.uploads.max_in_progress = 1
    started = trio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"x"
        started.set()
        await trio.sleep_forever()
        yield b""  # pragma: no cover

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(setup.uploads.receive, CONV, "alice", "file", stalls())
            await started.wait()
            with pytest.raises(MediaError) as info:
                await receive(setup, "file", samples.pdf())
            assert info.value.code == "busy" and setup.stats.refused["busy"] == 1
            nursery.cancel_scope.cancel()
    assert await receive(setup, "file", samples.pdf())  # the bound frees with the upload
    assert setup.files() != []


async def test_the_sweep_removes_old_blobs_without_a_record_only(setup: Setup) -> None:
    kept = await receive(setup, "image", samples.jpeg())  # a record, a blob and a thumbnail
    orphan = "0190f3c2a1b2c3d4e5f60718aa"  # a blob whose record was never written (a crash)
    young = "0190f3c2a1b2c3d4e5f60718bb"  # one whose record may be being written
    for key in (blob_key(orphan), thumbnail_key(orphan), display_key(orphan), blob_key(young), "other/not-ours"):
        setup.blobs.put(key, io.BytesIO(b"x"))
    hour_ago = time.time() - 3700
    for key in (blob_key(kept.id), thumbnail_key(kept.id), blob_key(orphan), thumbnail_key(orphan), display_key(orphan), "other/not-ours"):
        os.utime(setup.root / "blobs" / key, (hour_ago, hour_ago))
    with trio.fail_after(20):
        assert await setup.uploads.sweep(older_than_s=3600, batch=2) == 3
    assert sorted(setup.files()) == sorted(f"blobs/{k}" for k in (blob_key(kept.id), thumbnail_key(kept.id), blob_key(young), "other/not-ours"))


async def test_the_sweep_removes_the_blobs_a_deletion_left(setup: Setup) -> None:
    # A deletion marks the record, then removes the blobs; if the removal failed they are swept.
    gone = await receive(setup, "image", samples.jpeg())
    kept = await receive(setup, "image", samples.jpeg())
    await setup.store.execute(MarkAttachmentDeleted(gone.id, 5_000))
    hour_ago = time.time() - 3700
    for att in (gone, kept):
        for key in (blob_key(att.id), thumbnail_key(att.id)):
            os.utime(setup.root / "blobs" / key, (hour_ago, hour_ago))
    with trio.fail_after(20):
        assert await setup.uploads.sweep(older_than_s=3600) == 2
    assert sorted(setup.files()) == sorted(f"blobs/{k}" for k in (blob_key(kept.id), thumbnail_key(kept.id)))


def test_attachment_of() -> None:
    assert attachment_of("18/0190f3c2a1b2c3d4e5f60718") == "0190f3c2a1b2c3d4e5f60718"
    assert attachment_of("18/0190f3c2a1b2c3d4e5f60718.thumb") == "0190f3c2a1b2c3d4e5f60718"
    assert attachment_of("18/0190f3c2a1b2c3d4e5f60718.display") == "0190f3c2a1b2c3d4e5f60718"
    for foreign in ("other/not-ours", "0190f3c2a1b2c3d4e5f60718", "18/a/b18", "18/"):
        assert attachment_of(foreign) is None, foreign
