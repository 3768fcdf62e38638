"""The workspace-records half of the StoreBackend contract (PutRecords, DeleteRecord, record,
records): what gateway.customers keeps. Every backend in BACKENDS runs it."""

from __future__ import annotations

from gateway.model import DeleteRecord, PutRecords, Record
from gateway.store import StoreBackend, StoreError

from .test_backend_contract import apply_one, backend  # noqa: F401  (the fixture)


def rec(key: str, value: str = "{}", tenant: str = "t1", kind: str = "customer", at: int = 1_000) -> Record:
    return Record(tenant, kind, key, value, at)


def test_a_record_is_stored_replaced_and_found(backend: StoreBackend) -> None:
    assert apply_one(backend, PutRecords((rec("c1", '{"name": "王女士"}'),))) == 1
    assert backend.record("t1", "customer", "c1") == rec("c1", '{"name": "王女士"}')
    assert apply_one(backend, PutRecords((rec("c1", '{"name": "王丽"}', at=2_000),))) == 1
    assert backend.record("t1", "customer", "c1") == rec("c1", '{"name": "王丽"}', at=2_000)
    assert backend.record("t1", "customer", "c2") is None


def test_records_are_kept_apart_by_tenant_and_kind(backend: StoreBackend) -> None:
    backend.apply_batch([PutRecords((rec("k", "1"), rec("k", "2", tenant="t2"), rec("k", "3", kind="order")))])
    assert backend.record("t1", "customer", "k").value == "1"
    assert backend.record("t2", "customer", "k").value == "2"
    assert backend.record("t1", "order", "k").value == "3"
    assert [r.value for r in backend.records("t1", "customer")] == ["1"]


def test_records_are_listed_by_key_with_prefix_after_and_limit(backend: StoreBackend) -> None:
    keys = ["a:2", "a:1", "b:1", "a:10", "ab", "发货", "a:3"]
    apply_one(backend, PutRecords(tuple(rec(k, kind="reply") for k in keys)))
    assert [r.key for r in backend.records("t1", "reply")] == sorted(keys)
    assert [r.key for r in backend.records("t1", "reply", prefix="a:")] == ["a:1", "a:10", "a:2", "a:3"]
    assert [r.key for r in backend.records("t1", "reply", prefix="a:", after="a:10", limit=1)] == ["a:2"]
    assert [r.key for r in backend.records("t1", "reply", prefix="发")] == ["发货"]
    assert backend.records("t1", "reply", prefix="z") == []


def test_put_records_is_all_or_none(backend: StoreBackend) -> None:
    result = apply_one(backend, PutRecords((rec("c1"), "not a record")))  # type: ignore[arg-type]
    assert isinstance(result, StoreError)
    assert backend.record("t1", "customer", "c1") is None
    assert apply_one(backend, PutRecords((rec("c1", "1"), rec("c2", "2")))) == 2
    assert [r.key for r in backend.records("t1", "customer")] == ["c1", "c2"]


def test_a_record_is_deleted_once(backend: StoreBackend) -> None:
    apply_one(backend, PutRecords((rec("c1"), rec("c1", tenant="t2"))))
    assert apply_one(backend, DeleteRecord("t1", "customer", "c1")) is True
    assert apply_one(backend, DeleteRecord("t1", "customer", "c1")) is False
    assert backend.record("t1", "customer", "c1") is None
    assert backend.record("t2", "customer", "c1") is not None
