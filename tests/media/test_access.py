"""Who may upload into a conversation and fetch its attachments."""

from __future__ import annotations

import pytest

from gateway.media.access import check_download, check_upload
from gateway.media.errors import MediaError
from gateway.model import CLOSED, OPEN, Attachment, Conversation

CONV = Conversation("c1", "shop1", "alice", "app", OPEN, 1)
ATT = Attachment("a1", "shop1", "c1", "alice", "image", "image/png", 10, 2)


def code(call) -> str:
    with pytest.raises(MediaError) as info:
        call()
    return info.value.code


def test_upload() -> None:
    assert check_upload(CONV, "shop1", member=True) is CONV
    assert code(lambda: check_upload(CONV, "shop1", member=False)) == "forbidden"
    assert code(lambda: check_upload(CONV, "shop2", member=True)) == "not_found"  # another tenant learns nothing
    assert code(lambda: check_upload(None, "shop1", member=True)) == "not_found"
    closed = Conversation("c1", "shop1", "alice", "app", CLOSED, 1)
    assert code(lambda: check_upload(closed, "shop1", member=True)) == "forbidden"


def test_download() -> None:
    assert check_download(ATT, "shop1", member=True, supervisor=False) is ATT
    assert check_download(ATT, "shop1", member=False, supervisor=True) is ATT
    assert code(lambda: check_download(ATT, "shop1", member=False, supervisor=False)) == "forbidden"
    assert code(lambda: check_download(ATT, "shop2", member=True, supervisor=True)) == "not_found"
    assert code(lambda: check_download(None, "shop1", member=True, supervisor=True)) == "not_found"
