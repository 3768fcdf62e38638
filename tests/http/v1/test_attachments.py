"""Media over real HTTP (httpx) and real WebSockets: every kind uploaded, sent, received and
downloaded; downloads refused to whoever may not have them; every refused or interrupted upload
leaves no file and no row; a video played by Range requests; thumbnails and EXIF orientation."""

from __future__ import annotations

import io
import logging
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from PIL import Image

from gateway.app import Running, serve
from gateway.media.signing import UrlSigner
from gateway.media.uploads import blob_key, display_key

from ...conftest import make_config
from ...media import samples
from ...support import SECRET, connect, token
from ..conftest import client, new_key, problem

LIMITS = dict(media_image_bytes=400_000, media_video_bytes=700_000, media_voice_bytes=200_000, media_file_bytes=60_000)


@pytest.fixture
async def gw(nursery, tmp_path, store_kind) -> Running:
    running = await nursery.start(serve, make_config(tmp_path, store=store_kind, **LIMITS))
    running.data = Path(tmp_path / "data")
    yield running
    running.node.stop()
    with trio.fail_after(10):
        await running.node.stopped()


@pytest.fixture
async def sqlite_gw(nursery, tmp_path) -> Running:
    running = await nursery.start(serve, make_config(tmp_path, store="sqlite", **LIMITS))
    running.data = Path(tmp_path / "data")
    yield running
    running.node.stop()
    with trio.fail_after(10):
        await running.node.stopped()


def http(gw: Running, user: str | None = None, role: str = "shopper", tenant: str = "shop1") -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {token(user, role, tenant=tenant)}"} if user else {}
    return httpx.AsyncClient(base_url=gw.http_url, headers=headers, timeout=10)


async def upload(api: httpx.AsyncClient, conv: str, kind: str, data: bytes, name: str = "", **headers: str) -> httpx.Response:
    params = {"kind": kind, **({"name": name} if name else {})}
    return await api.post(f"/v1/conversations/{conv}/attachments", params=params, content=data, headers=headers)


def stored_files(gw: Running) -> list[str]:
    """Every file the media side keeps (blobs, and temporary files of the blob store and spool)."""
    root = gw.data / "media"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def attachment_rows(gw: Running) -> int:
    with sqlite3.connect(gw.data / "kefu.sqlite3") as db:
        return db.execute("SELECT count(*) FROM attachments").fetchone()[0]


def relative(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_done_when_photo_video_voice_location_and_refusals(gw: Running) -> None:
    """The issue's story: a shopper sends a photo; the agent sees its thumbnail and opens it,
    sends back a 10-second video the shopper seeks in; a voice message shows its duration; a
    location its coordinates and address; another shopper's downloads are refused."""
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, connect(gw.url, token("bob", "agent"), resume={}) as agent, \
                http(gw, "alice") as alice_http, http(gw, "bob", "agent") as bob_http, http(gw, "carol") as carol_http, \
                http(gw) as anonymous:
            conv = (await shopper.ok("open", subject="颜色"))["conv"]["id"]
            await agent.ok("join", conv=conv)

            # 1. A shopper uploads a photo (taken sideways: EXIF orientation 6) and sends it.
            photo = samples.jpeg(1200, 800, orientation=6, halves=True)
            up = await upload(alice_http, conv, "image", photo, name="颜色.jpg", **{"content-type": "application/octet-stream"})
            assert up.status_code == 201, up.text
            image = up.json()
            assert (image["kind"], image["content_type"], image["size"], image["width"], image["height"]) == ("image", "image/jpeg", len(photo), 800, 1200)
            await shopper.ok("send", conv=conv, cmid="p1", body={"kind": "image", "attachment": image["id"]})

            # 2. The agent sees its thumbnail and opens the full image.
            msg = await agent.next("msg", conv=conv, cmid="p1")
            assert msg["body"] | {"attachment": None} == {"kind": "image", "attachment": None, "size": len(photo), "type": "image/jpeg",
                                                          "w": 800, "h": 1200, "thumbnail": True, "name": "颜色.jpg"}
            shown = (await bob_http.get(f"/v1/attachments/{msg['body']['attachment']}")).json()
            thumb = await anonymous.get(relative(shown["thumbnail_url"]))  # a signed URL needs no credentials (an <img>)
            assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
            thumbnail = Image.open(io.BytesIO(thumb.content)).convert("RGB")
            assert thumbnail.size == (213, 320)  # portrait, as displayed; the longer edge at the default 320
            assert thumbnail.getpixel((106, 10))[0] > 200 and thumbnail.getpixel((106, 310))[2] > 200  # red on top, blue below
            full = await anonymous.get(relative(shown["url"]))
            assert full.status_code == 200 and full.content == photo

            # 3. The agent sends back a 10-second video, which the shopper seeks in.
            clip = samples.mp4(10_000, media_bytes=300_000)
            video = (await upload(bob_http, conv, "video", clip, name="实物.mp4")).json()
            await agent.ok("send", conv=conv, cmid="v1", body={"kind": "video", "attachment": video["id"]})
            got = await shopper.next("msg", conv=conv, cmid="v1")
            assert (got["body"]["duration_ms"], got["body"]["type"]) == (10_000, "video/mp4")
            url = relative((await alice_http.get(f"/v1/attachments/{video['id']}")).json()["url"])
            first = await anonymous.get(url, headers={"range": "bytes=0-1023"})
            assert first.status_code == 206 and first.content == clip[:1024]
            assert first.headers["content-range"] == f"bytes 0-1023/{len(clip)}" and first.headers["accept-ranges"] == "bytes"
            seek = await anonymous.get(url, headers={"range": "bytes=200000-"})  # a jump to the middle
            assert seek.status_code == 206 and seek.content == clip[200000:] and seek.headers["content-length"] == str(len(clip) - 200000)
            past = await anonymous.get(url, headers={"range": f"bytes={len(clip)}-"})
            assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(clip)}"

            # 4. A voice message shows its duration.
            voice = (await upload(alice_http, conv, "voice", samples.wav(3.2))).json()
            assert voice["duration_ms"] == 3200
            await shopper.ok("send", conv=conv, cmid="a1", body={"kind": "voice", "attachment": voice["id"]})
            assert (await agent.next("msg", conv=conv, cmid="a1"))["body"]["duration_ms"] == 3200

            # 5. A location shows its coordinates and address.
            where = {"kind": "location", "lat": 31.2304, "lng": 121.4737, "name": "人民广场店", "address": "上海市黄浦区人民大道 120 号"}
            await agent.ok("send", conv=conv, cmid="l1", body=where)
            assert (await shopper.next("msg", conv=conv, cmid="l1"))["body"] == where

            # A file, for completeness of the kinds.
            doc = (await upload(bob_http, conv, "file", samples.pdf(), name="退货流程.pdf")).json()
            await agent.ok("send", conv=conv, cmid="f1", body={"kind": "file", "attachment": doc["id"]})
            assert (await shopper.next("msg", conv=conv, cmid="f1"))["body"]["name"] == "退货流程.pdf"
            saved = await alice_http.get(f"/v1/attachments/{doc['id']}/content")
            assert saved.content == samples.pdf() and saved.headers["content-disposition"].startswith("attachment;")

            # 6. Another shopper's download of any of these is refused; both participants download each.
            for att, data in ((image, photo), (video, clip), (voice, samples.wav(3.2)), (doc, samples.pdf())):
                problem(await carol_http.get(f"/v1/attachments/{att['id']}"), 404, "not_found")  # another shopper learns nothing
                problem(await carol_http.get(f"/v1/attachments/{att['id']}/content"), 404, "not_found")
                for participant in (alice_http, bob_http):
                    got = await participant.get(f"/v1/attachments/{att['id']}/content")
                    assert (got.status_code, got.content, got.headers["content-type"]) == (200, data, att["content_type"])


async def test_downloads_are_refused_across_tenants_and_to_non_participants(gw: Running) -> None:
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, http(gw, "alice") as alice_http:
            conv = (await shopper.ok("open"))["conv"]["id"]
            att = (await upload(alice_http, conv, "image", samples.jpeg())).json()
            path = f"/v1/attachments/{att['id']}"
            async with http(gw, "sue", "supervisor") as sue, http(gw, "eve", "agent") as eve, \
                    http(gw, "mallory", "supervisor", tenant="shop2") as other_tenant, http(gw) as anonymous:
                assert (await sue.get(path + "/content")).content == samples.jpeg()  # the tenant's supervisor
                problem(await eve.get(path), 403, "forbidden")  # an agent who has not joined
                problem(await other_tenant.get(path), 404, "not_found")  # another tenant learns nothing
                problem(await other_tenant.get(path + "/content"), 404, "not_found")
                problem(await anonymous.get(path + "/content"), 401, "unauthenticated")
                problem(await anonymous.get(path), 401, "unauthenticated")
            async with client(gw, await new_key(gw, scopes=("read",))) as reader, \
                    client(gw, await new_key(gw, tenant="shop2", scopes=("admin",))) as stranger:
                assert (await reader.get(path)).json()["id"] == att["id"]
                problem(await stranger.get(path), 404, "not_found")


async def test_expired_and_tampered_urls_are_refused(gw: Running) -> None:
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, http(gw, "alice") as alice_http, http(gw) as anonymous:
            conv = (await shopper.ok("open"))["conv"]["id"]
            att = (await upload(alice_http, conv, "image", samples.jpeg())).json()
            other = (await upload(alice_http, conv, "image", samples.png())).json()
            url = urlsplit(att["url"])
            q = dict(part.split("=", 1) for part in url.query.split("&"))
            base = url.path
            assert (await anonymous.get(relative(att["url"]))).status_code == 200
            tampered = [
                f"{base}?variant=original&expires={int(q['expires']) + 86400}&sig={q['sig']}",  # a longer life
                f"/v1/attachments/{other['id']}/content?variant=original&expires={q['expires']}&sig={q['sig']}",  # another file
                f"{base}?variant=original&expires={q['expires']}&sig={q['sig'][:-2]}xx",
                f"{base}?variant=thumbnail&expires={q['expires']}&sig={q['sig']}",
                f"{base}?variant=original&expires={q['expires']}",
            ]
            for bad in tampered:
                problem(await anonymous.get(bad), 403, "bad_signature")
            # A URL the gateway signed long ago (same key: derived from the gateway's secret).
            old = UrlSigner.derived_from(SECRET, ttl_s=60, clock=lambda: time.time() - 3600)
            expired = f"{base}?{old.query(att['id'], 'original')}"
            problem(await anonymous.get(expired), 403, "url_expired")


@pytest.mark.parametrize(
    "kind, data, name, status, code",
    [
        ("image", samples.EXE, "photo.jpg", 415, "unsupported_type"),  # a .jpg holding an executable
        ("image", samples.HTML, "photo.jpg", 415, "unsupported_type"),  # a .jpg holding an HTML page
        ("file", samples.HTML, "invoice.pdf", 415, "unsupported_type"),
        ("image", samples.truncated(samples.jpeg(600, 600)), "photo.jpg", 422, "undecodable"),
        ("image", samples.png_bomb(), "photo.png", 422, "decompression_bomb"),
        ("image", b"", "photo.jpg", 400, "empty_file"),
        ("file", b"x" * 60_001, "big.txt", 413, "file_too_large"),
        ("location", samples.TEXT, "here.txt", 400, "unknown_kind"),
    ],
)
async def test_refused_uploads_leave_no_file_and_no_row(sqlite_gw: Running, kind: str, data: bytes, name: str, status: int, code: str) -> None:
    gw = sqlite_gw
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, http(gw, "alice") as alice_http:
            conv = (await shopper.ok("open"))["conv"]["id"]
            problem(await upload(alice_http, conv, kind, data, name=name, **{"content-type": "image/jpeg"}), status, code)
            assert stored_files(gw) == []
            assert attachment_rows(gw) == 0


async def test_an_oversized_body_without_a_declared_length_is_cut_off(sqlite_gw: Running) -> None:
    gw = sqlite_gw

    async def chunks():
        for _ in range(20):
            yield b"y" * 10_000

    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, http(gw, "alice") as alice_http:
            conv = (await shopper.ok("open"))["conv"]["id"]
            response = await alice_http.post(f"/v1/conversations/{conv}/attachments", params={"kind": "file"}, content=chunks())
            problem(response, 413, "file_too_large")
            assert stored_files(gw) == [] and attachment_rows(gw) == 0


async def test_an_upload_interrupted_mid_body_leaves_nothing(sqlite_gw: Running) -> None:
    gw = sqlite_gw
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
            photo = samples.jpeg(800, 800)
            host, port = urlsplit(gw.http_url).hostname, urlsplit(gw.http_url).port
            stream = await trio.open_tcp_stream(host, port)
            head = (f"POST /v1/conversations/{conv}/attachments?kind=image HTTP/1.1\r\nhost: {host}\r\n"
                    f"authorization: Bearer {token('alice')}\r\ncontent-length: {len(photo)}\r\n\r\n").encode()
            await stream.send_all(head + photo[: len(photo) // 2])
            media = gw.node.media
            while media.stats.uploads_in_progress == 0:  # the server is reading the body
                await trio.sleep(0.01)
            await stream.aclose()  # the client goes away mid-body
            while media.stats.uploads_in_progress:
                await trio.sleep(0.01)
            assert stored_files(gw) == [] and attachment_rows(gw) == 0
            assert media.stats.uploads["image"] == 0 and media.stats.refused["incomplete_upload"] == 1


async def test_who_may_upload(gw: Running) -> None:
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, http(gw, "carol") as carol_http, http(gw) as anonymous, \
                http(gw, "alice", tenant="shop2") as other_tenant:
            conv = (await shopper.ok("open"))["conv"]["id"]
            problem(await upload(carol_http, conv, "image", samples.jpeg()), 404, "not_found")  # not hers: learns nothing
            async with http(gw, "eve", "agent") as eve:
                problem(await upload(eve, conv, "image", samples.jpeg()), 403, "forbidden")  # staff: join first
            problem(await upload(other_tenant, conv, "image", samples.jpeg()), 404, "not_found")
            problem(await upload(anonymous, conv, "image", samples.jpeg()), 401, "unauthenticated")
            async with httpx.AsyncClient(base_url=gw.http_url, headers={"authorization": "Bearer not-a-token"}) as forged:
                problem(await upload(forged, conv, "image", samples.jpeg()), 401, "unauthenticated")
            async with client(gw, await new_key(gw, scopes=("read",))) as reader, client(gw, await new_key(gw, scopes=("ingest",))) as ingest:
                problem(await upload(reader, conv, "image", samples.jpeg()), 403, "forbidden")
                stored = await upload(ingest, conv, "image", samples.jpeg())
                assert stored.status_code == 201 and stored.json()["uploader"].startswith("apikey:")
            await shopper.ok("close", conv=conv)
            async with http(gw, "alice") as alice_http:
                problem(await upload(alice_http, conv, "image", samples.jpeg()), 403, "forbidden")  # closed


async def test_head_and_thumbnail_variant_by_token(gw: Running) -> None:
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, http(gw, "alice") as alice_http:
            conv = (await shopper.ok("open"))["conv"]["id"]
            att = (await upload(alice_http, conv, "image", samples.png(640, 320, mode="RGB"))).json()
            head = await alice_http.head(f"/v1/attachments/{att['id']}/content")
            assert head.status_code == 200 and head.headers["content-length"] == str(att["size"]) and head.content == b""
            thumb = await alice_http.get(f"/v1/attachments/{att['id']}/content", params={"variant": "thumbnail"})
            assert Image.open(io.BytesIO(thumb.content)).size == (320, 160)
            problem(await alice_http.get(f"/v1/attachments/{att['id']}/content", params={"variant": "poster"}), 404, "not_found")


async def test_the_openapi_document_describes_the_media_endpoints(gw: Running) -> None:
    async with http(gw) as anonymous:
        spec = (await anonymous.get("/v1/openapi.json")).json()
    assert {"/v1/conversations/{conv_id}/attachments", "/v1/attachments/{attachment_id}", "/v1/attachments/{attachment_id}/content"} <= set(spec["paths"])
    assert "clientToken" in spec["components"]["securitySchemes"]


async def test_uploads_downloads_and_refusals_are_counted(gw: Running) -> None:
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, http(gw, "alice") as alice_http:
            conv = (await shopper.ok("open"))["conv"]["id"]
            att = (await upload(alice_http, conv, "image", samples.jpeg())).json()
            problem(await upload(alice_http, conv, "image", samples.HTML), 415, "unsupported_type")
            await alice_http.get(f"/v1/attachments/{att['id']}/content")
            text = (await alice_http.get("/metrics")).text
    assert 'kefu_media_uploads_total{kind="image"} 1.0' in text
    assert f'kefu_media_upload_bytes_total{{kind="image"}} {float(att["size"])}' in text
    assert 'kefu_media_refused_total{code="unsupported_type"} 1.0' in text
    assert 'kefu_media_downloads_total{variant="original"} 1.0' in text
    assert 'kefu_media_uploads_in_progress 0.0' in text


async def test_a_backend_uploads_and_posts_an_attachment_over_rest(gw: Running) -> None:
    """The REST post and the WebSocket send meet in the same check: facts from the record, and
    an attachment of another conversation refused."""
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, connect(gw.url, token("carol"), resume={}) as carol, \
                client(gw, await new_key(gw, scopes=("ingest",))) as backend:
            conv = (await shopper.ok("open"))["conv"]["id"]
            elsewhere = (await carol.ok("open"))["conv"]["id"]
            att = (await upload(backend, conv, "file", samples.pdf(), name="发票.pdf")).json()
            posted = await backend.post(f"/v1/conversations/{conv}/messages",
                                        json={"sender": {"role": "system"}, "body": {"kind": "file", "attachment": att["id"], "size": 1}})
            assert posted.status_code == 201, posted.text
            got = await shopper.next("msg", conv=conv)
            assert (got["body"]["size"], got["body"]["type"], got["body"]["name"]) == (len(samples.pdf()), "application/pdf", "发票.pdf")
            refused = await backend.post(f"/v1/conversations/{elsewhere}/messages",
                                         json={"sender": {"role": "system"}, "body": {"kind": "file", "attachment": att["id"]}})
            problem(refused, 404, "not_found")


async def test_an_api_keys_rate_covers_the_media_calls(start_gateway) -> None:
    gw = await start_gateway(api_rate_per_second=0.01)  # a burst of 2, then one call per 100 s
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, client(gw, await new_key(gw, scopes=("ingest",))) as backend:
            conv = (await shopper.ok("open"))["conv"]["id"]
            att = (await upload(backend, conv, "image", samples.jpeg())).json()
            assert (await backend.get(f"/v1/attachments/{att['id']}")).status_code == 200
            refused = await backend.get(f"/v1/attachments/{att['id']}/content")
            problem(refused, 429, "rate_limited")
            assert int(refused.headers["retry-after"]) >= 1
            async with http(gw, "alice") as alice_http:  # client tokens are not API keys: no key rate
                assert (await alice_http.get(f"/v1/attachments/{att['id']}/content")).status_code == 200


async def test_an_agent_sees_a_video_as_its_first_frame(gw: Running) -> None:
    """A real MP4 (encoded by PyAV here): the recipient's message says it has a thumbnail and its
    size, and the thumbnail is a JPEG of the first frame at the thumbnail size."""
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, connect(gw.url, token("bob", "agent"), resume={}) as agent, \
                http(gw, "bob", "agent") as bob_http, http(gw) as anonymous:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)
            clip = samples.video(640, 480, seconds=1.0)
            up = await upload(bob_http, conv, "video", clip, name="实物.mp4")
            assert up.status_code == 201, up.text
            video = up.json()
            assert (video["width"], video["height"], video["duration_ms"]) == (640, 480, 1000) and video["thumbnail_url"]
            await agent.ok("send", conv=conv, cmid="v", body={"kind": "video", "attachment": video["id"]})
            got = (await shopper.next("msg", conv=conv, cmid="v"))["body"]
            assert (got["thumbnail"], got["w"], got["h"], got["duration_ms"], got["type"]) == (True, 640, 480, 1000, "video/mp4")
            async with http(gw, "alice") as alice_http:
                shown = (await alice_http.get(f"/v1/attachments/{video['id']}")).json()
            poster = await anonymous.get(relative(shown["thumbnail_url"]))
            assert (poster.status_code, poster.headers["content-type"]) == (200, "image/jpeg")
            still = Image.open(io.BytesIO(poster.content))
            assert (still.format, still.size) == ("JPEG", (320, 240))
            assert still.convert("RGB").getpixel((160, 120))[0] > 150  # the clip is red
            whole = await anonymous.get(relative(shown["url"]))
            assert whole.content == clip


async def test_a_video_over_the_pixel_limit_has_no_poster(nursery, tmp_path) -> None:
    """The frame size is read from the stream's header; over the image pixel limit no frame is
    decoded: the video is stored and sent with its size, without a thumbnail."""
    running = await nursery.start(serve, make_config(tmp_path, store="memory", media_image_pixels=64 * 48 - 1, **LIMITS))
    try:
        with trio.fail_after(30):
            async with connect(running.url, token("alice"), resume={}) as shopper, http(running, "alice") as alice_http:
                conv = (await shopper.ok("open"))["conv"]["id"]
                video = (await upload(alice_http, conv, "video", samples.video(64, 48))).json()
                assert (video["width"], video["height"], video["thumbnail_url"]) == (64, 48, None)
                await shopper.ok("send", conv=conv, cmid="v", body={"kind": "video", "attachment": video["id"]})
                got = (await shopper.ok("history", conv=conv))["messages"][-1]["body"]
                assert (got["thumbnail"], got["w"], got["h"]) == (False, 64, 48)
                problem(await alice_http.get(f"/v1/attachments/{video['id']}/content", params={"variant": "thumbnail"}), 404, "not_found")
    finally:
        running.node.stop()
        with trio.fail_after(10):
            await running.node.stopped()


async def test_a_recalled_messages_attachment_is_deleted_with_it(gw: Running) -> None:
    """A shopper takes back a photo sent by mistake: the message's body is recalled and the file
    goes too, so the agent's signed URLs from before answer 410. Another photo stays."""
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, connect(gw.url, token("bob", "agent"), resume={}) as agent, \
                http(gw, "alice") as alice_http, http(gw, "bob", "agent") as bob_http, http(gw) as anonymous:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)
            sent = {}
            for cmid in ("wrong", "right"):
                photo = (await upload(alice_http, conv, "image", samples.jpeg(400, 300), name=f"{cmid}.jpg")).json()
                ack = await shopper.ok("send", conv=conv, cmid=cmid, body={"kind": "image", "attachment": photo["id"]})
                await agent.next("msg", conv=conv, cmid=cmid)
                sent[cmid] = (ack["seq"], (await bob_http.get(f"/v1/attachments/{photo['id']}")).json())
            assert len(stored_files(gw)) == 4  # two files and their thumbnails

            seq, wrong = sent["wrong"]
            await shopper.ok("recall", conv=conv, seq=seq)
            while not gw.registry.get_sample_value("kefu_media_deletions_total", {"kind": "image"}):  # in a task of its own
                await trio.sleep(0.02)  # (counted once the record is marked and the files removed)
            problem(await anonymous.get(relative(wrong["url"])), 410, "attachment_deleted")
            problem(await anonymous.get(relative(wrong["thumbnail_url"])), 410, "attachment_deleted")
            problem(await bob_http.get(f"/v1/attachments/{wrong['id']}"), 410, "attachment_deleted")
            assert len(stored_files(gw)) == 2
            right = sent["right"][1]
            assert (await anonymous.get(relative(right["url"]))).status_code == 200
            assert gw.registry.get_sample_value("kefu_media_deletions_total", {"kind": "image"}) == 1  # that one only


async def test_the_uploader_deletes_an_attachment_and_it_is_gone(sqlite_gw: Running) -> None:
    """DELETE removes the file and its thumbnail and marks the record; every way of fetching it
    then answers 410, the message that carried it stays in the history, and it cannot be sent again."""
    gw = sqlite_gw
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, connect(gw.url, token("bob", "agent"), resume={}) as agent, \
                http(gw, "alice") as alice_http, http(gw, "bob", "agent") as bob_http, http(gw) as anonymous:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)
            photo = (await upload(alice_http, conv, "image", samples.jpeg(400, 300), name="颜色.jpg")).json()
            await shopper.ok("send", conv=conv, cmid="p", body={"kind": "image", "attachment": photo["id"]})
            await agent.next("msg", conv=conv, cmid="p")
            shown = (await bob_http.get(f"/v1/attachments/{photo['id']}")).json()
            assert len(stored_files(gw)) == 2  # the file and its thumbnail

            deleted = await alice_http.delete(f"/v1/attachments/{photo['id']}")
            assert (deleted.status_code, deleted.content) == (204, b"")
            assert stored_files(gw) == []
            with sqlite3.connect(gw.data / "kefu.sqlite3") as db:
                (deleted_at,) = db.execute("SELECT deleted_at FROM attachments WHERE id = ?", (photo["id"],)).fetchone()
            assert deleted_at is not None and abs(deleted_at - time.time() * 1000) < 60_000

            path = f"/v1/attachments/{photo['id']}"
            problem(await bob_http.get(path), 410, "attachment_deleted")
            problem(await bob_http.get(path + "/content"), 410, "attachment_deleted")
            problem(await alice_http.get(path + "/content", params={"variant": "thumbnail"}), 410, "attachment_deleted")
            problem(await anonymous.get(relative(shown["url"])), 410, "attachment_deleted")  # a signed URL from before
            problem(await anonymous.get(relative(shown["thumbnail_url"])), 410, "attachment_deleted")

            # The message stays, with the attachment's id and the facts it was sent with.
            body = (await agent.ok("history", conv=conv))["messages"][-1]["body"]
            assert (body["attachment"], body["name"], body["w"]) == (photo["id"], "颜色.jpg", 400)
            refused = await shopper.request("send", conv=conv, cmid="again", body={"kind": "image", "attachment": photo["id"]})
            assert (refused["t"], refused["code"]) == ("error", "not_found")
            resent = await shopper.request("send", conv=conv, cmid="p", body={"kind": "image", "attachment": photo["id"]})
            assert (resent["t"], resent["dup"]) == ("ack", True)  # the resend of what was stored before

            # A retried DELETE succeeds again; the deletion is counted once.
            assert (await alice_http.delete(path)).status_code == 204
            text = (await alice_http.get("/metrics")).text
    assert 'kefu_media_deletions_total{kind="image"} 1.0' in text
    assert 'kefu_media_refused_total{code="attachment_deleted"} 5.0' in text


async def test_who_may_delete_an_attachment_is_the_authorization_table(gw: Running) -> None:
    """Every cell of ATTACHMENT_TABLE over HTTP: each role as the uploader, as someone else of
    the tenant, and from another tenant; and unknown ids, anonymous callers and key scopes."""
    from gateway.conversations import authz
    from gateway.http import keys

    with trio.fail_after(60):
        async with connect(gw.url, token("alice"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
            secret = await new_key(gw, scopes=("ingest",))
            key_user = f"apikey:{keys.parse(secret)[0]}"
            media = gw.node.media

            async def stored(uploader: str) -> str:
                async def body():
                    yield samples.jpeg()
                return (await media.upload("shop1", uploader, "system", conv, "image", body(), tenant_wide=True)).id

            for role, row in authz.ATTACHMENT_TABLE["delete_attachment"].items():
                user = f"{role}-user"
                for rel, outcome in zip(authz.ATTACHMENT_RELATIONS, row):
                    uploader = (key_user if role == "system" else user) if rel == authz.UPLOADER else "someone-else"
                    att = await stored(uploader)
                    if role == "system":
                        caller = client(gw, secret if rel != authz.OTHER_TENANT else await new_key(gw, tenant="shop2", scopes=("admin",)))
                    else:
                        caller = http(gw, user, role, tenant="shop2" if rel == authz.OTHER_TENANT else "shop1")
                    async with caller as api:
                        answer = await api.delete(f"/v1/attachments/{att}")
                    if outcome == authz.ALLOW:
                        assert answer.status_code == 204, (role, rel, answer.text)
                    else:
                        problem(answer, {"not_found": 404, "forbidden": 403}[outcome], outcome)
                    assert ((await gw.node.store.get_attachment(att)).deleted_at is not None) == (outcome == authz.ALLOW), (role, rel)

            att = await stored("alice")
            async with http(gw, "alice") as alice_http, http(gw) as anonymous, client(gw, await new_key(gw, scopes=("read",))) as reader:
                problem(await alice_http.delete("/v1/attachments/no-such-id"), 404, "not_found")
                problem(await anonymous.delete(f"/v1/attachments/{att}"), 401, "unauthenticated")
                problem(await reader.delete(f"/v1/attachments/{att}"), 403, "forbidden")  # a read key may not
                assert (await alice_http.get(f"/v1/attachments/{att}")).status_code == 200


@pytest.mark.parametrize("make, content_type", [(samples.heic, "image/heic"), (samples.avif, "image/avif")], ids=["heic", "avif"])
async def test_an_iphone_heic_or_an_avif_photo_is_sent_with_a_jpeg_thumbnail(gw: Running, make, content_type: str) -> None:
    """Files encoded here by pillow-heif and Pillow: sniffed from the bytes (sent as application/
    octet-stream and named .jpg), decoded in the worker, the recipient sees a JPEG thumbnail."""
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, connect(gw.url, token("bob", "agent"), resume={}) as agent, \
                http(gw, "alice") as alice_http, http(gw, "bob", "agent") as bob_http:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)
            photo = make(800, 600)
            up = await upload(alice_http, conv, "image", photo, name="IMG_0001.jpg", **{"content-type": "image/jpeg"})
            assert up.status_code == 201, up.text
            image = up.json()
            assert (image["content_type"], image["width"], image["height"]) == (content_type, 800, 600)
            await shopper.ok("send", conv=conv, cmid="h", body={"kind": "image", "attachment": image["id"]})
            got = (await agent.next("msg", conv=conv, cmid="h"))["body"]
            assert (got["type"], got["w"], got["h"], got["thumbnail"]) == (content_type, 800, 600, True)
            thumb = await bob_http.get(f"/v1/attachments/{image['id']}/content", params={"variant": "thumbnail"})
            assert (thumb.status_code, thumb.headers["content-type"]) == (200, "image/jpeg")
            still = Image.open(io.BytesIO(thumb.content))
            assert (still.format, still.size) == ("JPEG", (320, 240))
            rgb = still.convert("RGB")
            assert rgb.getpixel((40, 120))[0] > 200 and rgb.getpixel((280, 120))[2] > 200  # red left, blue right
            original = await bob_http.get(f"/v1/attachments/{image['id']}/content")
            assert (original.content, original.headers["content-type"]) == (photo, content_type)

            # What a browser's <img> opens: for HEIC (which only Safari shows) a JPEG of the whole
            # photo made at upload; for AVIF, which browsers show, the original itself.
            async with http(gw) as anonymous:
                shown = await anonymous.get(relative(image["display_url"]))  # a signed URL, no credentials
                part = await anonymous.get(relative(image["display_url"]), headers={"range": "bytes=0-99"})
            if content_type == "image/heic":
                assert (shown.status_code, shown.headers["content-type"]) == (200, "image/jpeg")
                whole = Image.open(io.BytesIO(shown.content))
                assert (whole.format, whole.size) == ("JPEG", (800, 600))
                rgb = whole.convert("RGB")
                assert rgb.getpixel((100, 300))[0] > 200 and rgb.getpixel((700, 300))[2] > 200
                assert shown.headers["content-disposition"].startswith('inline; filename="IMG_0001.jpg.jpg"')
                assert len(stored_files(gw)) == 3  # the original, its thumbnail, its display copy
            else:
                assert (shown.content, shown.headers["content-type"]) == (photo, content_type)
                assert len(stored_files(gw)) == 2
            assert (part.status_code, part.content) == (206, shown.content[:100])
            assert part.headers["content-range"] == f"bytes 0-99/{len(shown.content)}"
            assert (await alice_http.delete(f"/v1/attachments/{image['id']}")).status_code == 204
            assert stored_files(gw) == []  # the display copy goes with the rest


async def test_a_heic_photo_stored_without_a_display_copy_gets_one_on_its_first_display_download(gw: Running, caplog: pytest.LogCaptureFixture) -> None:
    """Photos uploaded before Kefu made display copies: the first ``display`` download makes the
    copy in a worker, once however many ask at the same time; later downloads read it. One whose
    original no longer decodes answers not_found and is logged."""
    caplog.set_level(logging.INFO, logger="kefu.media")
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, http(gw, "alice") as alice_http, http(gw) as anonymous:
            conv = (await shopper.ok("open"))["conv"]["id"]
            image = (await upload(alice_http, conv, "image", samples.heic(800, 600))).json()
            copy = gw.data / "media" / "blobs" / display_key(image["id"])
            copy.unlink()  # as an upload of an earlier version left it
            shown: list[httpx.Response] = []

            async def fetch() -> None:
                shown.append(await anonymous.get(relative(image["display_url"])))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(fetch)
                nursery.start_soon(fetch)
            assert [(r.status_code, r.headers["content-type"]) for r in shown] == [(200, "image/jpeg")] * 2
            assert shown[0].content == shown[1].content == copy.read_bytes()
            whole = Image.open(io.BytesIO(shown[0].content))
            assert (whole.format, whole.size) == ("JPEG", (800, 600))
            rgb = whole.convert("RGB")
            assert rgb.getpixel((100, 300))[0] > 200 and rgb.getpixel((700, 300))[2] > 200
            again = await anonymous.get(relative(image["display_url"]), headers={"range": "bytes=0-99"})
            assert (again.status_code, again.content) == (206, shown[0].content[:100])
            assert "kefu_media_display_copies_made_total 1.0" in (await alice_http.get("/metrics")).text

            broken = (await upload(alice_http, conv, "image", samples.heic(64, 48))).json()
            (gw.data / "media" / "blobs" / display_key(broken["id"])).unlink()
            original = gw.data / "media" / "blobs" / blob_key(broken["id"])
            original.write_bytes(original.read_bytes()[:200])  # damaged on disk since its upload
            problem(await anonymous.get(relative(broken["display_url"])), 404, "not_found")
            assert not (gw.data / "media" / "blobs" / display_key(broken["id"])).exists()
            assert "kefu_media_display_copies_made_total 1.0" in (await alice_http.get("/metrics")).text
    assert any(f"could not make the missing display copy of attachment {broken['id']}" in r.getMessage() for r in caplog.records)
