"""The media service on a real store and blob store: authorisation of uploads and downloads,
signed URLs, and downloads with and without ranges read back byte for byte."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator
from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from gateway.media.errors import MediaError
from gateway.media.kinds import MediaLimits
from gateway.media.service import Media
from gateway.metrics import Stats
from gateway.model import OPEN, Conversation, CreateConversation, Participant
from gateway.store import MemoryBackend
from gateway.store.writer import Store

from . import samples

CONV = Conversation("c1", "shop1", "alice", "app", OPEN, 1_000)
OTHER = Conversation("c2", "shop1", "carol", "app", OPEN, 1_000)
ELSEWHERE = Conversation("c3", "shop2", "dave", "app", OPEN, 1_000)


@pytest.fixture
async def media(nursery, tmp_path: Path) -> Media:
    store = Store(MemoryBackend(), Stats())
    await nursery.start(store.run)
    for conv, users in ((CONV, ("alice", "bob")), (OTHER, ("carol",)), (ELSEWHERE, ("dave",))):
        await store.execute(CreateConversation(conv, tuple(Participant(conv.id, u, "shopper", 1) for u in users)))
    return Media.in_directory(store, tmp_path / "media", "secret-of-the-gateway", limits=MediaLimits(thumbnail_edge=40))


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def read_all(download) -> bytes:
    return b"".join([chunk async for chunk in download.chunks()])


def code_of(exc_info) -> str:
    return exc_info.value.code


async def test_only_participants_upload_and_other_tenants_learn_nothing(media: Media) -> None:
    with trio.fail_after(20):
        with pytest.raises(MediaError) as info:  # another shopper learns nothing of the conversation
            await media.upload("shop1", "carol", "shopper", "c1", "image", body(samples.jpeg()))
        assert code_of(info) == "not_found"
        with pytest.raises(MediaError) as info:  # staff who have not joined
            await media.upload("shop1", "eve", "agent", "c1", "image", body(samples.jpeg()))
        assert code_of(info) == "forbidden"
        with pytest.raises(MediaError) as info:
            await media.upload("shop2", "dave", "shopper", "c1", "image", body(samples.jpeg()))
        assert code_of(info) == "not_found"
        # An API key of the tenant acts for the whole tenant.
        att = await media.upload("shop1", "key:crm", "system", "c1", "image", body(samples.jpeg()), tenant_wide=True)
        assert att.uploader == "key:crm"
        assert media.stats.refused == {"forbidden": 1, "not_found": 2}


async def test_participants_and_supervisors_see_an_attachment_nobody_else(media: Media) -> None:
    with trio.fail_after(20):
        att = await media.upload("shop1", "alice", "shopper", "c1", "image", body(samples.jpeg()))
        assert await media.visible("shop1", "alice", "shopper", att.id) == att
        assert await media.visible("shop1", "bob", "agent", att.id) == att
        assert await media.visible("shop1", "sue", "supervisor", att.id) == att
        for tenant, user, role, code in (("shop1", "carol", "shopper", "not_found"), ("shop1", "eve", "agent", "forbidden"),
                                         ("shop2", "dave", "supervisor", "not_found"), ("shop2", "alice", "shopper", "not_found")):
            with pytest.raises(MediaError) as info:
                await media.visible(tenant, user, role, att.id)
            assert code_of(info) == code, (tenant, user)


async def test_describe_signs_urls_that_open_the_right_variant(media: Media) -> None:
    with trio.fail_after(20):
        data = samples.jpeg(400, 300)
        att = await media.upload("shop1", "alice", "shopper", "c1", "image", body(data), name="颜色.jpg")
        shown = media.describe(att, f"/v1/attachments/{att.id}/content")
        assert (shown["width"], shown["height"], shown["name"], shown["kind"]) == (400, 300, "颜色.jpg", "image")
        for field, variant in (("url", "original"), ("thumbnail_url", "thumbnail")):
            url = urlsplit(shown[field])
            assert url.path == f"/v1/attachments/{att.id}/content"
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            assert q["variant"] == variant and int(q["expires"]) == shown["urls_expire_at"]
            opened = await media.by_signature(att.id, q["variant"], q["expires"], q["sig"])
            assert opened == att
            with pytest.raises(MediaError) as info:
                await media.by_signature(att.id, "original" if variant == "thumbnail" else "thumbnail", q["expires"], q["sig"])
            assert code_of(info) == "bad_signature"
        original = await read_all(await media.download(att, "original", None))
        assert original == data
        thumb = await media.download(att, "thumbnail", None)
        assert thumb.headers["content-type"] == "image/jpeg" and int(thumb.headers["content-length"]) == att.thumbnail_size
        assert len(await read_all(thumb)) == att.thumbnail_size


async def test_downloads_with_ranges(media: Media) -> None:
    with trio.fail_after(20):
        data = samples.mp4(10_000, media_bytes=600_000)  # more than two read chunks
        att = await media.upload("shop1", "alice", "shopper", "c1", "video", body(data))
        whole = await media.download(att, "original", None)
        assert whole.status == 200 and whole.headers["content-length"] == str(len(data))
        assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
        assert await read_all(whole) == data
        part = await media.download(att, "original", "bytes=300000-300099")
        assert part.status == 206 and part.headers["content-range"] == f"bytes 300000-300099/{len(data)}"
        assert await read_all(part) == data[300000:300100]
        tail = await media.download(att, "original", "bytes=-1000")
        assert await read_all(tail) == data[-1000:]
        with pytest.raises(MediaError) as info:
            await media.download(att, "original", f"bytes={len(data)}-")
        assert code_of(info) == "range_not_satisfiable"
        with pytest.raises(MediaError) as info:
            await media.download(att, "thumbnail", None)  # a video has none
        assert code_of(info) == "not_found"


async def test_files_are_offered_as_downloads_never_rendered(media: Media) -> None:
    with trio.fail_after(20):
        att = await media.upload("shop1", "alice", "shopper", "c1", "file", body(samples.TEXT), name='a"b;c 发票.txt')
        headers = (await media.download(att, "original", None)).headers
        assert headers["content-type"] == "text/plain"
        assert headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in headers["content-security-policy"]
        assert headers["content-disposition"].startswith('attachment; filename="a_b_c __.txt"; filename*=UTF-8\'\'')


async def test_a_record_whose_bytes_are_gone_is_not_found_and_logged(media: Media, caplog) -> None:
    from gateway.media.uploads import blob_key

    with trio.fail_after(20):
        att = await media.upload("shop1", "alice", "shopper", "c1", "file", body(samples.pdf()))
        media.blobs.delete(blob_key(att.id))
        with pytest.raises(MediaError) as info:
            await media.download(att, "original", None)
    assert code_of(info) == "not_found"
    assert any("no blob" in r.getMessage() for r in caplog.records)


async def test_run_sweeps_blobs_without_a_record_at_start(media: Media, nursery) -> None:
    import io
    import os
    import time

    from gateway.media.uploads import blob_key

    orphan = blob_key("0190f3c2a1b2c3d4e5f60718aa")
    media.blobs.put(orphan, io.BytesIO(b"left by a crash"))
    old = time.time() - 7200
    os.utime(media.blobs.root / orphan, (old, old))
    with trio.fail_after(20):
        await nursery.start(media.run)
        while media.blobs.exists(orphan):
            await trio.sleep(0.01)
