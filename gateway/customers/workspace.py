"""The agent's desk over the conversation service: customer context, private notes, tags, quick
replies, the inbox, business hours and satisfaction surveys.

Protocol requests (served through ``RequestHandlers.register``, answered with ``ok``) and the REST
API (gateway/http/v1/customers.py, ingest.py, desk.py) both call the methods here; who may act on
a conversation is the conversation service's authz table (``update`` for the staff serving it,
``history`` to read it). Routing calls ``assigned_context``, ``back_at`` and ``resolved``.

A context provider that is slow or fails never holds a conversation up: ``assigned`` waits at most
``wait_s`` for it, then carries ``{"status": "pending"}`` and the context follows in a
``customer_context`` event when it arrives (or ``"status": "unavailable"`` with the reason).

Private notes are told only to the staff participants' own connections (``notify_user``), never
through the conversation's fan-out, and are stored apart from its messages: a shopper's connection
and a shopper's history never hold one.
"""

from __future__ import annotations

import logging
import secrets
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable

import msgpack
import trio

from ..conversations.service import ConversationService, Watcher, system
from ..model import OPEN, Conversation, Principal, StoredMessage
from ..protocol import envelope as env
from ..protocol.errors import RequestError
from . import hours as business_hours
from . import replies as quick
from .. import variables
from .book import RecordBook, wall_clock
from .catalog import CatalogStore
from .context import BuiltinProvider, ContextProvider, ContextUnavailable
from .identity import CustomerDirectory

if TYPE_CHECKING:
    from ..hub import ConvState

log = logging.getLogger("kefu.workspace")

STAFF = ("agent", "supervisor")
MAX_NOTE = 2000
MAX_REPLIES = 500  # per owner (the tenant, or one agent)
SURVEY_TTL_S = 24 * 3600
INBOX_LIMIT = 200
WAITING_SCAN = 50  # messages read back to find when the shopper started waiting


class WorkspaceService(Watcher):
    def __init__(
        self, service: ConversationService, *, clock: Callable[[], float] = wall_clock, provider: ContextProvider | None = None,
        wait_s: float = 0.2, timeout_s: float = 3.0, survey_ttl_s: float = SURVEY_TTL_S,
    ) -> None:
        """``clock``: seconds since the epoch (business hours, survey expiry; tests inject one);
        ``provider``: None for the built-in one; ``wait_s``: how long ``assigned`` waits for the
        context; ``timeout_s``: the most any context fetch may take before it is unavailable."""
        self.service = service
        self.book = RecordBook(service.store, lambda: self.clock())
        self.clock = clock
        self.directory = CustomerDirectory(self.book)
        self.catalog = CatalogStore(self.book)
        self.provider: ContextProvider = provider or BuiltinProvider(self.book, self.directory, self.catalog)
        self.wait_s = wait_s
        self.timeout_s = timeout_s
        self.survey_ttl_s = survey_ttl_s
        self.nursery: trio.Nursery | None = None
        self._locks: dict[str, trio.Lock] = defaultdict(trio.Lock)  # conv -> its facts' read-modify-write
        self._opening: dict[str, dict[str, str]] = {}  # conv -> customer and product, until stored
        self._inbox_due: dict[str, bool] = {}  # conv -> an inbox update is in flight (True: another is due)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the context fetches that outlive a request (they end with the node)."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def requests(self) -> dict[str, Callable[[Principal, dict[str, Any]], Any]]:
        """The protocol's workspace requests: (principal, request) -> the ``ok`` reply's fields."""
        return {
            "context": self._context_request,
            "note": self._note_request,
            "notes": self._notes_request,
            "tags": self._tags_request,
            "replies": self._replies_request,
            "reply_save": self._reply_save_request,
            "reply_delete": self._reply_delete_request,
            "reply_fill": self._reply_fill_request,
            "inbox": self._inbox_request,
            "rate": self._rate_request,
        }

    # ---- conversation facts: customer, product, summary, survey, satisfaction ----------------

    async def facts(self, tenant: str, conv_id: str) -> dict[str, Any]:
        stored = await self.book.get(tenant, "conv", conv_id) or {}
        return {**stored, **self._opening.get(conv_id, {})}

    async def _change_facts(self, tenant: str, conv_id: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        async with self._locks[conv_id]:
            try:
                facts = await self.facts(tenant, conv_id)
                change(facts)
                await self.book.put(tenant, "conv", conv_id, facts)
                return facts
            finally:
                if not self._locks[conv_id].statistics().tasks_waiting:
                    self._locks.pop(conv_id, None)

    async def erase_facts(self, tenant: str, conv_id: str) -> tuple[int, int]:
        """Forget what the shopper wrote that the facts keep: the survey's comment (its score
        stays: reports count it) and the summary (their first words). Returns (comments,
        summaries) removed, each 0 or 1."""
        removed = [0, 0]

        def forget(facts: dict[str, Any]) -> None:
            csat = facts.get("csat")
            if type(csat) is dict and csat.get("comment"):
                facts["csat"] = {**csat, "comment": ""}
                removed[0] = 1
            if facts.get("summary"):
                facts["summary"] = ""
                removed[1] = 1

        if await self.book.get(tenant, "conv", conv_id) is not None:
            await self._change_facts(tenant, conv_id, forget)
        return removed[0], removed[1]

    async def shopper(self, who: Principal) -> dict[str, Any]:
        """The customer of a shopper about to open a conversation (linked to the token's
        ``customer`` claim first, merging the one the identity had)."""
        await self.catalog.load(who.tenant)  # the tenant's products, for the bot too, before its first question
        return await self.directory.resolve(who.tenant, who.channel, who.user, getattr(who, "customer", ""))

    def opening(self, conv: Conversation, customer: dict[str, Any], product: str | None) -> None:
        """A conversation exists (before anyone is told): its customer and product are known at
        once; ``opened`` stores them."""
        self._opening[conv.id] = {"customer": customer["id"], "product": product or ""}

    async def opened(self, conv: Conversation) -> None:
        facts = self._opening.get(conv.id)
        if facts is None:
            return
        try:
            await self._change_facts(conv.tenant, conv.id, lambda stored: stored.update(facts))
        finally:
            self._opening.pop(conv.id, None)

    async def product_of(self, conv: Conversation) -> str | None:
        """The product the shopper opened the conversation from, if any."""
        return (await self.facts(conv.tenant, conv.id)).get("product") or None

    async def customer_of(self, conv: Conversation) -> dict[str, Any]:
        """The customer a conversation serves (its shopper's identity's customer, as linked now)."""
        return await self.directory.customer_of(conv.tenant, conv.channel, conv.customer)

    # ---- context ------------------------------------------------------------------------------

    async def context(self, conv: Conversation) -> dict[str, Any]:
        """The customer context of a conversation, or ``status: unavailable`` with the reason,
        within ``timeout_s``."""
        customer = await self.customer_of(conv)
        facts = await self.facts(conv.tenant, conv.id)
        product = await self.catalog.find(conv.tenant, facts["product"]) if facts.get("product") else None
        about = {
            "conv": conv.id, "customer": {"id": customer["id"], "links": customer["links"]},
            "product": product.as_map() if product is not None else ({"id": facts["product"]} if facts.get("product") else None),
            "tags": list(await self.service.store.tags(conv.id)), "satisfaction": facts.get("csat"),
        }
        return {**about, **await self.customer_context(conv.tenant, customer)}

    async def customer_context(self, tenant: str, customer: dict[str, Any]) -> dict[str, Any]:
        """``{"status": "ok", "context"}`` from the provider within ``timeout_s``, else
        ``{"status": "unavailable", "reason"}`` (logged and counted:
        ``kefu_customer_contexts_total{result}``)."""
        stats = self.service.stats
        try:
            with trio.fail_after(self.timeout_s):
                context = await self.provider.context(tenant, customer)
        except trio.TooSlowError:
            reason = f"the context provider did not answer within {self.timeout_s:g} s"
        except ContextUnavailable as exc:
            reason = str(exc)
        except Exception as exc:  # a provider's bug must not fail the assignment
            log.exception("context provider failed")
            reason = f"the context provider failed: {type(exc).__name__}"
        else:
            stats.customer_contexts["ok"] += 1
            return {"status": "ok", "context": context}
        stats.customer_contexts["unavailable"] += 1
        log.warning("customer context unavailable: %s", reason, extra={"tenant": tenant})
        return {"status": "unavailable", "reason": reason}

    async def assigned_context(self, state: ConvState, agent: str) -> dict[str, Any]:
        """For routing's ``assigned`` offer: the context if it comes within ``wait_s``, else
        ``pending``, with a ``customer_context`` event to ``agent`` when it arrives."""
        conv = state.conv
        done = trio.Event()
        box: list[dict[str, Any]] = []
        late = False

        async def fetch() -> None:
            box.append(await self.context(conv))
            done.set()
            if late:
                self.service.notify_user(conv.tenant, agent, {"t": "customer_context", **box[0]})

        if self.nursery is None:  # not running (tests of routing alone): ask inline
            return await self.context(conv)
        self.nursery.start_soon(fetch)
        with trio.move_on_after(self.wait_s):
            await done.wait()
        if box:
            return box[0]
        late = True
        return {"conv": conv.id, "status": "pending"}

    async def customer_changed(self, tenant: str, customer_id: str) -> int:
        """The shop pushed something about a customer: the agents serving them get the new
        context. Returns how many conversations were told."""
        self.provider.forget(tenant, customer_id)
        customer = await self.directory.get(tenant, customer_id)
        if customer is None or self.nursery is None:
            return 0
        told = 0
        for conv in await self.directory.conversations(tenant, customer):
            state = await self.service.load(conv.id)
            if state is None or state.conv.status != OPEN or not state.conv.assignee:
                continue
            self.nursery.start_soon(self._push_context, state.conv)
            told += 1
        return told

    async def _push_context(self, conv: Conversation) -> None:
        context = await self.context(conv)
        self.service.notify_user(conv.tenant, conv.assignee, {"t": "customer_context", **context})

    # ---- private notes ------------------------------------------------------------------------

    async def add_note(self, who: Principal, conv_id: str, text: str) -> dict[str, Any]:
        """A note the conversation's staff see and its shopper never does."""
        state = await self._staff_access(who, conv_id)
        text = text.strip()
        if not text:
            raise RequestError("bad_request", "field `text` must not be empty")
        if len(text) > MAX_NOTE:
            raise RequestError("too_large", f"a note holds at most {MAX_NOTE} characters")
        now = self.book.now_ms()
        note = {"id": f"{now:013d}-{secrets.token_hex(4)}", "conv": state.conv.id, "author": who.user, "role": who.role, "name": who.name, "text": text, "ts": now}
        await self.book.put(who.tenant, "note", f"{state.conv.id}/{note['id']}", note)
        for user, role in list(state.members.items()):
            if role in STAFF:
                self.service.notify_user(who.tenant, user, {"t": "note", **note})
        return note

    async def notes(self, who: Principal, conv_id: str) -> list[dict[str, Any]]:
        state = await self._staff_access(who, conv_id, read=True)
        return [note for _, note in await self.book.list(who.tenant, "note", prefix=state.conv.id + "/")]

    async def _staff_access(self, who: Principal, conv_id: str, read: bool = False) -> ConvState:
        """Staff serving the conversation (or a supervisor, or the tenant's backend); a shopper or
        a bot never (forbidden, or not_found as for any conversation not theirs)."""
        if who.role in ("shopper", "bot"):
            state = await self.service.access(who, conv_id, "history")  # not_found when not theirs
            raise RequestError("forbidden", "private notes and the desk are for agents and supervisors")
        return await self.service.access(who, conv_id, "history" if read else "update")

    # ---- tags ---------------------------------------------------------------------------------

    async def set_tags(self, who: Principal, conv_id: str, tags: object) -> list[str]:
        """The conversation service's tags (``set_tags``), told to the staff serving it."""
        state = await self._staff_access(who, conv_id)
        if type(tags) is not list:
            raise RequestError("bad_request", "field `tags` must be a list of strings")
        stored = list(await self.service.set_tags(who, state, tags))
        for user, role in list(state.members.items()):
            if role in STAFF:
                self.service.notify_user(who.tenant, user, {"t": "tags", "conv": state.conv.id, "tags": stored, "by": who.user})
        return stored

    # ---- quick replies ------------------------------------------------------------------------

    async def replies(self, who: Principal, query: str = "") -> list[dict[str, Any]]:
        """The tenant's replies and ``who``'s own (an own reply with a tenant's shortcut wins)."""
        tenant_wide = [r for _, r in await self.book.list(who.tenant, "reply", prefix="*/")]
        own = [r for _, r in await self.book.list(who.tenant, "reply", prefix=f"@{who.user}/")] if who.role in STAFF else []
        mine = {r["shortcut"] for r in own}
        return quick.search([*own, *(r for r in tenant_wide if r["shortcut"] not in mine)], query)

    async def save_reply(self, who: Principal, reply: dict[str, Any], *, owner: str) -> dict[str, Any]:
        """Store a reply for the tenant (``owner`` "*": supervisors and the backend) or for one
        agent (``owner``: that agent, who saves their own)."""
        self._may_manage(who, owner)
        shortcut, title, text = reply.get("shortcut"), reply.get("title", ""), reply.get("text")
        if type(shortcut) is not str or not shortcut.startswith("/") or not 1 < len(shortcut) <= quick.MAX_SHORTCUT or any(c.isspace() for c in shortcut):
            raise RequestError("bad_request", f"field `shortcut` must be / and 1..{quick.MAX_SHORTCUT - 1} characters without spaces")
        if type(title) is not str or len(title) > 100:
            raise RequestError("bad_request", "field `title` must be a text of at most 100 characters")
        if type(text) is not str or not text.strip() or len(text) > quick.MAX_TEXT:
            raise RequestError("bad_request", f"field `text` must be a text of 1..{quick.MAX_TEXT} characters")
        attachments = reply.get("attachments", [])
        if type(attachments) is not list or len(attachments) > 10 or not all(type(a) is dict for a in attachments):
            raise RequestError("bad_request", "field `attachments` must be a list of at most 10 maps (e.g. {url, name, kind})")
        prefix = "*/" if owner == "*" else f"@{owner}/"
        key = prefix + shortcut
        if await self.book.get(who.tenant, "reply", key) is None and len(await self.book.list(who.tenant, "reply", prefix=prefix)) >= MAX_REPLIES:
            raise RequestError("too_large", f"at most {MAX_REPLIES} quick replies per owner")
        saved = {"shortcut": shortcut, "title": title or shortcut, "text": text, "attachments": attachments, "owner": owner, "updated_at": self.book.now_ms()}
        await self.book.put(who.tenant, "reply", key, saved)
        return saved

    async def delete_reply(self, who: Principal, shortcut: str, *, owner: str) -> None:
        self._may_manage(who, owner)
        if not await self.book.delete(who.tenant, "reply", ("*/" if owner == "*" else f"@{owner}/") + shortcut):
            raise RequestError("not_found", f"no quick reply {shortcut!r}")

    def _may_manage(self, who: Principal, owner: str) -> None:
        if who.role == "system" or (who.role == "supervisor") or (who.role == "agent" and owner == who.user):
            return
        raise RequestError("forbidden", "agents manage their own quick replies; supervisors and the backend the tenant's")

    async def fill_reply(self, who: Principal, conv_id: str, shortcut: str) -> dict[str, Any]:
        """A reply's text with its variables filled from the conversation's customer context and
        product; ``missing`` names what could not be filled (left as written)."""
        state = await self._staff_access(who, conv_id, read=True)
        found = [r for r in await self.replies(who) if r["shortcut"] == shortcut]
        if not found:
            raise RequestError("not_found", f"no quick reply {shortcut!r}")
        context = await self.context(state.conv)
        text, missing = variables.fill(found[0]["text"], variables.values_from(context.get("context"), context.get("product")))
        return {"shortcut": shortcut, "text": text, "missing": missing, "attachments": found[0]["attachments"], "context": context["status"]}

    # ---- the inbox ----------------------------------------------------------------------------

    async def inbox(self, who: Principal) -> list[dict[str, Any]]:
        """The open conversations assigned to ``who``, longest-waiting shopper first."""
        if who.role not in STAFF:
            raise RequestError("forbidden", "the inbox is for agents and supervisors")
        convs = await self.service.store.list_conversations(who.tenant, user=who.user, status=OPEN, assignee=who.user, limit=INBOX_LIMIT)
        items = [await self.inbox_item(conv, who.user) for conv in convs]
        items.sort(key=lambda item: -item["waiting_ms"])
        return items

    async def inbox_item(self, conv: Conversation, agent: str) -> dict[str, Any]:
        """``unread``: the shopper's messages after the agent's read receipt (of the last
        ``WAITING_SCAN``); ``waiting_ms``: since the shopper's first message no staff answered."""
        store = self.service.store
        state = self.service.cached(conv.id)
        last_seq = state.last_seq if state is not None else conv.last_seq
        page = await store.read_messages(conv.id, before=last_seq + 1, limit=WAITING_SCAN)
        read = max((r.seq for r in await store.receipts(conv.id) if r.user == agent and r.kind == "read"), default=0)
        waiting_since = None
        for m in reversed(page.messages):
            if m.sender_role == "shopper":
                waiting_since = m.ts
            elif m.sender_role in STAFF:
                break
        last = page.messages[-1] if page.messages else None
        return {
            "conv": env.conversation_map(conv) | {"last_seq": last_seq},
            "unread": sum(1 for m in page.messages if m.seq > read and m.sender_role == "shopper"),
            "waiting_ms": max(0, self.book.now_ms() - waiting_since) if waiting_since is not None else 0,
            "last": _message_preview(last) if last is not None else None,
        }

    def on_receipt(self, state: ConvState, user: str, kind: str, seq: int) -> None:
        """The assigned agent read on: their unread count changes."""
        if kind == "read" and user == state.conv.assignee:
            self._inbox_changed(state)

    def on_message(self, state: ConvState, m: StoredMessage) -> None:
        """A durable message in an assigned conversation: its agent's inbox item changes."""
        self._inbox_changed(state)

    def _inbox_changed(self, state: ConvState) -> None:
        """A burst of changes costs one update in flight and one after it, not one per change."""
        if not state.conv.assignee or self.nursery is None:
            return
        if state.conv.id in self._inbox_due:
            self._inbox_due[state.conv.id] = True  # the update in flight reads again when done
            return
        self._inbox_due[state.conv.id] = False
        self.nursery.start_soon(self._push_inbox, state)

    async def _push_inbox(self, state: ConvState) -> None:
        try:
            while True:
                conv = state.conv
                if conv.assignee:
                    item = await self.inbox_item(conv, conv.assignee)
                    self.service.notify_user(conv.tenant, conv.assignee, {"t": "inbox", "item": item})
                if not self._inbox_due.get(conv.id):
                    break
                self._inbox_due[conv.id] = False
        finally:
            self._inbox_due.pop(state.conv.id, None)

    # ---- business hours -----------------------------------------------------------------------

    async def hours(self, tenant: str) -> dict[str, Any] | None:
        return await self.book.get(tenant, "hours", "")

    async def set_hours(self, tenant: str, hours: dict[str, Any] | None) -> dict[str, Any] | None:
        if hours is None:
            await self.book.delete(tenant, "hours", "")
            return None
        checked = business_hours.check(hours)
        await self.book.put(tenant, "hours", "", checked)
        return checked

    async def back_at(self, tenant: str) -> float | None:
        """None during business hours (or with none set); else when agents are back (epoch s)."""
        hours = await self.hours(tenant)
        now = self.clock()
        if business_hours.is_open(hours, now):
            return None
        return business_hours.back_at(hours, now)  # type: ignore[arg-type]

    async def away_text(self, tenant: str, language: str = "zh") -> str | None:
        """What the bot says outside business hours (None inside them)."""
        hours = await self.hours(tenant)
        now = self.clock()
        return None if business_hours.is_open(hours, now) else business_hours.back_text(hours, now, language)  # type: ignore[arg-type]

    # ---- satisfaction -------------------------------------------------------------------------

    async def resolved(self, state: ConvState) -> None:
        """The conversation was resolved: ask its shopper for a score, and keep a summary."""
        conv = state.conv
        expires_at = self.book.now_ms() + int(self.survey_ttl_s * 1000)
        summary = await self._summary(conv)

        def survey(facts: dict[str, Any]) -> None:
            facts.update(survey={"sent_at": self.book.now_ms(), "expires_at": expires_at}, summary=facts.get("summary") or summary)

        await self._change_facts(conv.tenant, conv.id, survey)
        body = {"kind": "event", "event": "survey", "text": "请为本次服务打分（1-5 分），也可以留下您的意见", "scale": 5, "expires_at": expires_at}
        await self.service.post(system(conv.tenant), state, body)

    async def _summary(self, conv: Conversation) -> str:
        """The shopper's first words, as the conversation's summary (until someone writes one)."""
        page = await self.service.store.read_messages(conv.id, limit=WAITING_SCAN)
        for m in page.messages:
            if m.sender_role == "shopper":
                body = msgpack.unpackb(m.body, raw=False)
                if body.get("kind") == "text":
                    return body["text"][:80]
        return conv.subject

    async def rate(self, who: Principal, conv_id: str, score: int, comment: str = "") -> dict[str, Any]:
        """The shopper's answer to the survey; a second answer replaces the first."""
        state = await self.service.access(who, conv_id, "history")
        if who.role != "shopper" or who.user != state.conv.customer:
            raise RequestError("forbidden", "only the conversation's shopper rates it")
        if type(score) is not int or not 1 <= score <= 5:
            raise RequestError("bad_request", "field `score` must be a whole number from 1 to 5")
        if len(comment) > 500:
            raise RequestError("too_large", "a comment holds at most 500 characters")
        now = self.book.now_ms()
        survey = (await self.facts(who.tenant, state.conv.id)).get("survey")
        if survey is None:
            raise RequestError("forbidden", "this conversation has no survey to answer (it is sent when the conversation is resolved)")
        if now > survey["expires_at"]:
            raise RequestError("forbidden", "the survey has expired")
        csat = {"score": score, "comment": comment, "at": now}
        await self._change_facts(who.tenant, state.conv.id, lambda facts: facts.update(csat=csat))
        if state.conv.assignee:
            self.service.notify_user(who.tenant, state.conv.assignee, {"t": "rated", "conv": state.conv.id, **csat})
        for watcher in self.service.watchers:
            watcher.on_rated(state, csat)
        return csat

    # ---- protocol requests --------------------------------------------------------------------

    async def _context_request(self, who: Principal, req: dict[str, Any]) -> dict[str, Any]:
        state = await self._staff_access(who, _conv(req), read=True)
        return await self.context(state.conv)

    async def _note_request(self, who: Principal, req: dict[str, Any]) -> dict[str, Any]:
        return {"note": await self.add_note(who, _conv(req), env.need_str(req, "text", MAX_NOTE * 4) or "")}

    async def _notes_request(self, who: Principal, req: dict[str, Any]) -> dict[str, Any]:
        return {"notes": await self.notes(who, _conv(req))}

    async def _tags_request(self, who: Principal, req: dict[str, Any]) -> dict[str, Any]:
        return {"tags": await self.set_tags(who, _conv(req), req.get("tags"))}

    async def _replies_request(self, who: Principal, req: dict[str, Any]) -> dict[str, Any]:
        if who.role not in STAFF:
            raise RequestError("forbidden", "quick replies are for agents and supervisors")
        return {"replies": await self.replies(who, env.need_str(req, "q", 100, optional=True, empty=True) or "")}

    async def _reply_save_request(self, who: Principal, req: dict[str, Any]) -> dict[str, Any]:
        owner = "*" if env.need_choice(req, "scope", ("tenant", "mine")) == "tenant" else who.user
        return {"reply": await self.save_reply(who, env.need_map(req, "reply") or {}, owner=owner)}

    async def _reply_delete_request(self, who: Principal, req: dict[str, Any]) -> dict[str, Any]:
        owner = "*" if env.need_choice(req, "scope", ("tenant", "mine")) == "tenant" else who.user
        await self.delete_reply(who, env.need_str(req, "shortcut", quick.MAX_SHORTCUT) or "", owner=owner)
        return {}

    async def _reply_fill_request(self, who: Principal, req: dict[str, Any]) -> dict[str, Any]:
        return await self.fill_reply(who, _conv(req), env.need_str(req, "shortcut", quick.MAX_SHORTCUT) or "")

    async def _inbox_request(self, who: Principal, req: dict[str, Any]) -> dict[str, Any]:
        return {"items": await self.inbox(who)}

    async def _rate_request(self, who: Principal, req: dict[str, Any]) -> dict[str, Any]:
        score = req.get("score")
        comment = env.need_str(req, "comment", 2000, optional=True, empty=True) or ""
        return {"conv": _conv(req), "csat": await self.rate(who, _conv(req), score, comment)}  # type: ignore[arg-type]


def _conv(req: dict[str, Any]) -> str:
    return env.need_str(req, "conv", env.ID_CHARS) or ""


def _message_preview(m: StoredMessage) -> dict[str, Any]:
    body = msgpack.unpackb(m.body, raw=False)
    text = body.get("text") if type(body.get("text")) is str else f"[{body.get('kind')}]"
    return {"seq": m.seq, "from": m.sender, "role": m.sender_role, "ts": m.ts, "text": text[:200]}
