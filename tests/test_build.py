"""Build information: which twin of each native module runs, and the startup warning when a
native module was not built."""

from __future__ import annotations

import pytest

from gateway import build


def test_describe_names_every_module() -> None:
    described = build.describe()
    for name, impl in build.IMPLEMENTATIONS.items():
        assert f"{name}: {impl}" in described
    assert build.health_line().split()[1:] == [f"{k}={v}" for k, v in build.IMPLEMENTATIONS.items()]


def test_a_module_missing_without_being_asked_for_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEFU_PUREPYTHON", raising=False)
    monkeypatch.setattr(build, "IMPLEMENTATIONS", {"codec": "native", "envelope": "python", "records": "python"})
    warning = build.missing_native_warning()
    assert warning is not None and "envelope, records" in warning and "codec" not in warning


def test_no_warning_when_all_are_native_or_pure_python_is_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEFU_PUREPYTHON", raising=False)
    monkeypatch.setattr(build, "IMPLEMENTATIONS", {"codec": "native", "envelope": "native", "records": "native"})
    assert build.missing_native_warning() is None
    monkeypatch.setenv("KEFU_PUREPYTHON", "1")
    monkeypatch.setattr(build, "IMPLEMENTATIONS", {"codec": "python", "envelope": "python", "records": "python"})
    assert build.missing_native_warning() is None
