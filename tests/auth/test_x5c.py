"""The x5c chain verifier on its own: every path rule, with a real PKI."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.auth.pki import HOUR, Cert, key_usage, make_cert, now
from trustyard.crypto.x5c import ChainRejected, ChainVerifier, check_leaf_usage


@pytest.fixture(scope="module")
def root() -> Cert:
    return make_cert("operator root", ca=True)


def verify(roots: list[Cert], *chain: Cert, at: dt.datetime | None = None) -> str | None:
    """None when the chain is accepted, else the reason."""
    try:
        ChainVerifier([r.cert for r in roots]).verify([c.cert for c in chain], at or now())
    except ChainRejected as exc:
        assert "Traceback" not in exc.reason and len(exc.reason) < 600
        return exc.reason
    return None


def test_leaf_directly_under_the_root(root: Cert) -> None:
    assert verify([root], root.issue("signer")) is None


def test_leaf_under_an_intermediate(root: Cert) -> None:
    inter = root.issue("intermediate", ca=True, path_length=0)
    assert verify([root], inter.issue("signer"), inter) is None
    # The root may come along in x5c, and order/junk among the intermediates does not matter.
    junk = make_cert("junk", ca=True)
    assert verify([root], inter.issue("signer"), junk, root, inter) is None


def test_leaf_without_any_extension_is_a_plain_signer(root: Cert) -> None:
    assert verify([root], root.issue("bare", ca=None, usage=None)) is None


def test_issuer_with_ca_false_cannot_issue(root: Cert) -> None:
    tls = root.issue("www", tls_server=True)  # CA:FALSE, a TLS server certificate
    reason = verify([root], tls.issue("forged"), tls)
    assert reason is not None and "basicConstraints.cA must be asserted" in reason
    assert "does not chain to any certificate in the trusted root bundle" in reason


def test_issuer_without_basic_constraints_cannot_issue(root: Cert) -> None:
    nobc = root.issue("no-bc", ca=None, usage=key_usage(cert_sign=True))
    reason = verify([root], nobc.issue("forged"), nobc)
    assert reason is not None and "no basicConstraints" in reason


def test_issuer_whose_key_usage_lacks_key_cert_sign(root: Cert) -> None:
    signer_only = root.issue("sign-only CA", ca=True, usage=key_usage(sign=True))
    reason = verify([root], signer_only.issue("forged"), signer_only)
    assert reason is not None and "does not allow keyCertSign" in reason


def test_issuer_without_key_usage_may_issue(root: Cert) -> None:
    """RFC 5280 §4.2.1.3: no KeyUsage means no restriction (openssl's default v3_ca)."""
    plain_ca = root.issue("plain CA", ca=True, usage=None)
    assert verify([root], plain_ca.issue("signer"), plain_ca) is None


def test_expired_and_not_yet_valid_intermediates(root: Cert) -> None:
    old = root.issue("old CA", ca=True, not_before=now() - 48 * HOUR, not_after=now() - HOUR)
    reason = verify([root], old.issue("forged"), old)
    assert reason is not None and "not valid at validation time" in reason
    future = root.issue("future CA", ca=True, not_before=now() + HOUR)
    assert verify([root], future.issue("forged"), future) is not None


def test_expired_leaf_and_expired_root(root: Cert) -> None:
    leaf = root.issue("late", not_before=now() - 48 * HOUR, not_after=now() - HOUR)
    assert "not valid" in (verify([root], leaf) or "")
    old_root = make_cert("old root", ca=True, not_before=now() - 48 * HOUR, not_after=now() - HOUR)
    leaf = old_root.issue("signer", not_before=now() - 48 * HOUR)
    assert verify([old_root], leaf) is not None
    # The same chain verified at a time when everything was valid passes: the clock is used.
    assert verify([old_root], leaf, at=now() - 24 * HOUR) is None


def test_path_length_constraint(root: Cert) -> None:
    first = root.issue("level 1", ca=True, path_length=0)
    second = first.issue("level 2", ca=True)
    reason = verify([root], second.issue("forged"), second, first)
    assert reason is not None and "path length constraint violated" in reason
    roomy = root.issue("level 1b", ca=True, path_length=1)
    below = roomy.issue("level 2b", ca=True, path_length=0)
    assert verify([root], below.issue("signer"), below, roomy) is None


def test_path_length_on_the_root_itself() -> None:
    strict_root = make_cert("strict root", ca=True, path_length=0)
    inter = strict_root.issue("intermediate", ca=True)
    assert verify([strict_root], inter.issue("forged"), inter) is not None
    assert verify([strict_root], strict_root.issue("signer")) is None


def test_self_signed_leaf_is_not_trusted(root: Cert) -> None:
    reason = verify([root], make_cert("me", ca=False))
    assert reason is not None and "no path leads from it to a bundle certificate" in reason
    my_ca = make_cert("my CA", ca=True, usage=key_usage(sign=True, cert_sign=True))
    reason = verify([root], my_ca)
    assert reason is not None and "no path leads" in reason


def test_chain_to_an_untrusted_root(root: Cert) -> None:
    other = make_cert("other root", ca=True)
    inter = other.issue("other intermediate", ca=True)
    assert verify([root], inter.issue("signer"), inter, other) is not None
    # A look-alike of the trusted root (same name, other key) leads nowhere either.
    fake = make_cert("fake", ca=True, subject=root.cert.subject)
    reason = verify([root], fake.issue("signer"), fake)
    assert reason is not None and "no path leads" in reason


def test_leaf_must_be_allowed_to_sign(root: Cert) -> None:
    encipher_only = root.issue("kex", usage=key_usage(encipher=True))
    reason = verify([root], encipher_only)
    assert reason is not None and "does not allow digitalSignature" in reason
    assert verify([root], root.issue("tls", tls_server=True)) is None  # digitalSignature set


def test_check_leaf_usage_for_trusted_keys(root: Cert) -> None:
    check_leaf_usage(root.issue("ok").cert)
    check_leaf_usage(root.issue("bare", usage=None).cert)
    with pytest.raises(ChainRejected, match="digitalSignature"):
        check_leaf_usage(root.issue("kex", usage=key_usage(encipher=True)).cert)


def test_weak_rsa_leaf(root: Cert) -> None:
    weak = root.issue("weak", key=rsa.generate_private_key(public_exponent=65537, key_size=1024))
    assert "1024-bit RSA key" in (verify([root], weak) or "")


def test_ed25519_issuers_are_outside_the_profile() -> None:
    """cryptography's path validation allows only RSA and P-256/384/521 issuers; an Ed25519
    bundle certificate can still be trusted as a key (TokenVerifier), never as a CA."""
    ed_root = make_cert("ed root", ca=True, key=ed25519.Ed25519PrivateKey.generate())
    assert verify([ed_root], ed_root.issue("signer")) is not None


def test_no_bundle_means_no_chain_is_trusted(root: Cert) -> None:
    reason = verify([], root.issue("signer"))
    assert reason is not None and "no root bundle (auth.token.rootcertbundle)" in reason


def test_unknown_critical_extension_is_refused(root: Cert) -> None:
    from cryptography import x509

    leaf = root.issue("odd")
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.cert.subject)
        .issuer_name(root.cert.subject)
        .public_key(leaf.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - HOUR)
        .not_valid_after(now() + HOUR)
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
            critical=True,
        )
    )
    from cryptography.hazmat.primitives import hashes

    odd = Cert(builder.sign(root.key, hashes.SHA256()), leaf.key)  # type: ignore[arg-type]
    assert "critical extensions" in (verify([root], odd) or "")


def test_weak_rsa_issuer() -> None:
    weak_root = make_cert(
        "weak root", ca=True, key=rsa.generate_private_key(public_exponent=65537, key_size=1024)
    )
    assert "RSA key is too weak" in (verify([weak_root], weak_root.issue("signer")) or "")
