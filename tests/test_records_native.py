"""The native message-path records (gateway._records_c, from native/records.pyx) against the
frozen dataclasses of gateway._records_py: construction, repr, equality, hash, immutability and
pickling agree on arbitrary field values; gateway.model exports the twin the switch picked."""

from __future__ import annotations

import pickle
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import _native, _records_py, model

from .twins import check_built_when_expected, native_twin

PY = _records_py
NAMES = ("StoredMessage", "AppendMessage", "Appended")
FIELDS = {
    "StoredMessage": ("conv_id", "seq", "cmid", "sender", "sender_role", "ts", "body"),
    "AppendMessage": ("conv_id", "cmid", "sender", "sender_role", "body"),
    "Appended": ("message", "duplicate"),
}
values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.binary(max_size=10),
                   st.tuples(st.integers()), st.floats(allow_nan=False))


@pytest.fixture(scope="module")
def c() -> ModuleType:
    return native_twin("records")


def test_native_extension_is_built_when_expected() -> None:
    check_built_when_expected("records", model.RECORDS)


def test_model_exports_the_selected_twin() -> None:
    expected = PY if model.RECORDS == "python" else _native.load("records")
    assert expected is not None
    for name in NAMES:
        assert getattr(model, name) is getattr(expected, name)


def outcome(fn) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:
        return "raise", type(exc)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NAMES), st.lists(values, min_size=7, max_size=7), st.lists(values, min_size=7, max_size=7), st.booleans())
def test_twins_agree(c: ModuleType, name: str, a: list[Any], b: list[Any], by_keyword: bool) -> None:
    fields = FIELDS[name]
    a, b = a[: len(fields)], b[: len(fields)]
    b[0] = a[0]  # often equal but for some fields, sometimes equal in all
    twins = (getattr(c, name), getattr(PY, name))
    made = []
    for cls in twins:
        x = cls(**dict(zip(fields, a))) if by_keyword else cls(*a)
        y = cls(*b)
        made.append((x, y))
        assert pickle.loads(pickle.dumps(x)) == x
        with pytest.raises(AttributeError):
            setattr(x, fields[0], "changed")
        assert getattr(x, fields[0]) == a[0]
        assert [getattr(x, f) for f in fields] == a
        assert cls.__match_args__ == fields
    (nx, ny), (px, py) = made
    assert repr(nx).replace("gateway._records_c.", "") == repr(px)
    assert (nx == ny) == (px == py) and (nx != ny) == (px != py)
    assert outcome(lambda: hash(nx)) == outcome(lambda: hash(px))
    assert nx != px and px != nx  # different classes are never equal
    assert (nx == object()) is False


@pytest.mark.parametrize("name", NAMES)
def test_twins_refuse_the_same_calls(c: ModuleType, name: str) -> None:
    n = len(FIELDS[name])
    for args, kwargs in [((), {}), ((1,) * (n + 1), {}), ((1,) * n, {"nope": 1})]:
        assert outcome(lambda: getattr(c, name)(*args, **kwargs)) == outcome(lambda: getattr(PY, name)(*args, **kwargs)) == ("raise", TypeError)


def test_appended_defaults_to_not_duplicate(c: ModuleType) -> None:
    for twin in (c, PY):
        assert twin.Appended("m").duplicate is False
