"""docs/media.md lists every media error code with its status, and every media setting."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from gateway.config import Config
from gateway.media.errors import MEDIA_ERRORS

MEDIA_MD = (Path(__file__).resolve().parents[2] / "docs" / "media.md").read_text()


def test_every_error_code_is_documented_with_its_status() -> None:
    for error in MEDIA_ERRORS.values():
        assert f"| `{error.code}` | {error.status} |" in MEDIA_MD, error.code


def test_every_media_setting_is_named() -> None:
    for f in fields(Config):
        if f.name.startswith("media_"):
            assert f"--{f.name.replace('_', '-')}" in MEDIA_MD, f.name
