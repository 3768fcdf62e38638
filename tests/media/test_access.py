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
    for role in ("shopper", "agent", "bot"):
        assert check_upload(CONV, "shop1", role, member=True) is CONV
    assert check_upload(CONV, "shop1", "system", member=False, tenant_wide=True) is CONV  # the tenant's backend
    assert code(lambda: check_upload(CONV, "shop1", "shopper", member=False)) == "not_found"  # not theirs: learns nothing
    for role in ("agent", "supervisor", "bot"):
        assert code(lambda: check_upload(CONV, "shop1", role, member=False)) == "forbidden"  # staff: join first
    assert code(lambda: check_upload(CONV, "shop2", "supervisor", member=True)) == "not_found"  # another tenant learns nothing
    assert code(lambda: check_upload(CONV, "shop2", "system", member=False, tenant_wide=True)) == "not_found"
    assert code(lambda: check_upload(None, "shop1", "shopper", member=True)) == "not_found"
    closed = Conversation("c1", "shop1", "alice", "app", CLOSED, 1)
    assert code(lambda: check_upload(closed, "shop1", "shopper", member=True)) == "forbidden"


def test_download() -> None:
    for role in ("shopper", "agent", "bot", "supervisor"):
        assert check_download(ATT, "shop1", role, member=True) is ATT
    assert check_download(ATT, "shop1", "supervisor", member=False) is ATT
    assert check_download(ATT, "shop1", "system", member=False, tenant_wide=True) is ATT
    assert code(lambda: check_download(ATT, "shop1", "shopper", member=False)) == "not_found"  # as for the conversation
    assert code(lambda: check_download(ATT, "shop1", "agent", member=False)) == "forbidden"
    assert code(lambda: check_download(ATT, "shop2", "supervisor", member=True)) == "not_found"
    assert code(lambda: check_download(ATT, "shop2", "system", member=False, tenant_wide=True)) == "not_found"
    assert code(lambda: check_download(None, "shop1", "shopper", member=True)) == "not_found"
