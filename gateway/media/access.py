"""Who may upload to a conversation and who may fetch its attachments.

Uploading: a participant of the open conversation (the people who could send the message that
will carry it). Fetching: the conversation's participants and the supervisors of its tenant. Users
of another tenant learn nothing: to them every attachment is ``not_found``.
"""

from __future__ import annotations

from ..model import OPEN, Attachment, Conversation
from .errors import MediaError


def check_upload(conv: Conversation | None, tenant: str, *, member: bool) -> Conversation:
    """The conversation a user of ``tenant`` (a participant of it when ``member``) may upload
    to; raises MediaError (not_found, forbidden)."""
    if conv is None or conv.tenant != tenant:
        raise MediaError("not_found", "no such conversation")
    if not member:
        raise MediaError("forbidden", "only a participant may upload to a conversation")
    if conv.status != OPEN:
        raise MediaError("forbidden", "the conversation is closed")
    return conv


def check_download(attachment: Attachment | None, tenant: str, *, member: bool, supervisor: bool) -> Attachment:
    """The attachment a user of ``tenant`` may fetch: a participant of its conversation
    (``member``) or a supervisor; raises MediaError (not_found, forbidden)."""
    if attachment is None or attachment.tenant != tenant:
        raise MediaError("not_found", "no such attachment")
    if member or supervisor:
        return attachment
    raise MediaError("forbidden", "only the conversation's participants and the tenant's supervisors may fetch it")
