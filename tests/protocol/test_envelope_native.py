"""The native envelope twin (gateway._envelope_c, from native/envelope.pyx) against the pure one.

* The extension is there when the build says it must be (``KEFU_EXPECT_NATIVE=1``) and exposes
  the pure twin's API.
* Differential properties: the same arbitrary payloads, request maps, bodies and frame fields give
  identical results (requests, packed bodies, frame bytes) and identical errors (the
  ``RequestError``'s code, message and extra fields) from both twins.
* The switch in gateway.protocol.envelope: ``KEFU_PUREPYTHON=1`` selects the pure twin, a built
  extension is used otherwise. (How the loader treats absent and broken extensions is the same
  code for every twin and is tested in test_frames_native.py.)

tests/protocol/test_envelope.py runs the behavioural suite against the twin of the run.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import _native
from gateway.model import StoredMessage
from gateway.protocol import _envelope_py, envelope
from gateway.protocol._frames_py import FrameDecoder
from gateway.protocol.errors import RequestError
from gateway.protocol.fields import Limits

from ..twins import EXPECT_NATIVE, check_built_when_expected, native_twin, run_python
from .test_envelope import msgpack_values

PY = _envelope_py
differential = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def c() -> ModuleType:
    return native_twin("envelope")


def test_native_extension_is_built_when_expected() -> None:
    check_built_when_expected("envelope", envelope.IMPLEMENTATION)


def test_same_public_api(c: ModuleType) -> None:
    assert sorted(c.__all__) == sorted(PY.__all__)
    for name in PY.__all__:
        assert hasattr(c, name), name
    assert c.BODY_KINDS == PY.BODY_KINDS


def test_switch_exports_the_selected_twin() -> None:
    expected = PY if envelope.IMPLEMENTATION == "python" else _native.load("envelope")
    assert expected is not None
    for name in PY.__all__:
        assert getattr(envelope, name) is getattr(expected, name), name


def outcome_of(fn: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", result), ("request-error", (code, message, extra)) or ("raise", exception type)."""
    try:
        return "ok", fn()
    except RequestError as exc:
        return "request-error", (exc.code, exc.message, exc.extra)
    except Exception as exc:
        return "raise", type(exc)


# ------------------------------------------------------------------------------ decoding


@differential
@given(st.binary(max_size=80))
def test_twins_agree_on_arbitrary_payloads(c: ModuleType, data: bytes) -> None:
    assert outcome_of(lambda: c.decode_request(data)) == outcome_of(lambda: PY.decode_request(data))


@differential
@given(msgpack_values | st.dictionaries(st.sampled_from(["t", "id", "conv", "x"]), msgpack_values, max_size=4))
def test_twins_agree_on_arbitrary_msgpack(c: ModuleType, value: Any) -> None:
    data = msgpack.packb(value)
    native, pure = outcome_of(lambda: c.decode_request(data)), outcome_of(lambda: PY.decode_request(data))
    if native[0] == "ok":  # bytes, not ==: NaN != NaN
        assert pure[0] == "ok" and msgpack.packb(native[1]) == msgpack.packb(pure[1])
    else:
        assert native == pure


# ------------------------------------------------------------------------------ checking a send

# Values that land on every branch of the checks: missing, wrong types, empty, at and past the
# length limits (in characters, also multi-byte ones), numbers at their bounds, NaN and infinities.
edge_strings = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["", "x" * 128, "x" * 129, "客" * 128, "客" * 129, "https://cdn.example/a.png", "http://a", "ftp://a",
                     "https://" + "u" * 2040, "https://" + "u" * 2041, "n" * 256, "n" * 257, "a" * 512, "a" * 513]),
)
edge_numbers = st.one_of(
    st.sampled_from([0, -1, 1, 90, 91, -90, -91, 180, -181, 86_400_000, 86_400_001, 1 << 40, (1 << 40) + 1, 2**64 - 1, -(2**63),
                     True, False, 0.5, -90.0, 90.000001, float("nan"), float("inf"), float("-inf")]),
    st.integers(), st.floats(),
)
field_values = st.one_of(st.none(), edge_strings, edge_numbers, st.binary(max_size=4), st.lists(st.integers(), max_size=2),
                         st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
kinds = st.one_of(st.sampled_from(_envelope_py.BODY_KINDS), st.sampled_from(["sticker", "", "TEXT"]), field_values)
bodies = st.builds(
    lambda kind, fields, drop_kind: ({} if drop_kind else {"kind": kind}) | fields,
    kinds,
    st.dictionaries(st.sampled_from(["text", "url", "attachment", "name", "address", "lat", "lng", "duration_ms", "size", "extra"]), field_values, max_size=6),
    st.booleans(),
)
requests = st.builds(
    lambda fields, drop: {k: v for k, v in fields.items() if k not in drop} | {"t": "send"},
    st.fixed_dictionaries({"conv": field_values, "cmid": field_values, "body": st.one_of(bodies, field_values), "id": field_values}),
    st.sets(st.sampled_from(["conv", "cmid", "body", "id"])),
)
limits = st.builds(Limits, max_text_chars=st.sampled_from([0, 1, 5, 5000]))


@differential
@given(requests, limits)
def test_twins_agree_on_send_requests(c: ModuleType, req: dict[str, Any], lim: Limits) -> None:
    assert outcome_of(lambda: c.send_fields(req, lim)) == outcome_of(lambda: PY.send_fields(req, lim))


@differential
@given(bodies, limits)
def test_twins_agree_on_bodies(c: ModuleType, body: dict[str, Any], lim: Limits) -> None:
    assert outcome_of(lambda: c.validate_body(body, lim)) == outcome_of(lambda: PY.validate_body(body, lim))


def test_valid_send_gives_the_packed_body(c: ModuleType) -> None:
    body = {"kind": "text", "text": "七天无理由退货吗?"}
    req = {"t": "send", "conv": "c1", "cmid": "m1", "body": body}
    for twin in (c, PY):
        assert twin.send_fields(req, Limits()) == ("c1", "m1", msgpack.packb(body))


# ------------------------------------------------------------------------------ server frames

ids = st.one_of(st.text(max_size=40), st.sampled_from(["", "c" * 31, "c" * 32, "c" * 255, "c" * 256, "客" * 100, "x" * 70000]))
ints = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1]))
rids = st.one_of(st.none(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=128),
                 st.sampled_from([-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]))


def payload_of(frame: bytes) -> bytes:
    """The one binary message a server frame carries (checked with the pure frame decoder)."""
    (opcode, payload), = FrameDecoder(max_message_size=1 << 30, require_mask=False).feed(frame)
    assert opcode == 0x2
    return payload


@differential
@given(rids, ids, ids, ints, ints, st.booleans())
def test_twins_agree_on_ack_frames(c: ModuleType, rid: Any, conv: str, cmid: str, seq: int, ts: int, dup: bool) -> None:
    frame = c.ack_frame(rid, conv, cmid, seq, ts, dup)
    assert frame == PY.ack_frame(rid, conv, cmid, seq, ts, dup)
    assert msgpack.unpackb(payload_of(frame)) == {"t": "ack", "id": rid, "conv": conv, "cmid": cmid, "seq": seq, "ts": ts, "dup": dup}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # 64 KiB bodies are slow to draw
@given(ids, ints, ids, ids, st.sampled_from(["shopper", "agent", "bot", "system"]), ints,
       st.one_of(msgpack_values, st.binary(min_size=60000, max_size=70000)))
def test_twins_agree_on_message_frames(c: ModuleType, conv: str, seq: int, cmid: str, sender: str, role: str, ts: int, body: Any) -> None:
    m = StoredMessage(conv, seq, cmid, sender, role, ts, msgpack.packb(body))
    assert c.encode_message(m) == PY.encode_message(m)
    frame = c.message_frame(m)
    assert frame == PY.message_frame(m)
    assert payload_of(frame) == PY.encode_message(m)


@pytest.mark.parametrize("bad", [2**64, -(2**63) - 1, 1.5, b"bytes", ["list"]])
def test_twins_refuse_the_same_frame_fields(c: ModuleType, bad: Any) -> None:
    """Outside the contract (rid int/str/None, seq and ts ints): an exception from both twins."""
    for args in ((bad, "c", "m", 1, 1, False), (None, "c", "m", bad, 1, False)):
        native, pure = outcome_of(lambda: c.ack_frame(*args)), outcome_of(lambda: PY.ack_frame(*args))
        assert native[0] == "raise", native
        if type(bad) is int:  # too large for msgpack: the same OverflowError
            assert native == pure


# ------------------------------------------------------------------------------ the switch


PRINT_IMPLEMENTATION = "from gateway.protocol import envelope; print(envelope.IMPLEMENTATION, envelope.ack_frame.__module__)"


def test_pure_python_env_selects_the_python_twin() -> None:
    done = run_python(PRINT_IMPLEMENTATION, KEFU_PUREPYTHON="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["python", "gateway.protocol._envelope_py"]


def test_native_twin_selected_when_built() -> None:
    built = _native.load("envelope", honour_env=False) is not None
    done = run_python(PRINT_IMPLEMENTATION)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == ("native" if built else "python")
    if EXPECT_NATIVE:
        assert built
