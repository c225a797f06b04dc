"""Which key signed a token: the keys and root bundle a verifier trusts, and the rules that
find a token's key from its header (`x5c`, else `jwk`, else `kid`).

`x5c`: a leaf whose key is trusted by itself, or a chain validated to the explicit root bundle
(`trustyard.crypto.x5c`). `jwk`: only names a key that is trusted already. `kid`: looked up under
every form (libtrust, RFC 7638, JWKS kid). When several are present they must name the same key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from trustyard.crypto.keyid import (
    KeyFileError,
    PublicKey,
    as_public_key,
    explain_kid,
    jwk_thumbprint,
    libtrust_kid,
)
from trustyard.crypto.x5c import (
    MAX_CHAIN_CERTIFICATES,
    ChainRejected,
    ChainVerifier,
    check_leaf_usage,
    describe,
    signing_problem,
)


class TokenRejected(Exception):
    """A token we will not accept; `reason` is safe to show the client and to log."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _short(kid: str) -> str:
    return kid if len(kid) <= 64 else kid[:61] + "..."


def _thumbprint(key: PublicKey) -> str | None:
    """The RFC 7638 thumbprint, or None for a key JWK cannot describe (e.g. secp256k1)."""
    try:
        return jwk_thumbprint(key)
    except KeyFileError:
        return None


def _chain_from_x5c(values: Any) -> list[x509.Certificate]:
    if not isinstance(values, list) or not values or len(values) > MAX_CHAIN_CERTIFICATES:
        raise TokenRejected(
            f"the x5c header must be a list of 1 to {MAX_CHAIN_CERTIFICATES} base64 DER certificates"
        )
    try:
        return [x509.load_der_x509_certificate(base64.b64decode(v, validate=True)) for v in values]
    except (ValueError, TypeError, binascii.Error):
        raise TokenRejected(
            "the x5c header holds something that is not a DER certificate"
        ) from None


def _jwk_public_key(value: Any) -> PublicKey:
    try:
        return as_public_key(jwt.PyJWK(value).key)
    except Exception:  # PyJWK raises many types on hostile input; all mean "not a key"
        raise TokenRejected("the jwk header is not a usable public key") from None


@dataclass
class TrustedKeys:
    """What a verifier trusts: keys by kid (all forms) and the root bundle for `x5c` chains.

    Only `add_certificates` (auth.token.rootcertbundle) adds anchors that chains may lead to;
    `add_key` (this server's issuer key, JWKS entries) trusts exactly that key and never the
    CA that certified it.
    """

    certificates: list[x509.Certificate] = field(default_factory=list)  # chain anchors
    by_kid: dict[str, PublicKey] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # kid -> where it came from
    # Certificates of trusted keys, only to explain a kid computed the wrong way.
    known_certificates: list[x509.Certificate] = field(default_factory=list)
    # Bundle certificates that are anchors only, by kid: to say why their kid is refused.
    not_signers: dict[str, str] = field(default_factory=dict)

    def add_key(
        self,
        key: PublicKey,
        source: str,
        kid: str | None = None,
        certificate: x509.Certificate | None = None,
    ) -> None:
        kids = [kid] if kid else [libtrust_kid(key), jwk_thumbprint(key)]
        for k in kids:
            self.by_kid[k] = key
            self.sources[k] = source
        if certificate is not None:
            self.known_certificates.append(certificate)

    def add_certificates(self, certs: Iterable[x509.Certificate], source: str) -> None:
        """Anchors for x5c chains; each one's key also signs tokens directly (Distribution's
        rule) unless its KeyUsage forbids signatures (a CA-only key issues certificates)."""
        for cert in certs:
            self.certificates.append(cert)
            key = as_public_key(cert.public_key())
            problem = signing_problem(cert)
            if problem is not None:
                for kid in (libtrust_kid(key), _thumbprint(key)):
                    if kid:
                        self.not_signers[kid] = f"{describe(cert)}: {problem}"
                continue
            self.add_key(key, f"{source} ({describe(cert)})", None, cert)

    def key_equal_to(self, key: PublicKey) -> PublicKey | None:
        """The trusted key equal to `key`, if it is trusted by itself (found by thumbprint)."""
        try:
            found = self.by_kid.get(jwk_thumbprint(key))
        except KeyFileError:
            return None
        return found if found == key else None

    def add_jwks(self, document: dict[str, Any], source: str) -> None:
        for entry in document.get("keys", []):
            kid = entry.get("kid")
            if not isinstance(kid, str) or not kid:
                continue
            key = as_public_key(jwt.PyJWK(entry).key)
            self.add_key(key, f"{source} (kid {kid})", kid=kid)
            # Also under its computed forms: Distribution 3.x looks bundles up by thumbprint.
            self.add_key(key, f"{source} (kid {kid})")

    def kid_summary(self, limit: int = 6) -> str:
        kids = list(self.by_kid)
        shown = ", ".join(kids[:limit])
        return shown + (f" and {len(kids) - limit} more" if len(kids) > limit else "") or "none"


@dataclass(frozen=True, slots=True)
class FoundKey:
    """The key a token names, how it was found, and (x5c chains) when the first certificate
    of the validated path expires: the key stops being trusted then."""

    key: PublicKey
    how: str
    not_after: float | None = None


class KeyResolver:
    """Finds the trusted key a token names; the root bundle is fixed at construction."""

    def __init__(self, trusted: TrustedKeys) -> None:
        self.trusted = trusted
        self._chains = ChainVerifier(trusted.certificates)

    def _x5c_key(self, chain: list[x509.Certificate], now: float) -> FoundKey:
        leaf = chain[0]
        try:
            key = as_public_key(leaf.public_key())
        except (KeyFileError, ValueError, UnsupportedAlgorithm):
            raise TokenRejected(
                f"x5c certificate {describe(leaf)} holds an unsupported key type; "
                "use EC P-256/384/521, RSA or Ed25519"
            ) from None
        try:
            check_leaf_usage(leaf)
            trusted = self.trusted.key_equal_to(key)
            if trusted is not None:
                # The key itself is trusted (this issuer, the bundle, JWKS): the certificates
                # around it add nothing, exactly as for a kid-only token with that key.
                return FoundKey(trusted, f"x5c certificate {describe(leaf)} (a trusted key)")
            path = self._chains.verify(chain, dt.datetime.fromtimestamp(now, dt.UTC))
        except ChainRejected as exc:
            raise TokenRejected(exc.reason) from None
        not_after = min(c.not_valid_after_utc for c in path).timestamp()
        return FoundKey(key, f"x5c chain of {describe(leaf)}", not_after)

    def _jwk_key(self, value: Any) -> tuple[PublicKey, str]:
        """A `jwk` header only names a key: it must equal a key trusted already."""
        key = _jwk_public_key(value)
        trusted = self.trusted.key_equal_to(key)
        if trusted is None:
            raise TokenRejected(
                f"the token's embedded jwk (libtrust kid {libtrust_kid(key)}) is not a trusted "
                "key; a jwk header only names a key, it never makes one trusted"
            )
        return trusted, f"jwk {libtrust_kid(key)}"

    def _kid_key(self, kid: Any) -> tuple[PublicKey, str]:
        if not isinstance(kid, str) or not kid:
            raise TokenRejected("the token header has no x5c, jwk or kid: cannot find its key")
        found = self.trusted.by_kid.get(kid)
        if found is None and kid in self.trusted.not_signers:
            raise TokenRejected(
                f"kid {_short(kid)} names a root bundle certificate that may only issue "
                f"certificates, not sign tokens ({self.trusted.not_signers[kid]})"
            )
        if found is None:
            hint = explain_kid(kid, self.trusted.known_certificates)
            raise TokenRejected(
                hint
                or f"token signed by untrusted key: kid {_short(kid)} matches no key in the "
                f"root bundle or JWKS; trusted kids are {self.trusted.kid_summary()}"
            )
        return found, f"kid {_short(kid)}"

    def _names_key(self, kid: str, key: PublicKey) -> bool:
        return kid in (libtrust_kid(key), _thumbprint(key)) or self.trusted.by_kid.get(kid) == key

    def key_for(self, header: dict[str, Any], now: float) -> FoundKey:
        """The key named by x5c, else jwk, else kid; any other of them present must agree."""
        if "x5c" in header:
            found = self._x5c_key(_chain_from_x5c(header["x5c"]), now)
        elif "jwk" in header:
            found = FoundKey(*self._jwk_key(header["jwk"]))
        else:
            return FoundKey(*self._kid_key(header.get("kid")))
        key, how = found.key, found.how
        if "x5c" in header and "jwk" in header and _jwk_public_key(header["jwk"]) != key:
            raise TokenRejected(f"the token's jwk header names another key than its {how}")
        kid = header.get("kid")
        if kid is not None and not (isinstance(kid, str) and self._names_key(kid, key)):
            chain = _chain_from_x5c(header["x5c"]) if "x5c" in header else []
            hint = explain_kid(kid, chain[:1]) if isinstance(kid, str) else None
            shown = _short(kid) if isinstance(kid, str) else repr(kid)[:20]
            raise TokenRejected(
                hint
                or f"the token's kid {shown} does not name the key of its {how}; the kid must "
                f"be that key's libtrust KeyID ({libtrust_kid(key)}), its RFC 7638 thumbprint "
                "or its JWKS kid"
            )
        return found
