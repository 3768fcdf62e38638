"""renewal.js's own rules, run by Node (no browser needed): the expiry it reads from a token."""

from __future__ import annotations

import json

import jwt
import pytest

from ..support import token
from .conftest import STATIC, run_node

pytestmark = pytest.mark.processes  # runs Node: once, not again in the pure-Python pass


def test_the_expiry_is_read_from_the_token_and_garbage_has_none():
    minted = token("alice", ttl_s=600)
    expected = jwt.decode(minted, options={"verify_signature": False})["exp"]
    answers = run_node(STATIC / "renewal.js", f"console.log(JSON.stringify([{json.dumps(minted)}, 'a.b.c', '', 'x'].map(module.tokenExpiry)));")
    assert answers == [expected, None, None, None]
