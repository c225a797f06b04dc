"""Finding a token's key (x5c, jwk, kid) and what the server's own settings make trusted."""

from __future__ import annotations

import base64
import datetime as dt
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.auth.helpers import forge
from tests.auth.pki import HOUR, Cert, claims, key_usage, make_cert, now, token_with_chain
from trustyard.auth.keyring import TokenRejected, TrustedKeys
from trustyard.auth.token_keys import SigningKey, load_signing_key
from trustyard.auth.token_verifier import TokenVerifier
from trustyard.config import AuthSettings, TokenAuthSettings
from trustyard.crypto.keyid import certificate_der_kid, jwk_thumbprint, libtrust_kid, public_jwk
from trustyard.wiring.auth import trusted_keys

ROOT = make_cert("root", ca=True)
INTER = ROOT.issue("intermediate", ca=True, path_length=0)
SIGNER = INTER.issue("signer")
CHAIN = [SIGNER, INTER]


def verifier(*bundle: Cert, clock: float | None = None) -> TokenVerifier:
    trusted = TrustedKeys()
    trusted.add_certificates([c.cert for c in bundle], "bundle")
    return TokenVerifier(
        trusted, issuer="trustyard", service="trustyard", clock=lambda: clock or time.time()
    )


def reason(v: TokenVerifier, token: str) -> str:
    with pytest.raises(TokenRejected) as info:
        v.verify(token)
    return info.value.reason


def ec_key(c: Cert) -> ec.EllipticCurvePublicKey:
    key = c.key.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def test_chain_accepted_and_kid_forms_that_name_its_leaf() -> None:
    v = verifier(ROOT)
    assert v.verify(token_with_chain(SIGNER, CHAIN)).subject == "mallory"
    for kid in (libtrust_kid(ec_key(SIGNER)), jwk_thumbprint(ec_key(SIGNER))):
        assert v.verify(token_with_chain(SIGNER, CHAIN, kid=kid)).subject == "mallory"


def test_kid_naming_another_key_is_refused() -> None:
    v = verifier(ROOT)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    got = reason(v, token_with_chain(SIGNER, CHAIN, kid=libtrust_kid(other)))
    assert "does not name the key of its x5c chain of CN=signer" in got
    assert libtrust_kid(ec_key(SIGNER)) in got
    wrong = certificate_der_kid(SIGNER.cert)
    assert "whole certificate DER" in reason(v, token_with_chain(SIGNER, CHAIN, kid=wrong))


def test_jwk_next_to_x5c_must_be_the_same_key() -> None:
    v = verifier(ROOT)
    same = public_jwk(ec_key(SIGNER))
    assert v.verify(token_with_chain(SIGNER, CHAIN, jwk=same)).subject == "mallory"
    other = public_jwk(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert "names another key" in reason(v, token_with_chain(SIGNER, CHAIN, jwk=other))
    assert "not a usable public key" in reason(
        v, token_with_chain(SIGNER, CHAIN, jwk={"kty": "EC"})
    )


def test_jwk_alone_only_names_a_trusted_key() -> None:
    issuer = make_cert("issuer", ca=True, usage=key_usage(sign=True, cert_sign=True))
    v = verifier(issuer)
    headers = {"jwk": public_jwk(ec_key(issuer))}
    token = jwt.encode(claims(), issuer.key, algorithm="ES256", headers=headers)
    assert v.verify(token).subject == "mallory"
    attacker = ec.generate_private_key(ec.SECP256R1())
    headers = {"jwk": public_jwk(attacker.public_key())}
    token = jwt.encode(claims(), attacker, algorithm="ES256", headers=headers)
    assert "never makes one trusted" in reason(v, token)


def test_ca_only_bundle_certificate_anchors_but_does_not_sign() -> None:
    v = verifier(ROOT)
    kid = {"kid": libtrust_kid(ec_key(ROOT))}
    got = reason(v, jwt.encode(claims(), ROOT.key, algorithm="ES256", headers=kid))
    assert "may only issue certificates, not sign tokens" in got and "CN=root" in got
    assert "digitalSignature" in reason(v, token_with_chain(ROOT, [ROOT]))
    assert v.verify(token_with_chain(SIGNER, CHAIN)).subject == "mallory"  # still an anchor


def test_chain_validity_follows_the_verifier_clock() -> None:
    old_root = make_cert("old root", ca=True, not_before=now() - 72 * HOUR)
    late = old_root.issue("late signer", not_before=now() - 48 * HOUR, not_after=now() - HOUR)
    token = jwt.encode(
        {**claims(), "nbf": int((now() - 2 * HOUR).timestamp()) - 1, "exp": int(now().timestamp())},
        late.key,
        algorithm="ES256",
        headers={"x5c": [late.der_b64]},
    )
    then = (now() - 2 * HOUR).timestamp()
    assert verifier(old_root, clock=then).verify(token).subject == "mallory"
    assert "not valid at validation time" in reason(verifier(old_root), token)


def test_own_key_is_trusted_but_not_the_ca_of_its_chain(tmp_path: Path) -> None:
    ca = make_cert("issuing CA", ca=True)
    leaf = ca.issue("issuer")
    own = SigningKey(leaf.key, (leaf.cert, ca.cert))  # type: ignore[arg-type]
    settings = AuthSettings(mode="token", token=TokenAuthSettings())
    trusted = trusted_keys(settings, own)
    assert trusted.certificates == []  # no anchors at all
    assert trusted.key_equal_to(ec_key(leaf)) == ec_key(leaf)
    assert trusted.key_equal_to(ec_key(ca)) is None
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(ROOT.pem)
    settings = AuthSettings(mode="token", token=TokenAuthSettings(rootcertbundle=bundle))
    trusted = trusted_keys(settings, own)
    assert trusted.certificates == [ROOT.cert]


def test_signing_cert_must_allow_signatures(tmp_path: Path) -> None:
    ca = make_cert("issuing CA", ca=True)
    leaf = ca.issue("encipher only", usage=key_usage(encipher=True))
    (tmp_path / "key.pem").write_bytes(leaf.key_pem())
    (tmp_path / "chain.pem").write_bytes(leaf.pem + ca.pem)
    with pytest.raises(ValueError, match="does not allow digitalSignature"):
        load_signing_key(tmp_path / "key.pem", tmp_path / "chain.pem")
    good = ca.issue("signer")
    (tmp_path / "key.pem").write_bytes(good.key_pem())
    (tmp_path / "chain.pem").write_bytes(good.pem + ca.pem)
    assert len(load_signing_key(tmp_path / "key.pem", tmp_path / "chain.pem").chain) == 2


_DER = [c.der_b64 for c in CHAIN]


def _mutations() -> st.SearchStrategy[Any]:
    mutated_der = st.tuples(st.integers(0, 400), st.integers(1, 255)).map(
        lambda p: base64.b64encode(
            bytes(b ^ (p[1] if i == p[0] else 0) for i, b in enumerate(base64.b64decode(_DER[0])))
        ).decode()
    )
    entry = st.one_of(
        st.sampled_from(_DER),
        mutated_der,
        st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()),
        st.text(max_size=20),
        st.integers(),
        st.none(),
    )
    return st.one_of(st.lists(entry, max_size=10), entry, st.dictionaries(st.text(), entry))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    x5c=_mutations(),
    kid=st.one_of(st.none(), st.text(max_size=70)),
    jwk=st.one_of(st.none(), st.dictionaries(st.sampled_from(["kty", "crv", "x", "y"]), st.text())),
)
def test_hostile_headers_are_refused_cleanly(x5c: Any, kid: str | None, jwk: Any) -> None:
    """Whatever the header holds, the verifier answers TokenRejected, never another error."""
    header: dict[str, Any] = {"alg": "ES256", "typ": "JWT", "x5c": x5c}
    if kid is not None:
        header["kid"] = kid
    if jwk is not None:
        header["jwk"] = jwk
    with pytest.raises(TokenRejected):
        verifier(ROOT).verify(forge(header, claims(), b"not a signature"))


def test_ed25519_bundle_certificate_is_trusted_as_a_key() -> None:
    """Path validation has no Ed25519 issuers, but a bundle certificate's own key needs none."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    ed = make_cert(
        "ed issuer",
        ca=True,
        usage=key_usage(sign=True, cert_sign=True),
        key=ed25519.Ed25519PrivateKey.generate(),
    )
    token = jwt.encode(claims(), ed.key, algorithm="EdDSA", headers={"x5c": [ed.der_b64]})
    assert verifier(ed).verify(token).subject == "mallory"
    forged = forge({"alg": "ES256", "typ": "JWT", "x5c": [ed.der_b64]}, claims(), b"sig")
    assert "does not match its key" in reason(verifier(ed), forged)


def test_cached_token_expires_with_its_chain() -> None:
    """A token outliving its certificate stays good only while the chain is valid, cache or not."""
    soon = INTER.issue("short-lived signer", not_after=now() + dt.timedelta(minutes=10))
    clock = [time.time()]
    trusted = TrustedKeys()
    trusted.add_certificates([ROOT.cert], "bundle")
    v = TokenVerifier(trusted, issuer="trustyard", service="trustyard", clock=lambda: clock[0])
    token = jwt.encode(
        {**claims(), "exp": int(clock[0]) + 3600},
        soon.key,
        algorithm="ES256",
        headers={"x5c": [soon.der_b64, INTER.der_b64]},
    )
    first = v.verify(token)
    assert first.expires_at == soon.cert.not_valid_after_utc.timestamp() - v.leeway
    assert v.verify(token) is first  # cached
    clock[0] = soon.cert.not_valid_after_utc.timestamp() + 1
    assert "not valid at validation time" in reason(v, token)
    # Tokens found by a trusted key keep their own exp.
    issuer = make_cert("issuer", ca=True, usage=key_usage(sign=True, cert_sign=True))
    trusted = TrustedKeys()
    trusted.add_certificates([issuer.cert], "bundle")
    v = TokenVerifier(trusted, issuer="trustyard", service="trustyard", clock=lambda: clock[0])
    kid = libtrust_kid(ec_key(issuer))
    token = jwt.encode(
        {**claims(), "exp": int(clock[0]) + 3600},
        issuer.key,
        algorithm="ES256",
        headers={"kid": kid},
    )
    assert v.verify(token).expires_at == int(clock[0]) + 3600
