"""Find the optional native twins built from ``native/*.pyx``.

``setup.py`` compiles ``native/<stem>.pyx`` into the extension module ``gateway._<stem>_c``, the
Cython twin of a pure-Python module. A public module such as :mod:`gateway.protocol.frames` is the
switch between the two twins; it asks :func:`load` for the native one and falls back to pure Python
when it gets ``None``.

The rules, the same for every twin:

* ``KEFU_PUREPYTHON=1`` in the environment selects pure Python everywhere (as msgpack's
  ``MSGPACK_PUREPYTHON`` does), for debugging and for running the test suite against the twin.
* An extension that was never built (no compiler at install time, a source checkout) means pure
  Python, silently: that is a supported way to run Kefu.
* An extension that is present but fails to import (built for another interpreter's ABI tag is
  "absent"; a missing symbol or a failing module body is not) raises: a broken build must never be
  hidden behind the slower twin.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["PURE_PYTHON_ENV", "load", "native_module_name", "pure_python_forced"]

PURE_PYTHON_ENV = "KEFU_PUREPYTHON"


def pure_python_forced() -> bool:
    """Whether the environment forces the pure-Python twins (``KEFU_PUREPYTHON=1``)."""
    return os.environ.get(PURE_PYTHON_ENV) == "1"


def native_module_name(stem: str) -> str:
    """The extension module ``setup.py`` builds from ``native/<stem>.pyx``."""
    return f"gateway._{stem}_c"


def load(stem: str, *, honour_env: bool = True) -> ModuleType | None:
    """Import the native twin built from ``native/<stem>.pyx``.

    Args:
        stem: the ``.pyx`` file's name without suffix, e.g. ``"frames"``.
        honour_env: return ``None`` when ``KEFU_PUREPYTHON=1``. Tests and benchmarks that exercise
            both twins side by side pass False.

    Returns:
        The extension module, or ``None`` when pure Python is forced or the extension is not built.

    Raises:
        ImportError: the extension exists but cannot be imported (a broken build), or something
            it imports is missing.
    """
    if honour_env and pure_python_forced():
        return None
    name = native_module_name(stem)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        # Only the extension itself being absent means "not built"; a module that the extension
        # imports being absent is a broken installation and propagates.
        if exc.name != name:
            raise
        return None
