"""The built-in bot of each tenant: which knowledge base it answers from, fitted once per knowledge
base, and the knowledge bases tenants manage over the REST API.

A tenant's bot answers from, in order: the knowledge base the tenant stored through the API
(``PUT /v1/bot/knowledge-base``, kept in the store as one record), the file its routing settings
name (``knowledge_base``), or the shipped sample shop. Fitting, and the first import of
scikit-learn, run in a worker thread: the event loop never waits for them, and until a new fit is
ready the previous bot answers. The tenants that stored one are listed in the store too
(``STORED_KIND`` records), so that a starting gateway fits theirs before their first shopper asks
(``prefit_stored``) instead of making that shopper wait seconds for the fit.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio

from .model import DeleteRecord, PutRecords, Record
from .store.base import StoreError
from .routing.config import RoutingConfig

log = logging.getLogger("kefu.bot")

#: Where a tenant's knowledge base from the API is stored: one record (value: the JSON document).
RECORD_KIND = "bot"
RECORD_KEY = "knowledge_base"
#: The tenants with a knowledge base from the API: a record each (key: the tenant) under the
#: gateway's own tenant "" (a token's tenant is never empty), which a starting gateway lists.
STORED_TENANT = ""
STORED_KIND = "bot_stored"


def bot_package() -> Any:
    """The built-in bot, imported on first use: scikit-learn loads only when a tenant uses it."""
    from . import bot

    return bot


def parse_knowledge_base(document: Any, source: str) -> Any:
    """A gateway.bot.KnowledgeBase from a JSON document (blocking: the first call imports the bot);
    raises gateway.bot.KnowledgeBaseError (a ValueError) naming the intent and field."""
    return bot_package().KnowledgeBase.from_dict(document, source=source)


def load_knowledge_base_file(path: str) -> Any:
    """The knowledge base of a file (``""``: the shipped sample shop); blocking."""
    bots = bot_package()
    return bots.KnowledgeBase.load(path or bots.DEFAULT_KNOWLEDGE_BASE)


def stored_key(tenant: str) -> str:
    """The key the bot of a tenant's knowledge base from the API is kept under."""
    return f"api:{tenant}"


class BotDirectory:
    """The bots of a gateway, by knowledge base, and the product catalog they answer from."""

    def __init__(self, catalog: object | None = None, store: Any = None, fits_dir: str = "") -> None:
        """``fits_dir``: where fitted models are kept across restarts (gateway.bot.fits; empty: not kept)."""
        self._bots: dict[str, object] = {}  # by knowledge base: a file's path ("" the sample) or stored_key(tenant)
        self._looked: dict[str, trio.Event] = {}  # tenants whose stored knowledge base was looked for (set: done)
        self._fitting: dict[str, trio.Lock] = {}  # one fit of a tenant's stored knowledge base at a time: the last stored wins
        self._served: dict[str, str] = {}  # tenant -> the stored knowledge base (its JSON) its bot answers from
        self.store = store  # a gateway.store.Store: where knowledge bases from the API are
        # a gateway.bot.Catalog; a MemoryCatalog once a bot loads. The workspace's product ingest
        # fills it (catalog.put(tenant, product)); bots read it on every product question.
        self.catalog = catalog
        self.fits_dir = fits_dir
        self._fits: Any = None  # the gateway.bot.FitCache of fits_dir, made with the bot package

    async def preload(self, config: RoutingConfig) -> None:
        """Fit every knowledge base a tenant's built-in bot uses, in a worker thread, before the
        gateway takes connections (importing scikit-learn and fitting take seconds)."""
        paths = {t.knowledge_base for t in (config.default, *config.tenants.values()) if t.bot == "builtin"}
        for path in sorted(paths):
            self._bots[path] = await trio.to_thread.run_sync(self._load, path)
            log.info("bot knowledge base %s loaded", path or "(shipped sample shop)")

    async def reload(self, path: str = "") -> object:
        """Fit the knowledge base at ``path`` again (it changed) in a worker thread, then swap it
        in: conversations keep being answered by the previous fit meanwhile, and the event loop
        never waits for the fit."""
        bot = await trio.to_thread.run_sync(self._load, path)
        self._bots[path] = bot
        log.info("bot knowledge base %s reloaded", path or "(shipped sample shop)")
        return bot

    async def install(self, key: str, kb: object) -> object:
        """Serve the knowledge base ``kb`` (a gateway.bot.KnowledgeBase) under ``key`` (a tenant's
        ``knowledge_base`` setting, or ``stored_key(tenant)``): fitted in a worker thread, then
        swapped in, the previous bot answering meanwhile."""
        bots = await trio.to_thread.run_sync(bot_package)
        classifier = await trio.to_thread.run_sync(lambda: bots.IntentClassifier.fit(kb, fits=self.fits(bots)))
        bot = self._bots[key] = bots.FaqBot(kb, classifier=classifier, catalog=self._catalog(bots))
        log.info("bot knowledge base %s installed (%d intents)", key, len(kb.intents))  # type: ignore[attr-defined]
        return bot

    async def ready_for(self, tenant: str) -> None:
        """Before this process first uses a tenant's bot: serve the knowledge base the tenant
        stored through the API, if any (one store read per tenant and process)."""
        looked = self._looked.get(tenant)
        if looked is not None:
            if not looked.is_set():  # another conversation of the tenant is reading it: wait for that
                await looked.wait()
            return
        self._looked[tenant] = looked = trio.Event()
        try:
            await self.use_stored(tenant)
        except Exception:  # the store unwell, a fit that failed: the file's bot answers; looked for again next time
            log.exception("stored knowledge base of tenant %s not read", tenant)
            del self._looked[tenant]
        finally:
            looked.set()

    def forget_stored(self) -> None:
        """Look for every tenant's stored knowledge base again at its next use (a new term of
        routing leadership: another node may have stored some meanwhile)."""
        for tenant in [t for t, looked in self._looked.items() if looked.is_set()]:
            del self._looked[tenant]
            self._served.pop(tenant, None)
            self._bots.pop(stored_key(tenant), None)

    async def use_stored(self, tenant: str) -> object | None:
        """Read the tenant's stored knowledge base again and serve it; None when it has none (its
        bot answers from its file, or the sample, again) or it cannot be used (logged). Calls for
        one tenant take turns, each reading the store when its turn comes, so two PUTs in quick
        succession end with the later one served, whichever fit is faster; a turn that finds the
        knowledge base it would fit served already does not fit it again (a burst of PUTs costs
        at most two fits)."""
        lock = self._fitting.setdefault(tenant, trio.Lock())
        async with lock:
            return await self._use_stored(tenant)

    async def prefit_stored(self) -> int:
        """Fit, one after another, the stored knowledge base of every tenant listed as having one
        (a starting gateway, or a node that begins to decide for the cluster); returns how many.
        A conversation of a tenant being fitted waits for that fit rather than starting another."""
        if self.store is None:
            return 0
        tenants: list[str] = []
        try:
            while True:  # a page at a time
                page = await self.store.records(STORED_TENANT, STORED_KIND, after=tenants[-1] if tenants else "")
                if not page:
                    break
                tenants += [record.key for record in page]
        except StoreError as exc:  # each tenant's is then fitted at its first conversation, as before
            log.error("tenants with a stored knowledge base not listed: %s", exc)
            return 0
        fitted = 0
        for tenant in tenants:
            await self.ready_for(tenant)
            fitted += stored_key(tenant) in self._bots
        if tenants:
            log.info("stored knowledge bases of %d tenants fitted before their first conversation", fitted)
        return fitted

    def serves_stored(self, tenant: str) -> bool:
        """Whether the tenant's bot answers from its stored knowledge base here (fitted)."""
        return stored_key(tenant) in self._bots

    async def _use_stored(self, tenant: str) -> object | None:
        record: Record | None = await self.store.record(tenant, RECORD_KIND, RECORD_KEY) if self.store is not None else None
        await self._list_stored(tenant, record is not None)
        if record is None:
            self._served.pop(tenant, None)
            if self._bots.pop(stored_key(tenant), None) is not None:
                log.info("bot of tenant %s answers from its file's knowledge base again", tenant)
            return None
        if self._served.get(tenant) == record.value and stored_key(tenant) in self._bots:
            return self._bots[stored_key(tenant)]  # a PUT queued behind the fit that served it already: no second fit
        try:
            kb = await trio.to_thread.run_sync(parse_knowledge_base, json.loads(record.value), f"the knowledge base of tenant {tenant}")
        except ValueError as exc:  # stored by a version that read it differently: the file's answers instead
            log.error("stored knowledge base of tenant %s not used: %s", tenant, exc)
            self._bots.pop(stored_key(tenant), None)
            return None
        bot = await self.install(stored_key(tenant), kb)
        self._served[tenant] = record.value
        return bot

    async def _list_stored(self, tenant: str, stored: bool) -> None:
        """Keep the list of tenants with a stored knowledge base as the store has it (written only
        when it changes; a tenant stored before the list existed is listed at its first use)."""
        try:
            listed = await self.store.record(STORED_TENANT, STORED_KIND, tenant) is not None
            if stored and not listed:
                await self.store.execute(PutRecords((Record(STORED_TENANT, STORED_KIND, tenant, "{}", 0),)))
            elif listed and not stored:
                await self.store.execute(DeleteRecord(STORED_TENANT, STORED_KIND, tenant))
        except StoreError as exc:  # listed (or not) at its next use: only the fit before a first shopper is at stake
            log.warning("the list of tenants with a stored knowledge base not updated for %s: %s", tenant, exc)

    def add_product(self, tenant: str, product: object) -> None:
        """A product the shop pushed (gateway.customers.CatalogProduct), into the bots' catalog."""
        bots = bot_package()
        try:
            self._catalog(bots).put(tenant, bots.Product.from_dict(product.bot_fields()))  # type: ignore[attr-defined]
        except bots.CatalogError as exc:
            log.warning("product not given to the bot: %s", exc)

    def for_tenant(self, tenant: str, routing: Any) -> object:
        """The tenant's bot: from its stored knowledge base, else its routing settings' file."""
        bot = self._bots.get(stored_key(tenant))
        if bot is not None:
            return bot
        path = routing.knowledge_base or ""
        bot = self._bots.get(path)
        if bot is None:  # not preloaded (a tenant added since): fit now
            bot = self._bots[path] = self._load(path)
        return bot

    def _load(self, path: str) -> object:
        bots = bot_package()
        return bots.load_bot(path or None, catalog=self._catalog(bots), fits=self.fits(bots))

    def fits(self, bots: Any) -> Any:
        """Where fitted models are kept (a gateway.bot.FitCache), or None."""
        if self._fits is None and self.fits_dir:
            self._fits = bots.FitCache(self.fits_dir)
        return self._fits

    def _catalog(self, bots: Any) -> Any:
        """The one catalog every bot of the gateway reads (an in-memory one until a shop's is set)."""
        if self.catalog is None:
            self.catalog = bots.MemoryCatalog()
        return self.catalog
