"""The domain records every layer shares: conversations, participants, messages, receipts.

They are plain frozen records with no behaviour, so stores, the node and tests can build and
compare them freely. Times are integer milliseconds since the Unix epoch (server clock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import _native

# The three records every message makes on its way (the append op, its result, the stored
# message) have a native twin: ``gateway._records_c`` from ``native/records.pyx``, used when built
# (KEFU_PUREPYTHON=1 forces the frozen dataclasses of ``gateway._records_py``).
_records = _native.load("records")
if _records is None:
    from . import _records_py as _records

    RECORDS = "python"
else:
    RECORDS = "native"
StoredMessage = _records.StoredMessage
AppendMessage = _records.AppendMessage
Appended = _records.Appended
del _records

ROLES = ("shopper", "agent", "supervisor", "bot")
CHANNELS = ("app", "miniprogram", "web")
RECEIPT_KINDS = ("delivered", "read")

OPEN = "open"
CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who acts on a conversation: a token's holder (``auth.Identity`` is one), a tenant's backend
    through the REST API, or the server itself (role ``system``: routing, lifecycle notices)."""

    tenant: str
    user: str
    role: str  # one of ROLES, or SYSTEM
    channel: str = ""
    name: str = ""


SYSTEM = "system"  # the role (and sender) of what the server itself does and says


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    tenant: str
    customer: str  # user id of the shopper the conversation serves
    channel: str
    status: str  # OPEN or CLOSED
    created_at: int
    subject: str = ""
    last_seq: int = 0  # highest sequence number appended (0: none yet)
    stage: str = "opened"  # where routing has it: gateway.routing.lifecycle.STAGES
    assignee: str = ""  # the agent serving it, while assigned
    group: str = ""  # the skill group it was routed to


@dataclass(frozen=True, slots=True)
class Participant:
    conv_id: str
    user: str
    role: str
    joined_at: int


@dataclass(frozen=True, slots=True)
class Receipt:
    conv_id: str
    user: str
    kind: str  # "delivered" or "read"
    seq: int


@dataclass(frozen=True, slots=True)
class Attachment:
    """An uploaded file's facts, as read from its bytes (gateway.media); its bytes live in a blob
    store under keys derived from ``id``. Unknown facts are None (a file has no width)."""

    id: str
    tenant: str
    conv_id: str  # the conversation it was uploaded to: who may fetch it follows from there
    uploader: str
    kind: str  # image, video, voice or file
    content_type: str  # read from the bytes, never from the name or the declared type
    size: int  # bytes
    created_at: int
    name: str = ""  # the uploader's file name: shown, never trusted
    width: int | None = None  # images: as displayed (after EXIF orientation); videos: the frame size
    height: int | None = None
    duration_ms: int | None = None  # video and voice, when it can be read
    thumbnail_size: int | None = None  # bytes of the JPEG thumbnail (images, video posters), None without one
    deleted_at: int | None = None  # when it was deleted (its blobs removed); None while it exists


# ---- write operations: what the store's writer applies, many to a transaction --------------------


@dataclass(frozen=True, slots=True)
class CreateConversation:
    conversation: Conversation
    participants: tuple[Participant, ...] = ()


@dataclass(frozen=True, slots=True)
class AddParticipant:
    participant: Participant


@dataclass(frozen=True, slots=True)
class RemoveParticipant:
    conv_id: str
    user: str


@dataclass(frozen=True, slots=True)
class SetReceipt:
    """Raise a cumulative receipt; a lower or equal ``seq`` than stored leaves it unchanged.
    The result is the Receipt as stored afterwards."""

    receipt: Receipt


@dataclass(frozen=True, slots=True)
class SetStatus:
    """Change a conversation's status and routing fields; None leaves a field as it is.
    The result is the Conversation as stored afterwards."""

    conv_id: str
    status: str | None = None
    stage: str | None = None
    assignee: str | None = None
    group: str | None = None

    def changes(self) -> dict[str, str]:
        return {k: v for k, v in (("status", self.status), ("stage", self.stage), ("assignee", self.assignee), ("group", self.group)) if v is not None}


@dataclass(frozen=True, slots=True)
class RecallMessage:
    """Replace a stored message's body: a recall (its sender takes it back, or a supervisor
    removes it). Its seq, sender and time stay, so the sequence stays gap-free. The result is the
    message as now stored; NotFound when the conversation has no such seq."""

    conv_id: str
    seq: int
    body: bytes


@dataclass(frozen=True, slots=True)
class SetTags:
    """Replace a conversation's tags (labels a workspace files it under). The result is the tags
    as stored: unique, sorted."""

    conv_id: str
    tags: tuple[str, ...]



# ---- tenant administration: API keys, agents, routing settings (the REST API writes them) ------

API_SCOPES = ("admin", "ingest", "bot", "read")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A tenant's API key. Only a hash of its secret is kept: the secret is shown once, at creation."""

    id: str  # the public half of the key: named in lists, logs and ``revoke``
    tenant: str
    name: str
    scopes: tuple[str, ...]  # of API_SCOPES
    secret_hash: str  # hex SHA-256 of the secret half (high-entropy, so no slow hash is needed)
    created_at: int
    revoked_at: int = 0  # 0 while the key is valid


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """An agent's persisted settings: the defaults routing uses before (and besides) ``status``."""

    tenant: str
    user: str
    name: str = ""
    groups: tuple[str, ...] = ("default",)
    languages: tuple[str, ...] = ()
    max_active: int = 5
    disabled: bool = False  # a disabled agent is never routed to
    created_at: int = 0
    updated_at: int = 0


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """A tenant's routing settings as a JSON object (the ``--routing-file`` entry's shape)."""

    tenant: str
    routing: str
    updated_at: int


@dataclass(frozen=True, slots=True)
class CreateApiKey:
    """Store a new key; the result is the key. An id already used is a Conflict."""

    key: ApiKey


@dataclass(frozen=True, slots=True)
class RevokeApiKey:
    """Revoke ``tenant``'s key ``key_id`` at ``at`` (a revoked key stays revoked at its first time);
    the result is the key as stored. Another tenant's key is NotFound."""

    tenant: str
    key_id: str
    at: int


@dataclass(frozen=True, slots=True)
class SaveAgent:
    """Store an agent's profile whole. ``create``: a profile already there is a Conflict;
    otherwise a profile not there is NotFound. The result is the profile as stored."""

    agent: AgentProfile
    create: bool = False


@dataclass(frozen=True, slots=True)
class SaveTenantSettings:
    """Store (replace) a tenant's settings; the result is the settings."""

    settings: TenantSettings
@dataclass(frozen=True, slots=True)
class AddAttachment:
    """Record an attachment whose blobs are already durable. The result is the Attachment;
    NotFound when its conversation does not exist."""

    attachment: Attachment


@dataclass(frozen=True, slots=True)
class DeleteAttachment:
    """Forget an attachment's record (the cleanup of an upload that failed); the result says
    whether there was one."""

    attachment_id: str


@dataclass(frozen=True, slots=True)
class MarkAttachmentDeleted:
    """Mark an attachment deleted at ``deleted_at`` (its blobs are then removed). The record
    stays, so that the messages that carried it keep a known id and its downloads can answer
    that it is gone. The result is the Attachment as marked (one already deleted keeps its first
    ``deleted_at``), or None when there is none."""

    attachment_id: str
    deleted_at: int


# ---- the agent workspace (gateway.customers): small JSON records under a tenant, a kind and a key --


@dataclass(frozen=True, slots=True)
class Record:
    """One workspace record: a customer, an identity link, a merge, an order, a product, a quick
    reply, a private note, a conversation's workspace facts (product, tags, satisfaction), business
    hours. ``value`` is JSON text; what it holds is the business of the module that owns ``kind``."""

    tenant: str
    kind: str
    key: str
    value: str
    updated_at: int


@dataclass(frozen=True, slots=True)
class PutRecords:
    """Store (insert or replace) every record, all or none: a merge relinks several identities and
    records itself at once. The result is the number of records stored."""

    records: tuple[Record, ...]


@dataclass(frozen=True, slots=True)
class DeleteRecord:
    """Forget one record; the result says whether there was one."""

    tenant: str
    kind: str
    key: str


# ---- fencing: the routing leader's writes carry its term's number (gateway.routing.lease) ------


@dataclass(frozen=True, slots=True)
class Fenced:
    """Apply ``op`` only if ``fence`` is at least the highest fence any fenced write to this store
    has carried; it then becomes the highest. A lower one is StaleFence and changes nothing: a
    leader of a later term has written since, and this one's decision must not land after its
    successor's. ``op`` None: the fence alone (a new leader claims its number before it reads the
    store). The result is ``op``'s (None without one); a failing ``op`` raises no fence."""

    fence: int
    op: WriteOp | None = None


WriteOp = (
    CreateConversation | AddParticipant | RemoveParticipant | AppendMessage | RecallMessage | SetReceipt | SetStatus | SetTags
    | CreateApiKey | RevokeApiKey | SaveAgent | SaveTenantSettings
    | AddAttachment | DeleteAttachment | MarkAttachmentDeleted | PutRecords | DeleteRecord | Fenced
)


@dataclass(slots=True)
class Page:
    """A page of messages, oldest first; ``more`` says whether the range went on past it."""

    messages: list[StoredMessage] = field(default_factory=list)
    more: bool = False
