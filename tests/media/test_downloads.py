"""A download whose blob is deleted while it is being sent (its uploader deleted it, or its message
was recalled) ends short and quietly: the headers are out, there is no error to answer with."""

from __future__ import annotations

import io

from gateway.media.blobs import FilesystemBlobStore
from gateway.media.downloads import CHUNK, Download


async def test_a_blob_deleted_mid_download_ends_the_body_short(tmp_path, caplog):
    blobs = FilesystemBlobStore(tmp_path / "blobs")
    data = bytes(range(256)) * (3 * CHUNK // 256)
    blobs.put("ab/clip", io.BytesIO(data))
    download = Download(200, {}, "ab/clip", 0, len(data), blobs)
    sent = []
    with caplog.at_level("INFO", logger="kefu.media"):
        async for chunk in download.chunks():
            sent.append(chunk)
            if len(sent) == 1:
                assert blobs.delete("ab/clip")
    assert sent == [data[:CHUNK]]
    assert "deleted during its download, at byte %d of %d" % (CHUNK, len(data)) in caplog.text
