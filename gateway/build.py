"""Which twin of each native module is active: for ``kefu --version``, the startup log,
``/healthz`` and the ``kefu_build_info`` metric (its labels are these keys)."""

from __future__ import annotations

from .model import RECORDS
from .protocol.envelope import IMPLEMENTATION as ENVELOPE
from .protocol.frames import IMPLEMENTATION as FRAME_CODEC

# module -> "native" (the Cython extension from native/) or "python" (its pure-Python twin)
IMPLEMENTATIONS: dict[str, str] = {"codec": FRAME_CODEC, "envelope": ENVELOPE, "records": RECORDS}


def describe() -> str:
    """``codec: native, envelope: native, records: native``."""
    return ", ".join(f"{name}: {impl}" for name, impl in IMPLEMENTATIONS.items())


def health_line() -> str:
    """The answer of ``/healthz``: ``ok codec=native envelope=native records=native``."""
    return "ok " + " ".join(f"{name}={impl}" for name, impl in IMPLEMENTATIONS.items())
