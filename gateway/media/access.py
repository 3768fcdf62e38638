"""Who may upload to a conversation, who may fetch its attachments, and who may delete one.

Uploading is sending (the conversation table's ``send``: its participants, into the open
conversation), and fetching is reading its history (``history``: its participants and the
tenant's supervisors), so both answer what the conversation itself answers: a shopper learns
nothing of a conversation that is not theirs (``not_found``), staff of the tenant are
``forbidden``. A tenant's backend (an API key, ``tenant_wide``) may do both in any conversation
of its tenant. Deleting: its uploader, the tenant's supervisors and its backend, as the
authorization table says (``gateway.conversations.authz.ATTACHMENT_TABLE``, docs/authorization.md).
Users of another tenant learn nothing: to them every attachment is ``not_found``.
"""

from __future__ import annotations

from ..conversations.authz import (
    ALLOW, ATTACHMENT_MESSAGES, NOT_FOUND, PARTICIPANT, SAME_TENANT, attachment_relation, decide, decide_attachment,
)
from ..model import OPEN, Attachment, Conversation
from .errors import MediaError


def conversation_outcome(action: str, conv_tenant: str | None, tenant: str, role: str, *, member: bool, tenant_wide: bool) -> str:
    """The conversation table's outcome of ``action`` for a caller of ``tenant`` in ``role``
    (a participant when ``member``; an API key acting for the tenant when ``tenant_wide``)."""
    if conv_tenant is None or conv_tenant != tenant:
        return NOT_FOUND
    if tenant_wide:
        return ALLOW
    return decide(action, role, PARTICIPANT if member else SAME_TENANT)


def check_upload(conv: Conversation | None, tenant: str, role: str, *, member: bool, tenant_wide: bool = False) -> Conversation:
    """The conversation a caller may upload to (as it may ``send`` there); raises MediaError
    (not_found, forbidden)."""
    outcome = conversation_outcome("send", None if conv is None else conv.tenant, tenant, role, member=member, tenant_wide=tenant_wide)
    if outcome == NOT_FOUND:
        raise MediaError("not_found", "no such conversation")
    if outcome != ALLOW:
        raise MediaError("forbidden", "only a participant may upload to a conversation")
    assert conv is not None
    if conv.status != OPEN:
        raise MediaError("forbidden", "the conversation is closed")
    return conv


def check_download(attachment: Attachment | None, tenant: str, role: str, *, member: bool, tenant_wide: bool = False) -> Attachment:
    """The attachment a caller may fetch (as it may read its conversation's ``history``: a
    participant, or a supervisor); raises MediaError (not_found, forbidden)."""
    outcome = conversation_outcome(
        "history", None if attachment is None else attachment.tenant, tenant, role, member=member, tenant_wide=tenant_wide
    )
    if outcome == NOT_FOUND:
        raise MediaError("not_found", "no such attachment")
    if outcome != ALLOW:
        raise MediaError("forbidden", "only the conversation's participants and the tenant's supervisors may fetch it")
    assert attachment is not None
    return attachment


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
