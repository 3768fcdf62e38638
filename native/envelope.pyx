# Cython twin of gateway/protocol/_envelope_py.py, built by setup.py as ``gateway._envelope_c`` with
# the compiler directives listed there.
"""Envelopes of the message path: the native twin.

Same public API, same results and same errors as :mod:`gateway.protocol._envelope_py`, which holds
the documentation of every function; import them from :mod:`gateway.protocol.envelope`. What
differs is how the work is done:

* the checks of a ``send`` (conversation id, client message id, the body of each kind) run as C
  over the decoded dict, with no Python call per field;
* the two frames every send produces, the sender's ``ack`` and the others' ``msg``, are written as
  msgpack straight into one ``bytes`` object that already holds the WebSocket frame header: no
  dict is built, nothing is packed twice and no second copy joins header and payload. The msgpack
  written is byte for byte what ``msgpack.packb`` writes for the same map (smallest integer and
  string forms, keys in the same order).

msgpack itself still decodes requests and packs bodies: that is a well-kept C library already.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from libc.math cimport isfinite
from libc.stdint cimport uint64_t
from libc.string cimport memcpy

import msgpack

from gateway.protocol.errors import RequestError
from gateway.protocol.fields import ID_CHARS, request_id

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

__all__ = ["BODY_KINDS", "ack_frame", "decode_request", "encode_message", "message_frame", "send_fields", "validate_body"]

BODY_KINDS = ("text", "image", "video", "voice", "file", "location")

cdef object _unpackb = msgpack.unpackb
cdef object _packb = msgpack.packb
# One Packer for every body (msgpack.packb builds a Packer per call, a microsecond a message); it
# resets its buffer when a pack fails, and the native twin runs on the event loop's thread only.
cdef object _pack_body = msgpack.Packer().pack
cdef Py_ssize_t _URL_LIMIT = 2048
cdef Py_ssize_t _ADDRESS_LIMIT = 512
cdef Py_ssize_t _ID_CHARS = ID_CHARS


def decode_request(payload):
    try:
        # raw=False and strict_map_key=True are msgpack's defaults (since 1.0); the pure twin
        # names them, this call saves building the keyword arguments.
        req = _unpackb(payload)
    except Exception as exc:  # msgpack raises several types (ExtraData, ValueError, UnicodeDecodeError…)
        raise RequestError("bad_frame", f"frame is not valid msgpack: {type(exc).__name__}") from None
    if type(req) is not dict:
        raise RequestError("bad_frame", f"frame must be a msgpack map, got {type(req).__name__}")
    t = (<dict>req).get("t")
    if type(t) is not str:
        raise RequestError("bad_request", "field `t` (request type) must be a string", id=request_id(req))
    return req


# ---- field checks (the messages of gateway.protocol.fields, in C) ----------------------------------


cdef object _need_str(dict d, str key, Py_ssize_t limit, bint optional=False, bint empty=False):
    v = d.get(key)
    if v is None and optional:
        return None
    if type(v) is not str:
        raise RequestError("bad_request", f"field `{key}` must be a string")
    cdef Py_ssize_t n = len(<str>v)
    if n == 0 and not empty:
        raise RequestError("bad_request", f"field `{key}` must not be empty")
    if n > limit:
        raise RequestError("too_large", f"field `{key}` is longer than {limit} characters")
    return v


cdef int _number(dict body, str key, long long lo, long long hi, bint optional) except -1:
    v = body.get(key)
    if v is None and optional:
        return 0
    cdef bint ok = False
    cdef double f
    if type(v) is float:
        f = v
        ok = isfinite(f) and lo <= f <= hi  # exact: both bounds are far below 2**53
    elif type(v) is int:
        ok = lo <= v <= hi  # compared as Python ints: v may be any size
    if not ok:
        raise RequestError("bad_request", f"field `{key}` must be a number in [{lo}, {hi}]")
    return 0


cdef int _validate_body(dict body, limits) except -1:
    kind = body.get("kind")
    if type(kind) is not str or kind not in BODY_KINDS:
        raise RequestError("bad_request", f"field `kind` must be one of {', '.join(BODY_KINDS)}")
    if kind == "text":
        _need_str(body, "text", limits.max_text_chars)
        return 0
    if kind == "location":
        _number(body, "lat", -90, 90, False)
        _number(body, "lng", -180, 180, False)
        _need_str(body, "name", 256, True, True)
        _need_str(body, "address", _ADDRESS_LIMIT, True, True)
        return 0
    if body.get("attachment") is not None:
        _need_str(body, "attachment", _ID_CHARS)
        if kind == "video" or kind == "voice":
            _number(body, "duration_ms", 0, 24 * 3600 * 1000, True)
        if kind == "file":
            _need_str(body, "name", 256, True)
        _number(body, "size", 0, 1 << 40, True)
        return 0
    url = _need_str(body, "url", _URL_LIMIT)
    if not ((<str>url).startswith("https://") or (<str>url).startswith("http://")):
        raise RequestError("bad_request", "field `url` must be an http(s) URL")
    if kind == "video" or kind == "voice":
        _number(body, "duration_ms", 0, 24 * 3600 * 1000, kind == "video")
    if kind == "file":
        _need_str(body, "name", 256)
    _number(body, "size", 0, 1 << 40, True)
    return 0


def validate_body(body, limits):
    if type(body) is not dict:  # the pure twin fails on ``body.get``; callers pass need_map's dict
        raise TypeError(f"body must be a dict, not {type(body).__name__}")
    _validate_body(<dict>body, limits)


def send_fields(req, limits):
    if type(req) is not dict:
        raise TypeError(f"request must be a dict, not {type(req).__name__}")
    cdef dict r = <dict>req
    conv_id = _need_str(r, "conv", _ID_CHARS)
    cmid = _need_str(r, "cmid", _ID_CHARS)
    body = r.get("body")
    if type(body) is not dict:
        raise RequestError("bad_request", "field `body` must be a map")
    _validate_body(<dict>body, limits)
    return conv_id, cmid, _pack_body(body)  # use_bin_type=True is msgpack's default (since 1.0)


# ---- msgpack writing: the forms msgpack.packb chooses ----------------------------------------------

# A value of a frame, prepared for writing: its msgpack kind, its UTF-8 bytes or its integer.
cdef enum Kind:
    K_NIL, K_TRUE, K_FALSE, K_INT, K_UINT64, K_STR

cdef struct Value:
    Kind kind
    const char* s
    Py_ssize_t n  # string length in bytes
    long long i
    uint64_t u


cdef int _prepare(object v, Value* out) except -1:
    """Classify ``v`` as packb would (None, bool, int, str; anything else: TypeError)."""
    cdef int overflow = 0
    if v is None:
        out.kind = K_NIL
    elif v is True:
        out.kind = K_TRUE
    elif v is False:
        out.kind = K_FALSE
    elif isinstance(v, int):
        out.i = PyLong_AsLongLongAndOverflow(v, &overflow)
        if overflow == 0:
            out.kind = K_INT
        elif overflow > 0:
            out.u = PyLong_AsUnsignedLongLong(v)  # OverflowError past 2**64 - 1, as packb
            out.kind = K_UINT64
        else:
            raise OverflowError("Integer value out of range")
    elif isinstance(v, str):
        out.s = PyUnicode_AsUTF8AndSize(v, &out.n)
        out.kind = K_STR
    else:
        raise TypeError(f"can not serialize {type(v).__name__!r} object")
    return 0


cdef inline Py_ssize_t _size(Value* v) noexcept:
    cdef long long i
    if v.kind == K_STR:
        if v.n < 32:
            return 1 + v.n
        if v.n < 0x100:
            return 2 + v.n
        if v.n < 0x10000:
            return 3 + v.n
        return 5 + v.n
    if v.kind == K_UINT64:
        return 9
    if v.kind != K_INT:
        return 1
    i = v.i
    if i < -(1 << 5):
        if i < -(1 << 15):
            return 9 if i < -(1LL << 31) else 5
        return 3 if i < -(1 << 7) else 2
    if i < (1 << 7):
        return 1
    if i < (1 << 16):
        return 2 if i < (1 << 8) else 3
    return 5 if i < (1LL << 32) else 9


cdef inline unsigned char* _be(unsigned char* p, uint64_t x, int n) noexcept:
    """Write the low ``n`` bytes of ``x`` big-endian."""
    cdef int k
    for k in range(n):
        p[k] = <unsigned char>(x >> (8 * (n - 1 - k)))
    return p + n


cdef unsigned char* _put(unsigned char* p, Value* v) noexcept:
    cdef long long i
    cdef Py_ssize_t n
    if v.kind == K_NIL:
        p[0] = 0xC0
        return p + 1
    if v.kind == K_TRUE:
        p[0] = 0xC3
        return p + 1
    if v.kind == K_FALSE:
        p[0] = 0xC2
        return p + 1
    if v.kind == K_STR:
        n = v.n
        if n < 32:
            p[0] = 0xA0 | <unsigned char>n
            p += 1
        elif n < 0x100:
            p[0] = 0xD9
            p = _be(p + 1, n, 1)
        elif n < 0x10000:
            p[0] = 0xDA
            p = _be(p + 1, n, 2)
        else:
            p[0] = 0xDB
            p = _be(p + 1, n, 4)
        memcpy(p, v.s, n)
        return p + n
    if v.kind == K_UINT64:
        p[0] = 0xCF
        return _be(p + 1, v.u, 8)
    i = v.i
    if i < -(1 << 5):
        if i < -(1 << 15):
            if i < -(1LL << 31):
                p[0] = 0xD3
                return _be(p + 1, <uint64_t>i, 8)
            p[0] = 0xD2
            return _be(p + 1, <uint64_t>i, 4)
        if i < -(1 << 7):
            p[0] = 0xD1
            return _be(p + 1, <uint64_t>i, 2)
        p[0] = 0xD0
        return _be(p + 1, <uint64_t>i, 1)
    if i < (1 << 7):
        p[0] = <unsigned char>i  # positive or negative fixint
        return p + 1
    if i < (1 << 16):
        if i < (1 << 8):
            p[0] = 0xCC
            return _be(p + 1, <uint64_t>i, 1)
        p[0] = 0xCD
        return _be(p + 1, <uint64_t>i, 2)
    if i < (1LL << 32):
        p[0] = 0xCE
        return _be(p + 1, <uint64_t>i, 4)
    p[0] = 0xCF
    return _be(p + 1, <uint64_t>i, 8)


cdef inline unsigned char* _key(unsigned char* p, const char* key, Py_ssize_t n) noexcept:
    """A short literal key (a fixstr)."""
    p[0] = 0xA0 | <unsigned char>n
    memcpy(p + 1, key, n)
    return p + 1 + n


cdef inline Py_ssize_t _ws_header_size(Py_ssize_t payload) noexcept:
    if payload < 126:
        return 2
    if payload < 0x10000:
        return 4
    return 10


cdef inline unsigned char* _ws_header(unsigned char* p, Py_ssize_t payload) noexcept:
    """A final, unmasked binary frame's header (what encode_frame(OP_BINARY, …) writes)."""
    p[0] = 0x82
    if payload < 126:
        p[1] = <unsigned char>payload
        return p + 2
    if payload < 0x10000:
        p[1] = 126
        return _be(p + 2, payload, 2)
    p[1] = 127
    return _be(p + 2, payload, 8)


# ---- server frames --------------------------------------------------------------------------------

# The fixed part of a delivery: 8 keys, the literal "t": "msg".
cdef Py_ssize_t _MSG_FIXED = 1 + (1 + 1) + (1 + 3) + (1 + 4) + (1 + 3) + (1 + 4) + (1 + 4) + (1 + 4) + (1 + 2) + (1 + 4)


cdef bytes _message(m, bint framed):
    cdef Value conv, seq, cmid, sender, role, ts
    # Held in locals: a prepared string points into its object's UTF-8, which must outlive the writing.
    o_conv, o_seq, o_cmid, o_sender, o_role, o_ts, body = m.conv_id, m.seq, m.cmid, m.sender, m.sender_role, m.ts, m.body
    if type(body) is not bytes:
        body = bytes(body)
    _prepare(o_conv, &conv)
    _prepare(o_seq, &seq)
    _prepare(o_cmid, &cmid)
    _prepare(o_sender, &sender)
    _prepare(o_role, &role)
    _prepare(o_ts, &ts)
    cdef Py_ssize_t body_n = PyBytes_GET_SIZE(<bytes>body)
    cdef Py_ssize_t payload = (
        _MSG_FIXED + _size(&conv) + _size(&seq) + _size(&cmid) + _size(&sender) + _size(&role) + _size(&ts) + body_n
    )
    cdef Py_ssize_t head = _ws_header_size(payload) if framed else 0
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head + payload)
    cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
    if framed:
        p = _ws_header(p, payload)
    p[0] = 0x88
    p = _key(p + 1, "t", 1)
    p = _key(p, "msg", 3)
    p = _put(_key(p, "conv", 4), &conv)
    p = _put(_key(p, "seq", 3), &seq)
    p = _put(_key(p, "cmid", 4), &cmid)
    p = _put(_key(p, "from", 4), &sender)
    p = _put(_key(p, "role", 4), &role)
    p = _put(_key(p, "ts", 2), &ts)
    p = _key(p, "body", 4)
    memcpy(p, PyBytes_AS_STRING(<bytes>body), body_n)
    return out


def encode_message(m):
    return _message(m, False)


def message_frame(m):
    return _message(m, True)


# The fixed part of an ack: 7 keys, the literal "t": "ack".
cdef Py_ssize_t _ACK_FIXED = 1 + (1 + 1) + (1 + 3) + (1 + 2) + (1 + 4) + (1 + 4) + (1 + 3) + (1 + 2) + (1 + 3)


def ack_frame(rid, conv_id, cmid, seq, ts, dup):
    cdef Value v_rid, v_conv, v_cmid, v_seq, v_ts, v_dup
    _prepare(rid, &v_rid)
    _prepare(conv_id, &v_conv)
    _prepare(cmid, &v_cmid)
    _prepare(seq, &v_seq)
    _prepare(ts, &v_ts)
    _prepare(dup, &v_dup)
    cdef Py_ssize_t payload = (
        _ACK_FIXED + _size(&v_rid) + _size(&v_conv) + _size(&v_cmid) + _size(&v_seq) + _size(&v_ts) + _size(&v_dup)
    )
    cdef Py_ssize_t head = _ws_header_size(payload)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, head + payload)
    cdef unsigned char* p = _ws_header(<unsigned char*>PyBytes_AS_STRING(out), payload)
    p[0] = 0x87
    p = _key(p + 1, "t", 1)
    p = _key(p, "ack", 3)
    p = _put(_key(p, "id", 2), &v_rid)
    p = _put(_key(p, "conv", 4), &v_conv)
    p = _put(_key(p, "cmid", 4), &v_cmid)
    p = _put(_key(p, "seq", 3), &v_seq)
    p = _put(_key(p, "ts", 2), &v_ts)
    _put(_key(p, "dup", 3), &v_dup)
    return out
