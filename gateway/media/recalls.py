"""A recalled message's attachment is deleted: a shopper who takes back the photo of their ID card
sent by mistake takes back the file too, not only the message that showed it (as WeChat does).

The conversation service tells its watchers of a recall on the data path (no I/O there); the
deletions run in a task of their own, through ``Media.delete`` as the system: the record is
marked, the blobs are removed, and every download and signed URL answers ``410
attachment_deleted`` from then on."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import trio

from ..conversations.service import Watcher
from ..hub import ConvState
from ..model import SYSTEM, StoredMessage
from ..store.base import StoreError
from .errors import MediaError
from .service import Media

log = logging.getLogger("kefu.media")

MAX_WAITING = 10_000  # deletions queued at most (a recall flood beyond it is logged; the sweep does not catch these)


class RecalledAttachments(Watcher):
    def __init__(self, media: Media) -> None:
        self.media = media
        self._waiting: deque[tuple[str, str]] = deque()  # (tenant, attachment id)
        self._wake = trio.Event()

    def on_recalled(self, state: ConvState, m: StoredMessage, body: dict[str, Any]) -> None:
        attachment = body.get("attachment")
        if type(attachment) is not str or not attachment:
            return
        if len(self._waiting) >= MAX_WAITING:
            log.error("attachment %s of recalled message %d of %s not deleted: %d deletions already wait", attachment, m.seq, m.conv_id, MAX_WAITING)
            return
        self._waiting.append((state.conv.tenant, attachment))
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            if not self._waiting:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            tenant, attachment = self._waiting.popleft()
            try:
                await self.media.delete(tenant, SYSTEM, SYSTEM, attachment)
            except (StoreError, OSError) as exc:
                log.error("attachment %s of a recalled message not deleted: %s", attachment, exc)
            except MediaError as exc:  # not found: another tenant's id in a body (bodies pass through), or gone
                log.info("attachment %s of a recalled message not deleted: %s", attachment, exc)
