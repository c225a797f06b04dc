"""Token forgery through certificate chains, against a running server (issue 16, hole 2).

The server signs with `signing_cert` = [its leaf, the issuing CA] and trusts one explicit
`rootcertbundle` (a partner issuer's root). Forgers hold real certificates from both CAs (a TLS
server certificate, an intermediate that may not issue, an expired one...) and ask for the
catalog and push; every forgery must get 401, while the server's own tokens and the partner's
properly chained tokens keep working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.helpers import b64url, forge
from tests.auth.integration import AuthServerProcess, add_user, bearer, challenge, token
from tests.auth.pki import HOUR, Cert, claims, key_usage, make_cert, now, token_with_chain
from trustyard.crypto.keyid import certificate_der_kid, jwk_thumbprint, libtrust_kid, public_jwk

ROOT = ("root", "root-pw")
ALICE = ("alice", "alice-pw")


@dataclass(frozen=True)
class World:
    """The operator's PKI, the partner's, and an attacker's."""

    signing_ca: Cert  # issued this server's signing certificate: NOT trusted for tokens
    issuer: Cert  # this server's signing key and certificate
    partner_root: Cert  # the explicit rootcertbundle
    partner_inter: Cert  # CA:TRUE, pathLen 0, under partner_root
    partner_signer: Cert  # a legitimate token signer under partner_inter
    retired_issuer: Cert  # self-signed, also in the bundle (key rotation): a key trusted as is
    other_root: Cert  # nobody trusts this one


@pytest.fixture(scope="module")
def world() -> World:
    signing_ca = make_cert("operator issuing CA", ca=True)
    partner_root = make_cert("partner root", ca=True)
    partner_inter = partner_root.issue("partner intermediate", ca=True, path_length=0)
    return World(
        signing_ca=signing_ca,
        issuer=signing_ca.issue("trustyard token issuer"),
        partner_root=partner_root,
        partner_inter=partner_inter,
        partner_signer=partner_inter.issue("partner token signer"),
        retired_issuer=make_cert(
            "retired issuer", ca=True, usage=key_usage(sign=True, cert_sign=True)
        ),
        other_root=make_cert("other root", ca=True),
    )


def start_server(tmp: Path, world: World, *, bundle: bool) -> AuthServerProcess:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "key.pem").write_bytes(world.issuer.key_pem())
    (tmp / "chain.pem").write_bytes(world.issuer.pem + world.signing_ca.pem)
    env = {
        "TRUSTYARD_AUTH__MODE": "token",
        "TRUSTYARD_AUTH__BCRYPT_COST": "4",
        "TRUSTYARD_AUTH__TOKEN__SIGNING_KEY": str(tmp / "key.pem"),
        "TRUSTYARD_AUTH__TOKEN__SIGNING_CERT": str(tmp / "chain.pem"),
    }
    if bundle:
        (tmp / "bundle.pem").write_bytes(world.partner_root.pem + world.retired_issuer.pem)
        env["TRUSTYARD_AUTH__TOKEN__ROOTCERTBUNDLE"] = str(tmp / "bundle.pem")
    data = tmp / "data"
    add_user(data, *ROOT, admin=True)
    add_user(data, *ALICE)
    return AuthServerProcess(data, extra_env=env).start()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, world: World) -> Iterator[AuthServerProcess]:
    server = start_server(tmp_path_factory.mktemp("chains"), world, bundle=True)
    yield server
    server.stop()


def refused(server: AuthServerProcess, forged: str) -> str:
    """The forged token gets 401 invalid_token on the catalog, a read and a push; the reason."""
    reasons = []
    for method, path in (
        ("GET", "/v2/_catalog"),
        ("GET", "/v2/alice/app/tags/list"),
        ("POST", "/v2/alice/app/blobs/uploads/"),
    ):
        r = httpx.request(method, server.url + path, headers=bearer(forged), timeout=30)
        assert r.status_code == 401, (path, r.status_code, r.text)
        assert challenge(r)["error"] == "invalid_token"
        error = r.json()["errors"][0]
        assert error["code"] == "UNAUTHORIZED" and forged not in r.text
        reasons.append(error["message"])
    assert forged not in server.log()
    return reasons[0]


def accepted(server: AuthServerProcess, good: str) -> None:
    r = httpx.get(f"{server.url}/v2/_catalog", headers=bearer(good), timeout=30)
    assert r.status_code == 200, r.text


# -- what must keep working ---------------------------------------------------------------------
def test_own_tokens_carry_the_chain_and_work(srv: AuthServerProcess, world: World) -> None:
    own = token(srv, "registry:catalog:*", auth=ROOT)
    header = jwt.get_unverified_header(own)
    assert header["x5c"] == [world.issuer.der_b64, world.signing_ca.der_b64]
    accepted(srv, own)
    alice = token(srv, "repository:alice/app:pull,push", auth=ALICE)
    r = httpx.post(f"{srv.url}/v2/alice/app/blobs/uploads/", headers=bearer(alice))
    assert r.status_code == 202, r.text


@pytest.mark.parametrize("with_root", [False, True])
def test_partner_chain_to_the_explicit_bundle_works(
    srv: AuthServerProcess, world: World, with_root: bool
) -> None:
    chain = [world.partner_signer, world.partner_inter]
    chain += [world.partner_root] if with_root else []
    accepted(srv, token_with_chain(world.partner_signer, chain))
    key = world.partner_signer.key.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    for kid in (libtrust_kid(key), jwk_thumbprint(key)):  # a kid naming the leaf key is fine
        accepted(srv, token_with_chain(world.partner_signer, chain, kid=kid))


def test_bundle_certificate_keys_sign_when_their_key_usage_allows(
    srv: AuthServerProcess, world: World
) -> None:
    """Distribution's rule: a bundle certificate's own key signs tokens (x5c or kid alone),
    e.g. the previous issuer after a rotation; a CA-only key (keyCertSign) does not."""
    retired = world.retired_issuer
    accepted(srv, token_with_chain(retired, [retired]))
    key = retired.key.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    headers = {"kid": libtrust_kid(key)}
    accepted(srv, jwt.encode(claims(), retired.key, algorithm="ES256", headers=headers))
    root = world.partner_root
    assert "may not sign tokens" in refused(srv, token_with_chain(root, [root]))
    key = root.key.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    headers = {"kid": libtrust_kid(key)}
    reason = refused(srv, jwt.encode(claims(), root.key, algorithm="ES256", headers=headers))
    assert "may only issue certificates, not sign tokens" in reason


# -- hole 2: certificates from this server's issuing CA -----------------------------------------
@pytest.mark.parametrize("with_ca", [False, True])
def test_tls_sibling_from_the_signing_ca_is_refused(
    srv: AuthServerProcess, world: World, with_ca: bool
) -> None:
    tls = world.signing_ca.issue("registry", tls_server=True)  # CA:FALSE, digitalSignature
    chain = [tls, world.signing_ca] if with_ca else [tls]
    reason = refused(srv, token_with_chain(tls, chain))
    assert "does not chain to any certificate in the trusted root bundle" in reason
    key = tls.key.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    refused(srv, token_with_chain(tls, chain, kid=libtrust_kid(key)))
    # Without x5c the sibling's key is simply unknown.
    kid_only = jwt.encode(claims(), tls.key, algorithm="ES256", headers={"kid": libtrust_kid(key)})
    assert "untrusted key" in refused(srv, kid_only)


def test_another_signer_and_sub_ca_from_the_signing_ca_are_refused(
    srv: AuthServerProcess, world: World
) -> None:
    other_signer = world.signing_ca.issue("another token service")
    refused(srv, token_with_chain(other_signer, [other_signer, world.signing_ca]))
    sub_ca = world.signing_ca.issue("operator sub CA", ca=True)
    leaf = sub_ca.issue("leaf")
    refused(srv, token_with_chain(leaf, [leaf, sub_ca, world.signing_ca]))


def test_the_signing_ca_key_is_not_a_token_key(srv: AuthServerProcess, world: World) -> None:
    ca = world.signing_ca
    refused(srv, token_with_chain(ca, [ca]))
    key = ca.key.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    kid_only = jwt.encode(claims(), ca.key, algorithm="ES256", headers={"kid": libtrust_kid(key)})
    refused(srv, kid_only)


def test_without_a_bundle_only_the_own_key_is_trusted(tmp_path: Path, world: World) -> None:
    server = start_server(tmp_path, world, bundle=False)
    try:
        accepted(server, token(server, "registry:catalog:*", auth=ROOT))
        tls = world.signing_ca.issue("registry", tls_server=True)
        reason = refused(server, token_with_chain(tls, [tls, world.signing_ca]))
        assert "no root bundle (auth.token.rootcertbundle) is configured" in reason
        refused(
            server,
            token_with_chain(world.partner_signer, [world.partner_signer, world.partner_inter]),
        )
    finally:
        server.stop()


# -- path rules under the explicitly trusted root --------------------------------------------------
ForgedChain = Callable[[World], tuple[Cert, list[Cert]]]


def _issuer_lacks_key_cert_sign(w: World) -> tuple[Cert, list[Cert]]:
    bad = w.partner_root.issue("signing-only CA", ca=True, usage=key_usage(sign=True))
    leaf = bad.issue("forged")
    return leaf, [leaf, bad]


def _issuer_is_a_tls_certificate(w: World) -> tuple[Cert, list[Cert]]:
    tls = w.partner_inter.issue("partner www", tls_server=True)
    leaf = tls.issue("forged")
    return leaf, [leaf, tls, w.partner_inter]


def _issuer_has_no_basic_constraints(w: World) -> tuple[Cert, list[Cert]]:
    nobc = w.partner_root.issue("no constraints", ca=None, usage=key_usage(cert_sign=True))
    leaf = nobc.issue("forged")
    return leaf, [leaf, nobc]


def _expired_intermediate(w: World) -> tuple[Cert, list[Cert]]:
    old = w.partner_root.issue(
        "retired CA", ca=True, not_before=now() - 72 * HOUR, not_after=now() - HOUR
    )
    leaf = old.issue("forged", not_before=now() - 48 * HOUR)
    return leaf, [leaf, old]


def _not_yet_valid_intermediate(w: World) -> tuple[Cert, list[Cert]]:
    early = w.partner_root.issue("future CA", ca=True, not_before=now() + HOUR)
    leaf = early.issue("forged")
    return leaf, [leaf, early]


def _expired_leaf(w: World) -> tuple[Cert, list[Cert]]:
    leaf = w.partner_inter.issue("stale", not_before=now() - 48 * HOUR, not_after=now() - HOUR)
    return leaf, [leaf, w.partner_inter]


def _path_length_exceeded(w: World) -> tuple[Cert, list[Cert]]:
    deeper = w.partner_inter.issue("too deep CA", ca=True)  # partner_inter has pathLen 0
    leaf = deeper.issue("forged")
    return leaf, [leaf, deeper, w.partner_inter]


def _self_signed(_w: World) -> tuple[Cert, list[Cert]]:
    me = make_cert("self-signed", ca=False)
    return me, [me]


def _self_signed_ca(_w: World) -> tuple[Cert, list[Cert]]:
    me = make_cert("self-signed CA", ca=True, usage=key_usage(sign=True, cert_sign=True))
    return me, [me]


def _untrusted_root(w: World) -> tuple[Cert, list[Cert]]:
    inter = w.other_root.issue("other intermediate", ca=True)
    leaf = inter.issue("forged")
    return leaf, [leaf, inter, w.other_root]


def _look_alike_root(w: World) -> tuple[Cert, list[Cert]]:
    fake = make_cert("fake", ca=True, subject=w.partner_root.cert.subject)
    leaf = fake.issue("forged")
    return leaf, [leaf, fake]


def _leaf_not_for_signing(w: World) -> tuple[Cert, list[Cert]]:
    leaf = w.partner_inter.issue("key exchange only", usage=key_usage(encipher=True))
    return leaf, [leaf, w.partner_inter]


FORGERIES: dict[str, tuple[ForgedChain, str]] = {
    "issuer lacks keyCertSign": (_issuer_lacks_key_cert_sign, "does not allow keyCertSign"),
    "issuer is a TLS certificate": (_issuer_is_a_tls_certificate, "must be asserted"),
    "issuer has no BasicConstraints": (_issuer_has_no_basic_constraints, "no basicConstraints"),
    "expired intermediate": (_expired_intermediate, "not valid at validation time"),
    "intermediate not yet valid": (_not_yet_valid_intermediate, "not valid at validation time"),
    "expired leaf": (_expired_leaf, "not valid at validation time"),
    "pathLen exceeded": (_path_length_exceeded, "path length constraint violated"),
    "self-signed": (_self_signed, "no path leads from it to a bundle certificate"),
    "self-signed CA": (_self_signed_ca, "no path leads from it to a bundle certificate"),
    "untrusted root": (_untrusted_root, "no path leads"),
    "look-alike of the trusted root": (_look_alike_root, "no path leads"),
    "leaf not for signatures": (_leaf_not_for_signing, "does not allow digitalSignature"),
}


@pytest.mark.parametrize("case", list(FORGERIES))
def test_forged_chain_is_refused(srv: AuthServerProcess, world: World, case: str) -> None:
    build, why = FORGERIES[case]
    leaf, chain = build(world)
    reason = refused(srv, token_with_chain(leaf, chain))
    assert why in reason, reason


# -- header tricks: alg, kid, jwk -------------------------------------------------------------------
def test_legit_chain_signed_by_another_key(srv: AuthServerProcess, world: World) -> None:
    tls = world.signing_ca.issue("registry", tls_server=True)
    forged = token_with_chain(tls, [world.issuer, world.signing_ca])
    assert "signature does not verify" in refused(srv, forged)


def test_alg_stays_pinned_to_the_chained_key(srv: AuthServerProcess, world: World) -> None:
    chain = [world.partner_signer.der_b64, world.partner_inter.der_b64]
    for alg in ("RS256", "PS256", "ES384", "ES512", "EdDSA"):
        forged = forge({"alg": alg, "typ": "JWT", "x5c": chain}, claims(), b"sig")
        assert "does not match its key" in refused(srv, forged), alg
    assert "'none' is not accepted" in refused(
        srv, forge({"alg": "none", "typ": "JWT", "x5c": chain}, claims())
    )
    # HS256 keyed with the leaf's public key (the classic confusion).
    header = {"alg": "HS256", "typ": "JWT", "x5c": chain}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims()).encode())}"
    secret = world.partner_signer.cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    assert "'HS256' is not accepted" in refused(srv, f"{signing_input}.{b64url(mac)}")


def test_kid_must_name_the_chained_key(srv: AuthServerProcess, world: World) -> None:
    chain = [world.partner_signer, world.partner_inter]
    stranger = ec.generate_private_key(ec.SECP256R1()).public_key()
    reason = refused(srv, token_with_chain(world.partner_signer, chain, kid=libtrust_kid(stranger)))
    assert "does not name the key" in reason
    # A kid naming another trusted key (this server's own) does not fit the chain either.
    own = world.issuer.key.public_key()
    assert isinstance(own, ec.EllipticCurvePublicKey)
    refused(srv, token_with_chain(world.partner_signer, chain, kid=libtrust_kid(own)))
    # Seed 000's kid over the certificate DER is explained, not silently accepted.
    wrong = certificate_der_kid(world.partner_signer.cert)
    reason = refused(srv, token_with_chain(world.partner_signer, chain, kid=wrong))
    assert "computed over the whole certificate DER" in reason
    header = {"alg": "ES256", "typ": "JWT", "kid": 12345, "x5c": [c.der_b64 for c in chain]}
    refused(srv, forge(header, claims(), b"sig"))


def test_jwk_header_is_never_trusted_by_itself(srv: AuthServerProcess, world: World) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(attacker.public_key())
    own = world.issuer.key.public_key()
    assert isinstance(own, ec.EllipticCurvePublicKey)
    for extra in ({}, {"kid": libtrust_kid(own)}):
        forged = jwt.encode(claims(), attacker, algorithm="ES256", headers={"jwk": jwk, **extra})
        assert "is not a trusted key" in refused(srv, forged)
    # The server's own public key as jwk, signed by the attacker: the signature fails.
    own_jwk = public_jwk(own)
    forged = jwt.encode(claims(), attacker, algorithm="ES256", headers={"jwk": own_jwk})
    assert "signature does not verify" in refused(srv, forged)
    # jwk and x5c naming different keys.
    chain = [world.partner_signer, world.partner_inter]
    forged = token_with_chain(world.partner_signer, chain, jwk=jwk)
    refused(srv, forged)


def test_x5c_garbage_gets_a_clear_401(srv: AuthServerProcess, world: World) -> None:
    cases = {
        "not a list": "abc",
        "empty": [],
        "not base64": ["@@@"],
        "not DER": [base64.b64encode(b"hello").decode()],
        "too long": [world.partner_signer.der_b64] * 9,
    }
    for name, x5c in cases.items():
        forged = forge({"alg": "ES256", "typ": "JWT", "x5c": x5c}, claims(), b"sig")
        assert "x5c header" in refused(srv, forged), name
