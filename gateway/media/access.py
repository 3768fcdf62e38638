"""Who may upload to a conversation, who may fetch its attachments, and who may delete one.

Uploading: a participant of the open conversation (the people who could send the message that
will carry it). Fetching: the conversation's participants and the supervisors of its tenant.
Deleting: its uploader, the tenant's supervisors and its backend, as the authorization table
says (``gateway.conversations.authz.ATTACHMENT_TABLE``, docs/authorization.md). Users of another
tenant learn nothing: to them every attachment is ``not_found``.
"""

from __future__ import annotations

from ..conversations.authz import ALLOW, ATTACHMENT_MESSAGES, attachment_relation, decide_attachment
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


def check_delete(attachment: Attachment | None, tenant: str, user: str, role: str) -> Attachment:
    """The attachment ``user`` (of ``tenant``, in ``role``) may delete; raises MediaError
    (not_found, forbidden) as the authorization table decides."""
    rel = attachment_relation(tenant, user, None if attachment is None else attachment.tenant, "" if attachment is None else attachment.uploader)
    outcome = decide_attachment("delete_attachment", role, rel)
    if outcome != ALLOW:
        raise MediaError(outcome, ATTACHMENT_MESSAGES[("delete_attachment", outcome)])
    assert attachment is not None
    return attachment


def check_present(attachment: Attachment) -> Attachment:
    """``attachment`` unless it was deleted (``attachment_deleted``: its bytes are gone)."""
    if attachment.deleted_at is not None:
        raise MediaError("attachment_deleted", "the attachment was deleted")
    return attachment
