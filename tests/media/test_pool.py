"""Inspection in worker processes: the same facts and refusals as in a thread, at a lower CPU
priority, what passes stored by the worker, and a worker that dies (as the kernel's OOM killer ends one: SIGKILL) fails only the
upload it held, over real HTTP too, leaving no file and no row, while the gateway carries on."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
import trio

from gateway.app import Running, serve
from gateway.media.errors import MediaError
from gateway.media.blobs import FilesystemBlobStore
from gateway.media.inspection import Inspector, Keep, inspect
from gateway.media.kinds import MediaLimits
from gateway.media.pool import WORKER_NICENESS, InspectionPool

from ..conftest import make_config
from ..http.conftest import problem
from ..http.v1.test_attachments import LIMITS as HTTP_LIMITS
from ..http.v1.test_attachments import attachment_rows, http, sqlite_gw, stored_files, upload  # noqa: F401 (a fixture)
from ..support import connect, token
from . import samples

LIMITS = MediaLimits(image_bytes=300_000, file_bytes=60_000, thumbnail_edge=32)


def spooled(data: bytes):
    """An anonymous temporary file holding ``data``, like an upload's spool file."""
    f = tempfile.TemporaryFile()
    f.write(data)
    f.flush()
    return f


async def inspect_file(inspector: Inspector, kind: str, data: bytes):
    with spooled(data) as f:
        return await inspector.inspect(kind, f, len(data))


def niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])  # field 19


async def handed_over(pool: InspectionPool) -> list[int]:
    """The pids of the workers that hold a job, once every busy worker has been handed its job."""
    with trio.fail_after(10):
        while not (pool.busy and all(w.sent for w in pool.busy)):
            await trio.sleep(0.005)
    return [w.pid for w in pool.busy]


@pytest.fixture
async def inspector():
    inspector = Inspector(LIMITS, concurrency=2)
    yield inspector
    inspector.close()


async def test_a_worker_process_finds_the_same_facts_and_refusals_at_a_lower_priority(inspector: Inspector) -> None:
    data = samples.jpeg(64, 48, orientation=6)
    with trio.fail_after(30):
        found = await inspect_file(inspector, "image", data)
    with spooled(data) as f:
        assert found == inspect("image", f, len(data), LIMITS)  # the same, thumbnail byte for byte
    assert (found.width, found.height) == (48, 64)  # EXIF orientation applied
    [worker] = inspector.pool.idle
    assert worker.pid != os.getpid()
    assert niceness(worker.pid) == min(19, os.nice(0) + WORKER_NICENESS)
    assert os.sched_getscheduler(worker.pid) == os.SCHED_IDLE  # the event loop preempts it on waking
    for kind, bad, code in [
        ("image", samples.EXE, "unsupported_type"),
        ("image", samples.png_bomb(), "decompression_bomb"),
        ("image", samples.truncated(samples.jpeg(300, 300)), "undecodable"),
        ("file", b"x" * 60_001, "file_too_large"),
    ]:
        with pytest.raises(MediaError) as info:
            with trio.fail_after(10):
                await inspect_file(inspector, kind, bad)
        assert info.value.code == code
    assert inspector.pool.started == 1 and inspector.pool.died == 0  # one worker did it all


def allowed_cpus(pid: int) -> set[int]:
    return set(os.sched_getaffinity(pid))


async def test_workers_run_on_the_cpus_they_are_given_and_the_gateway_stays_where_it_is() -> None:
    mine = allowed_cpus(0)
    given = frozenset([max(mine)])  # one CPU (on a machine of several, not all the gateway's)
    inspector = Inspector(LIMITS, concurrency=1, cpus=given)
    try:
        with trio.fail_after(30):
            found = await inspect_file(inspector, "image", samples.jpeg(64, 48))
        assert found.width == 64
        [worker] = inspector.pool.idle
        assert allowed_cpus(worker.pid) == given
        assert os.sched_getscheduler(worker.pid) == os.SCHED_IDLE  # and still at the lower priority
        assert allowed_cpus(0) == mine
    finally:
        inspector.close()


async def test_a_worker_process_stores_what_passes_and_nothing_else(inspector: Inspector, tmp_path: Path) -> None:
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    data = samples.jpeg(64, 48)
    with trio.fail_after(30), spooled(data) as f:
        found = await inspector.inspect("image", f, len(data), Keep(blobs, "ab/x", "ab/x.thumb"))
    assert blobs.read("ab/x", 0, len(data) + 1) == data
    assert blobs.read("ab/x.thumb", 0, 1 << 20) == found.thumbnail
    with pytest.raises(MediaError), trio.fail_after(30), spooled(samples.EXE) as f:
        await inspector.inspect("image", f, len(samples.EXE), Keep(blobs, "cd/y", "cd/y.thumb"))
    assert sorted(k for k, _ in blobs.keys()) == ["ab/x", "ab/x.thumb"]


async def test_a_worker_that_dies_fails_only_the_upload_it_held(inspector: Inspector) -> None:
    pool = inspector.pool
    with trio.fail_after(30):
        await inspect_file(inspector, "image", samples.jpeg())
        [doomed] = pool.idle
        os.kill(doomed.pid, signal.SIGSTOP)  # it will take the next job and never answer
        outcome: list = []

        async def held_by_the_doomed_worker() -> None:
            try:
                outcome.append(await inspect_file(inspector, "image", samples.jpeg(300, 200)))
            except MediaError as exc:
                outcome.append(exc.code)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(held_by_the_doomed_worker)
            assert await handed_over(pool) == [doomed.pid]
            other = await inspect_file(inspector, "image", samples.jpeg(80, 60))  # another worker serves it
            assert other.width == 80
            os.kill(doomed.pid, signal.SIGKILL)
        assert outcome == ["inspection_failed"]
        assert pool.died == 1 and doomed not in pool.idle
        again = await inspect_file(inspector, "image", samples.jpeg(300, 200))
        assert again.width == 300


async def test_a_worker_found_dead_between_uploads_is_replaced_unnoticed(inspector: Inspector) -> None:
    pool = inspector.pool
    with trio.fail_after(30):
        await inspect_file(inspector, "image", samples.jpeg())
        [worker] = pool.idle
        os.kill(worker.pid, signal.SIGKILL)
        while worker.process.is_alive():
            await trio.sleep(0.01)
        found = await inspect_file(inspector, "image", samples.jpeg(100, 50))
    assert found.width == 100
    assert pool.started == 2 and pool.died == 0
    assert pool.idle[0].pid != worker.pid


async def test_over_http_a_dead_worker_is_422_with_nothing_stored_and_the_gateway_carries_on(sqlite_gw: Running) -> None:
    gw = sqlite_gw
    pool = gw.node.media.uploads.inspector.pool
    with trio.fail_after(30):
        async with connect(gw.url, token("alice"), resume={}) as shopper, http(gw, "alice") as api:
            conv = (await shopper.ok("open"))["conv"]["id"]
            assert (await upload(api, conv, "image", samples.jpeg())).status_code == 201
            files, rows = stored_files(gw), attachment_rows(gw)
            [doomed] = pool.idle
            os.kill(doomed.pid, signal.SIGSTOP)
            responses = []

            async def doomed_upload() -> None:
                responses.append(await upload(api, conv, "image", samples.jpeg(320, 240)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(doomed_upload)
                await handed_over(pool)
                assert (await shopper.request("ping"))["t"] == "pong"  # messages flow meanwhile
                os.kill(doomed.pid, signal.SIGKILL)
            problem(responses[0], 422, "inspection_failed")
            assert stored_files(gw) == files and attachment_rows(gw) == rows
            assert gw.registry.get_sample_value("kefu_media_refused_total", {"code": "inspection_failed"}) == 1
            assert (await upload(api, conv, "image", samples.jpeg())).status_code == 201
            assert (await shopper.request("ping"))["t"] == "pong"


async def test_threads_remain_an_option(nursery, tmp_path) -> None:
    running = await nursery.start(serve, make_config(tmp_path, media_inspection="threads", **HTTP_LIMITS))
    assert running.node.media.uploads.inspector.pool is None
    with trio.fail_after(20):
        async with connect(running.url, token("alice"), resume={}) as shopper, http(running, "alice") as api:
            conv = (await shopper.ok("open"))["conv"]["id"]
            response = await upload(api, conv, "image", samples.jpeg(64, 48))
            assert response.status_code == 201 and response.json()["width"] == 64
    running.node.stop()


async def test_media_cpus_places_the_workers_of_a_served_gateway(nursery, tmp_path) -> None:
    cpu = max(allowed_cpus(0))
    running = await nursery.start(serve, make_config(tmp_path, media_cpus=str(cpu), **HTTP_LIMITS))
    with trio.fail_after(30):
        async with connect(running.url, token("alice"), resume={}) as shopper, http(running, "alice") as api:
            conv = (await shopper.ok("open"))["conv"]["id"]
            assert (await upload(api, conv, "image", samples.jpeg(64, 48))).status_code == 201
    [worker] = running.node.media.uploads.inspector.pool.idle
    assert allowed_cpus(worker.pid) == {cpu}
    running.node.stop()
