"""Who may upload to a conversation and who may fetch its attachments.

Uploading: a participant of the open conversation (the people who could send the message that
will carry it). Fetching: the conversation's participants and the supervisors of its tenant. Users
of another tenant learn nothing: to them every attachment is ``not_found``.
"""

from __future__ import annotations

from typing import Iterable

from ..model import OPEN, Attachment, Conversation, Participant
from .errors import MediaError


def check_upload(conv: Conversation | None, participants: Iterable[Participant], tenant: str, user: str) -> Conversation:
    """The conversation ``user`` may upload to; raises MediaError (not_found, forbidden)."""
    if conv is None or conv.tenant != tenant:
        raise MediaError("not_found", "no such conversation")
    if not any(p.user == user for p in participants):
        raise MediaError("forbidden", "only a participant may upload to a conversation")
    if conv.status != OPEN:
        raise MediaError("forbidden", "the conversation is closed")
    return conv


def check_download(
    attachment: Attachment | None, participants: Iterable[Participant], tenant: str, user: str, role: str
) -> Attachment:
    """The attachment ``user`` may fetch; raises MediaError (not_found, forbidden)."""
    if attachment is None or attachment.tenant != tenant:
        raise MediaError("not_found", "no such attachment")
    if role == "supervisor" or any(p.user == user for p in participants):
        return attachment
    raise MediaError("forbidden", "only the conversation's participants and the tenant's supervisors may fetch it")
