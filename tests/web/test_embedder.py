"""embedder.js's own rules, run by Node (no browser needed): which origins a page may hear from
and post to as the window that frames it."""

from __future__ import annotations

import json

import pytest

from .conftest import STATIC, run_node

pytestmark = pytest.mark.processes  # runs Node: once, not again in the pure-Python pass


def test_a_parent_is_heard_only_at_an_origin_that_may_frame_the_page():
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
    answers = run_node(STATIC / "embedder.js", f"console.log(JSON.stringify({json.dumps(cases)}.map(([o, a]) => module.originMatches(o, a))));")
    assert answers == [expected for _, _, expected in cases]
