"""Token issue and verification, and every token attack from the issue's list."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from tests.auth.helpers import b64url, ca_and_leaf, forge, new_key, public_pem, sign, verifier_for
from trustyard.auth.keyring import TokenRejected, TrustedKeys
from trustyard.auth.scopes import Scope
from trustyard.auth.token_issuer import TokenIssuer, read_refresh_token
from trustyard.auth.token_verifier import TokenVerifier
from trustyard.crypto.keyid import certificate_der_kid, jwk_thumbprint, libtrust_kid

PULL = Scope("repository", "alice/app", ("pull",))


def claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": "iss",
        "sub": "alice",
        "aud": "reg",
        "exp": now + 300,
        "nbf": now - 1,
        "iat": now,
        "jti": "j1",
        "access": [{"type": "repository", "name": "alice/app", "actions": ["pull"]}],
    }
    base.update(over)
    return base


def rejected(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenRejected) as info:
        verifier.verify(token)
    assert token not in info.value.reason, "a refusal must never echo the token"
    return info.value.reason


@pytest.mark.parametrize("form", ["libtrust", "rfc7638", "jwks"])
def test_issued_token_shape_and_round_trip(form: Any) -> None:
    key = new_key()
    issuer = TokenIssuer(key, "iss", kid_format=form)
    issued = issuer.issue("alice", "reg", [PULL])
    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "ES256" and header["typ"] == "JWT"
    expected_kid = (
        libtrust_kid(key.public_key) if form == "libtrust" else jwk_thumbprint(key.public_key)
    )
    assert header["kid"] == expected_kid
    assert header["x5c"] == key.x5c()
    body = jwt.decode(issued.token, options={"verify_signature": False})
    assert {"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"} <= body.keys()
    assert body["access"] == [{"type": "repository", "name": "alice/app", "actions": ["pull"]}]
    assert issued.expires_in == 300 and issued.issued_at.endswith("Z")
    verified = verifier_for(key.chain[0]).verify(issued.token)
    assert verified.subject == "alice"
    assert verified.actions("repository", "alice/app") == {"pull"}


def test_kid_only_tokens_resolve_under_both_forms_without_x5c() -> None:
    key = new_key()
    verifier = verifier_for(key.chain[0])
    for kid in (libtrust_kid(key.public_key), jwk_thumbprint(key.public_key)):
        assert verifier.verify(sign(key, claims(), {"kid": kid})).subject == "alice"


def test_x5c_chain_to_a_trusted_ca() -> None:
    leaf, ca = ca_and_leaf()
    issued = TokenIssuer(leaf, "iss").issue("bob", "reg", [])
    assert verifier_for(ca).verify(issued.token).subject == "bob"


def test_x5c_chain_to_an_untrusted_ca_is_refused() -> None:
    leaf, _ = ca_and_leaf()
    _, other_ca = ca_and_leaf()
    reason = rejected(
        verifier_for(other_ca), TokenIssuer(leaf, "iss").issue("bob", "reg", []).token
    )
    assert "does not chain to any certificate in the trusted root bundle" in reason


def test_jwks_kid() -> None:
    key = new_key()
    doc = TokenIssuer(key, "iss").jwks()
    custom = dict(doc["keys"][0], kid="my-key-2024")
    trusted = TrustedKeys()
    trusted.add_jwks({"keys": [custom]}, "jwks.json")
    verifier = TokenVerifier(trusted, issuer="iss", service="reg")
    assert verifier.verify(sign(key, claims(), {"kid": "my-key-2024"})).subject == "alice"


def test_jwks_document_lists_every_kid_form() -> None:
    key = new_key()
    doc = TokenIssuer(key, "iss").jwks()
    kids = {k["kid"] for k in doc["keys"]}
    assert kids == {libtrust_kid(key.public_key), jwk_thumbprint(key.public_key)}
    assert all(k["kty"] == "EC" and k["alg"] == "ES256" and "d" not in k for k in doc["keys"])


# -- attacks ----------------------------------------------------------------------------------
def test_alg_none() -> None:
    key = new_key()
    token = forge({"alg": "none", "typ": "JWT", "kid": libtrust_kid(key.public_key)}, claims())
    assert "algorithm 'none' is not accepted" in rejected(verifier_for(key.chain[0]), token)


def test_hs256_signed_with_the_public_key() -> None:
    key = new_key()
    header = {"alg": "HS256", "typ": "JWT", "kid": libtrust_kid(key.public_key)}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims()).encode())}"
    mac = hmac.new(public_pem(key), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(mac)}"
    assert "algorithm 'HS256' is not accepted" in rejected(verifier_for(key.chain[0]), token)
    # Even a verifier configured to list HS256 never accepts it.
    trusted = TrustedKeys()
    trusted.add_certificates(key.chain, "b")
    lax = TokenVerifier(trusted, issuer="iss", service="reg", algorithms=["HS256", "ES256"])
    assert "HS256" not in lax.algorithms
    rejected(lax, token)


def test_alg_must_match_the_key_type() -> None:
    key = new_key()
    token = forge(
        {"alg": "RS256", "typ": "JWT", "kid": libtrust_kid(key.public_key)}, claims(), b"x"
    )
    assert "does not match its key" in rejected(verifier_for(key.chain[0]), token)


def test_expired_beyond_leeway_refused_within_leeway_accepted() -> None:
    key = new_key()
    verifier = verifier_for(key.chain[0])
    kid = {"kid": libtrust_kid(key.public_key)}
    now = int(time.time())
    assert "expired" in rejected(verifier, sign(key, claims(exp=now - 120), kid))
    assert verifier.verify(sign(key, claims(exp=now - 30), kid)).subject == "alice"


def test_not_yet_valid() -> None:
    key = new_key()
    now = int(time.time())
    token = sign(key, claims(nbf=now + 600), {"kid": libtrust_kid(key.public_key)})
    assert "not valid yet" in rejected(verifier_for(key.chain[0]), token)


def test_wrong_audience_and_issuer() -> None:
    key = new_key()
    verifier = verifier_for(key.chain[0])
    kid = {"kid": libtrust_kid(key.public_key)}
    assert "is not this registry's service 'reg'" in rejected(
        verifier, sign(key, claims(aud="other"), kid)
    )
    assert "is not the trusted issuer 'iss'" in rejected(
        verifier, sign(key, claims(iss="evil"), kid)
    )
    assert "has no 'aud' claim" in rejected(
        verifier, sign(key, {k: v for k, v in claims().items() if k != "aud"}, kid)
    )


def test_unknown_kid_lists_trusted_kids() -> None:
    key, other = new_key(), new_key()
    token = sign(other, claims(), {"kid": libtrust_kid(other.public_key)})
    reason = rejected(verifier_for(key.chain[0]), token)
    assert f"kid {libtrust_kid(other.public_key)} matches no key" in reason
    assert libtrust_kid(key.public_key) in reason


def test_seed_000_kid_over_certificate_is_explained() -> None:
    key = new_key()
    wrong = certificate_der_kid(key.chain[0])
    reason = rejected(verifier_for(key.chain[0]), sign(key, claims(), {"kid": wrong}))
    assert "computed over the whole certificate DER" in reason
    assert libtrust_kid(key.public_key) in reason


def test_tampered_payload() -> None:
    key = new_key()
    token = TokenIssuer(key, "iss").issue("alice", "reg", [PULL]).token
    head, _, sig = token.split(".")
    escalated = claims(access=[{"type": "repository", "name": "bob/app", "actions": ["push"]}])
    forged = f"{head}.{b64url(json.dumps(escalated).encode())}.{sig}"
    assert "signature does not verify" in rejected(verifier_for(key.chain[0]), forged)


def test_signed_by_another_key_claiming_a_trusted_kid() -> None:
    key, attacker = new_key(), new_key()
    token = sign(attacker, claims(), {"kid": libtrust_kid(key.public_key)})
    assert "signature does not verify" in rejected(verifier_for(key.chain[0]), token)


def test_self_made_x5c_is_not_trusted() -> None:
    key, attacker = new_key(), new_key()
    token = TokenIssuer(attacker, "iss").issue("alice", "reg", [PULL]).token
    assert "does not chain" in rejected(verifier_for(key.chain[0]), token)


def test_garbage_and_oversized_tokens() -> None:
    verifier = verifier_for(new_key().chain[0])
    assert "not a JWT" in rejected(verifier, "not-a-token")
    assert "limit" in rejected(verifier, "a" * 9000)


def test_verified_tokens_are_cached_until_expiry() -> None:
    key = new_key()
    clock = [time.time()]
    trusted = TrustedKeys()
    trusted.add_certificates(key.chain, "b")
    verifier = TokenVerifier(trusted, issuer="iss", service="reg", clock=lambda: clock[0])
    token = TokenIssuer(key, "iss", ttl_seconds=60).issue("alice", "reg", [PULL]).token
    first = verifier.verify(token)
    assert verifier.verify(token) is first
    clock[0] += 60 + 61
    with pytest.raises(TokenRejected):
        verifier.verify(token)


def test_refresh_tokens_are_not_access_tokens() -> None:
    key = new_key()
    issuer = TokenIssuer(key, "iss")
    refresh = issuer.issue_refresh("alice", "reg", "bind")
    assert "audience" in rejected(verifier_for(key.chain[0]), refresh)
    got = read_refresh_token(refresh, key, issuer="iss", service="reg")
    assert (got.subject, got.binding) == ("alice", "bind")
    access = issuer.issue("alice", "reg", []).token
    with pytest.raises(TokenRejected):
        read_refresh_token(access, key, issuer="iss", service="reg")
