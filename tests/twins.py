"""Helpers of the tests that hold each native module (``native/<stem>.pyx``, built as
``gateway._<stem>_c``) against its pure-Python twin."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path
from types import ModuleType

import pytest

from gateway import _native

ROOT = Path(__file__).resolve().parents[1]
EXPECT_NATIVE = os.environ.get("KEFU_EXPECT_NATIVE") == "1"


def native_twin(stem: str) -> ModuleType:
    """The native twin; the test is skipped when it is not built, unless KEFU_EXPECT_NATIVE=1
    (then it fails)."""
    native = _native.load(stem, honour_env=False)
    if native is None:
        if EXPECT_NATIVE:
            pytest.fail(f"KEFU_EXPECT_NATIVE=1 but gateway._{stem}_c is not built")
        pytest.skip(f"gateway._{stem}_c is not built (`pip install -e .` builds it)")
    return native


def check_built_when_expected(stem: str, implementation: str) -> None:
    """Fails when KEFU_EXPECT_NATIVE=1 and the extension is missing (to be set wherever the build
    must have produced it), so a build that silently fell back to pure Python cannot pass; and
    then the switch (whose choice is ``implementation``) must have picked it."""
    native = _native.load(stem, honour_env=False)
    if native is None:
        assert not EXPECT_NATIVE, (
            f"KEFU_EXPECT_NATIVE=1 but gateway._{stem}_c is not built: the native build failed or "
            "was skipped (look for 'kefu: could not build' in the install output)"
        )
        pytest.skip(f"gateway._{stem}_c is not built and KEFU_EXPECT_NATIVE is not set")
    assert native.__file__ is not None
    assert native.__file__.endswith(tuple(EXTENSION_SUFFIXES)), native.__file__
    if EXPECT_NATIVE and not _native.pure_python_forced():
        assert implementation == "native"
    if _native.pure_python_forced():
        assert implementation == "python"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter from the repository root, with ``env`` on top of ours
    minus the KEFU_PUREPYTHON of this run."""
    environ = {k: v for k, v in os.environ.items() if k != "KEFU_PUREPYTHON"}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )
