"""gateway.bots: a tenant's stored knowledge base that cannot be read now is looked for again."""

from __future__ import annotations

import json

import trio

from gateway.bots import RECORD_KEY, RECORD_KIND, STORED_KIND, BotDirectory
from gateway.model import Record
from gateway.routing.config import TenantRouting
from gateway.store import StoreError

KB = {"intents": [{"id": "hours", "title": {"zh": "营业时间"}, "answer": {"zh": "每天9点到21点"}, "examples": {"zh": ["几点开门", "营业时间"]}}]}


class FlakyStore:
    """Answers the first read with the error a store gives while PostgreSQL restarts, then the record."""

    def __init__(self) -> None:
        self.reads = 0

    async def record(self, tenant: str, kind: str, key: str) -> Record | None:
        if kind == STORED_KIND:  # the list of tenants with one (gateway.bots.prefit_stored)
            return None
        self.reads += 1
        if self.reads == 1:
            raise StoreError("storage unavailable")
        assert (kind, key) == (RECORD_KIND, RECORD_KEY)
        return Record(tenant, kind, key, json.dumps(KB), 1)

    async def execute(self, op: object) -> int:
        return 1


async def test_a_knowledge_base_that_could_not_be_read_is_read_at_the_next_conversation(caplog):
    store = FlakyStore()
    bots = BotDirectory(store=store)
    with trio.fail_after(60):
        await bots.ready_for("shop1")  # the read fails: logged, the file's (here the sample's) bot answers
        assert "not read" in caplog.text
        sample = bots.for_tenant("shop1", TenantRouting())
        await bots.ready_for("shop1")
    served = bots.for_tenant("shop1", TenantRouting())
    assert served is not sample and store.reads == 2
    session = served.start({"tenant": "shop1", "user": "u"})
    assert served.handle(session, "你们几点开门", 0.0).answer == "每天9点到21点"


class CountingStore:
    """The store as a burst of PUTs leaves it: one record, read by every queued turn."""

    def __init__(self) -> None:
        self.value = json.dumps(KB)

    async def record(self, tenant: str, kind: str, key: str) -> Record | None:
        return None if kind == STORED_KIND else Record(tenant, kind, key, self.value, 1)

    async def execute(self, op: object) -> int:
        return 1


async def test_a_burst_of_puts_costs_at_most_two_fits(monkeypatch):
    bots = BotDirectory(store=CountingStore())
    fits = []
    install = bots.install

    async def counted(key, kb):
        fits.append(key)
        return await install(key, kb)

    monkeypatch.setattr(bots, "install", counted)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(bots.use_stored, "shop1")
    assert len(fits) == 1  # the first turn fitted it; the four behind it found it served
    bots.store.value = json.dumps({**KB, "name": "改过的"})
    with trio.fail_after(60):
        await bots.use_stored("shop1")
    assert len(fits) == 2  # a changed one is fitted


async def test_a_restarted_gateways_bots_load_their_fitted_models_instead_of_fitting(tmp_path, monkeypatch):
    from gateway.bot import IntentClassifier, KnowledgeBase

    ran = []
    real = IntentClassifier.fit_on.__func__
    monkeypatch.setattr(IntentClassifier, "fit_on", classmethod(lambda cls, training: ran.append(1) or real(cls, training)))
    kb = KnowledgeBase.from_dict(KB, source="test")
    with trio.fail_after(60):
        before = await BotDirectory(fits_dir=str(tmp_path / "fits")).install("api:shop1", kb)
        after = await BotDirectory(fits_dir=str(tmp_path / "fits")).install("api:shop1", kb)  # the next process
        assert len(ran) == 1
        await BotDirectory(fits_dir="").install("api:shop1", kb)  # kept nowhere: fitted
        assert len(ran) == 2
    for bot in (before, after):
        assert bot.handle(bot.start({"tenant": "shop1", "user": "u"}), "你们几点开门", 0.0).answer == "每天9点到21点"


def test_fitted_models_are_kept_in_the_data_dir_unless_told_otherwise():
    from gateway.config import Config

    assert Config(data_dir="/var/lib/kefu").bot_fits_path == "/var/lib/kefu/bot-fits"
    assert Config(data_dir="/var/lib/kefu", bot_fits_dir="/cache/kefu").bot_fits_path == "/cache/kefu"
    assert Config(data_dir="/var/lib/kefu", bot_fits_dir="off").bot_fits_path == ""
