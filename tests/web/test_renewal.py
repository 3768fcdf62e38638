"""renewal.js's own rules, run by Node (no browser needed): which origins may send a page a token,
and the expiry it reads from one."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ..support import token

pytestmark = pytest.mark.processes  # runs Node: once, not again in the pure-Python pass

RENEWAL = Path(__file__).resolve().parents[2] / "gateway" / "web" / "static" / "renewal.js"


def run_node(script: str) -> object:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (it also runs the benchmark's Node relay)")
    done = subprocess.run([node, "--input-type=module", "-e", f"import * as renewal from {json.dumps(RENEWAL.as_uri())};\n{script}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_token_is_taken_only_from_an_origin_that_may_frame_the_page():
    cases = [
        ("https://shop.example", "https://shop.example", True),
        ("https://shop.example:8443", "https://shop.example", False),
        ("http://shop.example", "https://shop.example", False),
        ("https://m.shop.example", "https://*.shop.example", True),
        ("https://a.b.shop.example", "https://*.shop.example", True),
        ("https://shop.example", "https://*.shop.example", False),  # *. is a subdomain, not the site itself
        ("https://evilshop.example", "https://*.shop.example", False),
        ("https://shop.example.evil", "https://*.shop.example", False),
        ("http://m.shop.example", "https://*.shop.example", False),
        ("https://m.shop.example", "https://*", True),
        ("http://m.shop.example", "https://*", False),
    ]
    answers = run_node(f"console.log(JSON.stringify({json.dumps(cases)}.map(([o, a]) => renewal.originMatches(o, a))));")
    assert answers == [expected for _, _, expected in cases]


def test_the_expiry_is_read_from_the_token_and_garbage_has_none():
    minted = token("alice", ttl_s=600)
    import jwt

    expected = jwt.decode(minted, options={"verify_signature": False})["exp"]
    answers = run_node(f"console.log(JSON.stringify([{json.dumps(minted)}, 'a.b.c', '', 'x'].map(renewal.tokenExpiry)));")
    assert answers == [expected, None, None, None]
