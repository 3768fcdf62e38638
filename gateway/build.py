"""Which twin of each native module is active: for ``kefu --version``, the startup log,
``/healthz`` and the ``kefu_build_info`` metric (its labels are these keys)."""

from __future__ import annotations

from ._native import pure_python_forced
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


def missing_native_warning() -> str | None:
    """What to warn about at startup when a native module runs as its pure twin without
    ``KEFU_PUREPYTHON=1`` asking for it (pip hides the build's own warning unless run with -v)."""
    missing = [name for name, impl in IMPLEMENTATIONS.items() if impl == "python"]
    if not missing or pure_python_forced():
        return None
    return (
        f"native modules not built ({', '.join(missing)}): running their pure-Python twins, which cost up to "
        "1.8x the CPU per message; install a C compiler and reinstall Kefu to build them"
    )
