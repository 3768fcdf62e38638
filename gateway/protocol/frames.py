"""Sans-IO WebSocket frame codec, server side (RFC 6455 section 5): the switch between its twins.

Two implementations of one API live behind this module:

* ``gateway._frames_c``, compiled by ``setup.py`` from ``native/frames.pyx`` (Cython), used whenever
  it is built;
* :mod:`gateway.protocol._frames_py`, the pure-Python twin, which documents the behaviour in full,
  used when the extension is not built or ``KEFU_PUREPYTHON=1`` is set.

Both raise the same :class:`FrameError` class (from :mod:`gateway.protocol._frame_errors`) with the
same ``code`` and ``reason`` for the same input. :data:`IMPLEMENTATION` says which one was picked
(``"native"`` or ``"python"``), for build information and logs. An extension that is present but
broken is not silently replaced: the import error propagates (see :mod:`gateway._native`).
"""

from __future__ import annotations

from .. import _native
from ._frame_errors import FrameError

__all__ = [
    "IMPLEMENTATION",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameDecoder",
    "FrameError",
    "encode_close",
    "encode_frame",
    "parse_close_payload",
]

if _native.load("frames") is None:
    from ._frames_py import (
        OP_BINARY,
        OP_CLOSE,
        OP_CONT,
        OP_PING,
        OP_PONG,
        OP_TEXT,
        FrameDecoder,
        encode_close,
        encode_frame,
        parse_close_payload,
    )

    IMPLEMENTATION = "python"
else:
    from .._frames_c import (  # type: ignore[import-not-found,no-redef]
        OP_BINARY,
        OP_CLOSE,
        OP_CONT,
        OP_PING,
        OP_PONG,
        OP_TEXT,
        FrameDecoder,
        encode_close,
        encode_frame,
        parse_close_payload,
    )
    from .._frames_c import FrameError as _native_frame_error  # type: ignore[import-not-found]

    # One exception class for both twins: an extension built against another FrameError would
    # escape ``except FrameError`` in the connection layer. That is a broken build: say so.
    if _native_frame_error is not FrameError:
        raise ImportError("gateway._frames_c raises its own FrameError; rebuild the extension")
    del _native_frame_error

    IMPLEMENTATION = "native"
