"""Token verification: what is accepted, and the code each refusal gets."""

from __future__ import annotations

import base64
import dataclasses
import json
import time

import jwt
import pytest

from gateway.auth import Authenticator, mint_token
from gateway.protocol.errors import AuthError

SECRET = "a-gateway-secret-long-enough-for-hs256!"
SHOP_A = "tenant-a-secret-long-enough-for-hs256!!"


def claims(**overrides):
    base = {"sub": "alice", "tenant": "shop1", "role": "shopper", "channel": "app", "exp": int(time.time()) + 60}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def refused(auth: Authenticator, tok) -> str:
    with pytest.raises(AuthError) as info:
        auth.verify(tok)
    return info.value.code


def test_a_valid_token_gives_the_identity():
    tok = mint_token(SECRET, tenant="shop1", user="王丽", role="agent", channel="web", name="王丽")
    identity = Authenticator(SECRET).verify(tok)
    assert (identity.tenant, identity.user, identity.role, identity.channel, identity.name) == ("shop1", "王丽", "agent", "web", "王丽")


def test_the_customer_claim_names_the_shops_customer():
    assert Authenticator(SECRET).verify(mint_token(SECRET, tenant="shop1", user="v-7", role="shopper", channel="web", customer="c42")).customer == "c42"
    assert Authenticator(SECRET).verify(mint_token(SECRET, tenant="shop1", user="v-7", role="shopper", channel="web")).customer == ""
    for bad in ("web:v-7", 42, "x" * 129):
        assert refused(Authenticator(SECRET), jwt.encode(claims(customer=bad), SECRET)) == "token_invalid"


def test_expired_token():
    assert refused(Authenticator(SECRET, leeway_s=0), jwt.encode(claims(exp=int(time.time()) - 10), SECRET)) == "token_expired"


def test_forged_signature():
    assert refused(Authenticator(SECRET), jwt.encode(claims(), "somebody-elses-secret-0123456789abcdef")) == "token_invalid"


def _unsigned(payload: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(payload)}."


def test_alg_none_and_other_algorithms_are_refused():
    auth = Authenticator(SECRET)
    assert refused(auth, _unsigned(claims())) == "token_algorithm"
    hs512 = jwt.encode(claims(), SECRET + "x" * 40, algorithm="HS512")
    assert refused(auth, hs512) == "token_algorithm"


@pytest.mark.parametrize("missing", ["sub", "tenant", "role", "channel", "exp"])
def test_missing_claims(missing):
    assert refused(Authenticator(SECRET), jwt.encode(claims(**{missing: None}), SECRET)) == "token_invalid"


@pytest.mark.parametrize("bad", [{"role": "admin"}, {"channel": "fax"}, {"sub": ""}, {"sub": 5}])
def test_invalid_claim_values(bad):
    assert refused(Authenticator(SECRET), jwt.encode(claims(**bad), SECRET)) == "token_invalid"


@pytest.mark.parametrize("tok", [None, "", 42, "a.b", "not a token"])
def test_garbage(tok):
    assert refused(Authenticator(SECRET), tok) in ("token_missing", "token_invalid")


def test_unknown_tenant_is_refused_when_tenants_are_listed():
    auth = Authenticator(SECRET, tenants=frozenset({"shop1"}))
    assert auth.verify(jwt.encode(claims(), SECRET)).tenant == "shop1"
    assert refused(auth, jwt.encode(claims(tenant="shop2"), SECRET)) == "tenant_unknown"


def test_a_tenant_key_cannot_mint_tokens_for_another_tenant():
    auth = Authenticator(SECRET, tenant_secrets={"shop-a": SHOP_A})
    assert auth.verify(jwt.encode(claims(tenant="shop-a"), SHOP_A)).tenant == "shop-a"
    # shop-a's key signing for shop1 (which uses the gateway secret) fails, and the other way round
    assert refused(auth, jwt.encode(claims(tenant="shop1"), SHOP_A)) == "token_invalid"
    assert refused(auth, jwt.encode(claims(tenant="shop-a"), SECRET)) == "token_invalid"


def test_a_verified_token_is_not_parsed_again_until_it_expires(monkeypatch):
    auth = Authenticator(SECRET, leeway_s=0)
    tok = jwt.encode(claims(exp=int(time.time()) + 60), SECRET)
    first = auth.verify(tok)

    def must_not_run(*args, **kwargs):
        raise AssertionError("PyJWT ran for a token verified before")

    monkeypatch.setattr(jwt, "decode", must_not_run)
    assert auth.verify(tok) is first
    # once its expiry passes the cached entry is dropped and the token verified (here: refused) again
    [key] = auth._verified
    auth._verified[key] = dataclasses.replace(first, expires_at=int(time.time()) - 1)
    with pytest.raises(AssertionError, match="PyJWT ran"):
        auth.verify(tok)
