"""Certificate chains from a token's `x5c` header, validated to the explicit root bundle only.

Path building and RFC 5280 checks are cryptography's (`cryptography.x509.verification`, Rust):
signatures, issuer/subject chaining, validity of every certificate at the verifier's clock,
BasicConstraints present with CA:TRUE on every issuing certificate (the anchor included),
pathLenConstraint, the chain depth, name constraints, unknown critical extensions, and the
WebPKI algorithm set (RSA >= 2048, P-256/384/521; no SHA-1, no Ed25519 issuers). On top of its
permissive base policy we add what a token signer needs: an issuing certificate whose KeyUsage is
present must allow keyCertSign, and a leaf whose KeyUsage is present must allow digitalSignature
(RFC 5280 §4.2.1.3: an absent KeyUsage does not restrict). We do not use the WebPKI defaults
themselves: they demand a subjectAltName and clientAuth/serverAuth EKUs that token signers lack.

Only certificates the operator named (`auth.token.rootcertbundle`) are anchors. The issuing CA in
this server's own `signing_cert` chain is not: it may have issued TLS certificates and other
leaves that must not mint tokens here.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    Policy,
    PolicyBuilder,
    Store,
    VerificationError,
)

MAX_CHAIN_CERTIFICATES = 8
MIN_RSA_BITS = 2048


class ChainRejected(Exception):
    """An `x5c` chain we will not trust; `reason` is safe to show the client."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def describe(cert: x509.Certificate, which: str = "subject") -> str:
    """The subject (or issuer), bounded in length: it comes from the client, and cryptography
    parses names lazily, so a malformed one raises here rather than at load time."""
    try:
        name = cert.subject if which == "subject" else cert.issuer
        text = name.rfc4514_string() or f"(empty {which})"
    except ValueError:
        text = f"(unparseable {which})"
    return text if len(text) <= 100 else text[:97] + "..."


def _issuer_is_ca(_policy: Policy, _cert: x509.Certificate, bc: x509.BasicConstraints) -> None:
    if not bc.ca:
        raise ValueError("BasicConstraints CA:FALSE, so it may not issue certificates")


def _issuer_signs_certificates(
    _policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None
) -> None:
    if ku is not None and not ku.key_cert_sign:
        raise ValueError(
            "its KeyUsage does not allow keyCertSign, so it may not issue certificates"
        )


LEAF_USAGE_PROBLEM = "its KeyUsage does not allow digitalSignature, so it may not sign tokens"


def _leaf_signs(_policy: Policy, _cert: x509.Certificate, ku: x509.KeyUsage | None) -> None:
    if ku is not None and not ku.digital_signature:
        raise ValueError(LEAF_USAGE_PROBLEM)


_AGNOSTIC = Criticality.AGNOSTIC
CA_POLICY = (
    ExtensionPolicy.permit_all()
    .require_present(x509.BasicConstraints, _AGNOSTIC, _issuer_is_ca)
    .may_be_present(x509.KeyUsage, _AGNOSTIC, _issuer_signs_certificates)
)
LEAF_POLICY = ExtensionPolicy.permit_all().may_be_present(x509.KeyUsage, _AGNOSTIC, _leaf_signs)


def signing_problem(cert: x509.Certificate) -> str | None:
    """Why this certificate's key may not sign tokens (its KeyUsage), or None when it may."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        return "its extensions cannot be parsed"
    return None if ku.digital_signature else LEAF_USAGE_PROBLEM


def check_leaf_usage(leaf: x509.Certificate) -> None:
    """The leaf rule of LEAF_POLICY, for a leaf whose key is trusted by itself (no path to
    validate, so the library's policy never runs on it)."""
    problem = signing_problem(leaf)
    if problem is not None:
        raise ChainRejected(f"x5c certificate {describe(leaf)}: {problem}")


_PROCESSING = re.compile(r"\s*\(encountered processing <Certificate\(subject=<Name\((.*?)\)>.*$")


def _explain(error: Exception, issuer: str) -> str:
    text = str(error).removeprefix("validation failed: ").removeprefix("candidates exhausted: ")
    text = text.replace("Python extension validator failed: ValueError: ", "")
    match = _PROCESSING.search(text)
    if match:
        text = text[: match.start()] + f" (certificate {match.group(1)[:100]})"
    if any(m in text for m in ("no interior errors", "exceeds max depth", "signature does not")):
        # Each means no candidate path reached an anchor (a self-issued look-alike loops until
        # the depth limit in cryptography 48; from 50 it reports the anchor of the same name
        # whose signature does not match): name the issuer the chain would need.
        return f"no path leads from it to a bundle certificate (issuer {issuer[:100]})"
    return text[:300]


class ChainVerifier:
    """Validates x5c chains (leaf first) against a fixed set of root certificates."""

    def __init__(self, roots: Sequence[x509.Certificate]) -> None:
        self.root_count = len(roots)
        self._store = Store(list(roots)) if roots else None

    def verify(self, chain: Sequence[x509.Certificate], at: dt.datetime) -> list[x509.Certificate]:
        """The validated path (leaf first, anchor last) at `at`; else ChainRejected saying why."""
        leaf = chain[0]
        key = leaf.public_key()
        # Hand-written: the library bounds RSA sizes of the keys that sign certificates only;
        # the leaf's key signs the token, outside X.509, so its size is ours to check.
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
            raise ChainRejected(
                f"x5c certificate {describe(leaf)} has a {key.key_size}-bit RSA key; at least "
                f"{MIN_RSA_BITS} bits are required"
            )
        if self._store is None:
            raise ChainRejected(
                f"x5c certificate {describe(leaf)} is not a trusted key, and no root bundle "
                "(auth.token.rootcertbundle) is configured that a chain could lead to"
            )
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(at)
            .max_chain_depth(MAX_CHAIN_CERTIFICATES - 1)
            .extension_policies(ca_policy=CA_POLICY, ee_policy=LEAF_POLICY)
            .build_client_verifier()
        )
        try:
            path = verifier.verify(leaf, list(chain[1:])).chain
        except (VerificationError, ValueError, UnsupportedAlgorithm) as exc:
            raise ChainRejected(
                f"x5c certificate {describe(leaf)} does not chain to any certificate in the "
                f"trusted root bundle (auth.token.rootcertbundle, {self.root_count} "
                f"certificates): {_explain(exc, describe(leaf, 'issuer'))}"
            ) from None
        return path
