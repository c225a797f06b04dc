"""Docker registry tokens (JWT): signing keys, the issuer, and the verifier.

Issuer: ES256 (default), RS256 or EdDSA; header `x5c` (leaf first) plus a `kid` in libtrust,
RFC 7638 or JWKS form. Verifier: Distribution's rules — key from `x5c` (a trusted key itself, or
a chain validated to the explicit root bundle: `trustyard.crypto.x5c`), else a `jwk` matching a
trusted key, else `kid` looked up under every form; every key-naming header present must name
that same key; pinned algorithm; `iss`, `aud`, `exp`/`nbf` with 60 s leeway. Every refusal says
why, in words a user can act on, and never contains the token.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from trustyard.auth.keyring import KeyResolver
from trustyard.auth.keyring import TokenRejected as TokenRejected
from trustyard.auth.keyring import TrustedKeys as TrustedKeys
from trustyard.auth.scopes import Scope
from trustyard.crypto.keyid import (
    PublicKey,
    as_public_key,
    jwk_thumbprint,
    libtrust_kid,
    public_jwk,
)
from trustyard.crypto.x5c import ChainRejected, check_leaf_usage

KidFormat = Literal["libtrust", "rfc7638", "jwks"]
Algorithm = Literal["ES256", "RS256", "EdDSA"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

LEEWAY_SECONDS = 60
MAX_TOKEN_BYTES = 8192
# Asymmetric algorithms only: HS* would let anyone holding the public key forge tokens.
DEFAULT_ALGORITHMS = (
    "ES256",
    "ES384",
    "ES512",
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "EdDSA",
)


def algorithms_for(key: PublicKey) -> tuple[str, ...]:
    """The JWS algorithms a key of this type may sign with (pins `alg` to the key)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": ("ES256",), "secp384r1": ("ES384",), "secp521r1": ("ES512",)}.get(
            key.curve.name, ()
        )
    if isinstance(key, rsa.RSAPublicKey):
        return ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    return ("EdDSA",)


# -- signing keys -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SigningKey:
    """A private key and its certificate chain (leaf first)."""

    private_key: PrivateKey
    chain: tuple[x509.Certificate, ...]

    @property
    def public_key(self) -> PublicKey:
        return as_public_key(self.private_key)

    @property
    def algorithm(self) -> str:
        return algorithms_for(self.public_key)[0]

    def kid(self, form: KidFormat) -> str:
        if form == "libtrust":
            return libtrust_kid(self.public_key)
        # "jwks": the kid under which our JWKS document lists the key is the RFC 7638 thumbprint.
        return jwk_thumbprint(self.public_key)

    def x5c(self) -> list[str]:
        return [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode()
            for c in self.chain
        ]


def generate_private_key(algorithm: Algorithm) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    return ed25519.Ed25519PrivateKey.generate()


def self_signed_certificate(
    key: PrivateKey, common_name: str, days: int = 3650
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64] or "trustyard")])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest)


def _private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_signing_key(key_path: Path, cert_path: Path) -> SigningKey:
    try:
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (ValueError, TypeError) as exc:  # not PEM, or encrypted
        raise ValueError(f"{key_path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(
        loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ValueError(f"{key_path}: unsupported key type; use EC P-256, RSA or Ed25519")
    try:
        chain = tuple(x509.load_pem_x509_certificates(cert_path.read_bytes()))
    except ValueError as exc:
        raise ValueError(f"{cert_path}: not a PEM certificate chain ({exc})") from None
    if not chain:
        raise ValueError(f"{cert_path}: no certificate")
    if chain[0].public_key() != loaded.public_key():
        raise ValueError(
            f"{cert_path}: the first certificate is not for the key in {key_path} (leaf first)"
        )
    try:
        check_leaf_usage(chain[0])  # else verifiers (this one too) refuse every token it signs
    except ChainRejected as exc:
        raise ValueError(f"{cert_path}: {exc.reason}") from None
    return SigningKey(loaded, chain)


def load_or_create_signing_key(
    directory: Path, algorithm: Algorithm, common_name: str
) -> SigningKey:
    """The issuer key of this data dir, generated atomically at first start (safe with workers)."""
    final = directory / "token-signing"
    key_path, cert_path = final / "key.pem", final / "cert.pem"
    if not key_path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".token-signing-{secrets.token_hex(8)}"
        staging.mkdir(mode=0o700)
        key = generate_private_key(algorithm)
        fd = os.open(staging / "key.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(_private_pem(key))
        cert = self_signed_certificate(key, common_name)
        (staging / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        try:
            staging.rename(final)  # atomic; loses the race quietly when another worker won
        except OSError:
            for p in staging.iterdir():
                p.unlink()
            staging.rmdir()
    return load_signing_key(key_path, cert_path)


# -- issuing ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int
    issued_at: str


def _rfc3339(ts: float) -> str:
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return repr(ts)


class TokenIssuer:
    """Signs access and refresh tokens with one key."""

    def __init__(
        self,
        key: SigningKey,
        issuer: str,
        *,
        ttl_seconds: int = 300,
        refresh_ttl_seconds: int = 30 * 86400,
        kid_format: KidFormat = "libtrust",
        x5c: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.issuer = issuer
        self.ttl = ttl_seconds
        self.refresh_ttl = refresh_ttl_seconds
        self.kid_format = kid_format
        self.clock = clock
        self._headers: dict[str, Any] = {"typ": "JWT", "kid": key.kid(kid_format)}
        if x5c:
            self._headers["x5c"] = key.x5c()

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self.key.private_key, algorithm=self.key.algorithm, headers=self._headers
        )

    def issue(self, subject: str, audience: str, access: Iterable[Scope]) -> IssuedToken:
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "exp": now + self.ttl,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": [s.access() for s in access],
        }
        return IssuedToken(self._sign(claims), self.ttl, _rfc3339(now))

    def issue_refresh(self, subject: str, audience: str, binding: str) -> str:
        """A long-lived token that only the refresh grant accepts (`binding` ties it to the
        account's current secret, so a password change revokes it)."""
        now = int(self.clock())
        return self._sign(
            {
                "iss": self.issuer,
                "sub": subject,
                "aud": _refresh_audience(audience),
                "exp": now + self.refresh_ttl,
                "iat": now,
                "jti": secrets.token_urlsafe(16),
                "bnd": binding,
            }
        )

    def jwks(self, keys: Iterable[SigningKey] = ()) -> dict[str, Any]:
        """A JWKS document listing each key under every kid form (libtrust and RFC 7638)."""
        out: list[dict[str, Any]] = []
        for key in (self.key, *keys):
            base = public_jwk(key.public_key)
            for kid in dict.fromkeys((key.kid("libtrust"), key.kid("rfc7638"))):
                out.append({**base, "kid": kid, "alg": key.algorithm, "use": "sig"})
        return {"keys": out}


def _refresh_audience(service: str) -> str:
    return f"{service}#refresh"


# -- verifying --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """`expires_at`: the token's exp, or earlier when a certificate of its x5c path expires
    first (minus the leeway); caches keep the result until expires_at + leeway."""

    subject: str
    expires_at: float
    access: dict[tuple[str, str], frozenset[str]]

    def actions(self, rtype: str, name: str) -> frozenset[str]:
        return self.access.get((rtype, name), frozenset())


class TokenVerifier:
    """Verifies bearer tokens for one service; caches good tokens until they expire."""

    def __init__(
        self,
        trusted: TrustedKeys,
        *,
        issuer: str,
        service: str,
        algorithms: Iterable[str] = DEFAULT_ALGORITHMS,
        leeway: int = LEEWAY_SECONDS,
        clock: Callable[[], float] = time.time,
        cache_size: int = 10_000,
    ) -> None:
        self.trusted = trusted
        self.issuer = issuer
        self.service = service
        self.algorithms = tuple(a for a in algorithms if not a.upper().startswith("HS"))
        self.leeway = leeway
        self.clock = clock
        self._cache: dict[str, VerifiedToken] = {}
        self._cache_size = cache_size
        # The root bundle is fixed here: certificates added to `trusted` later anchor nothing.
        self._keys = KeyResolver(trusted)

    # -- verification --------------------------------------------------------------------------
    def verify(self, token: str) -> VerifiedToken:
        cached = self._cache.get(token)
        now = self.clock()
        if cached is not None:
            if cached.expires_at + self.leeway >= now:
                return cached
            del self._cache[token]
        result = self._verify(token, now)
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[token] = result
        return result

    def _verify(self, token: str, now: float) -> VerifiedToken:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected(f"token is {len(token)} bytes; the limit is {MAX_TOKEN_BYTES}")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected(
                "the bearer token is not a JWT (header.payload.signature)"
            ) from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise TokenRejected(
                f"token algorithm {str(alg)[:20]!r} is not accepted; accepted: "
                f"{', '.join(self.algorithms)}"
            )
        found = self._keys.key_for(header, now)
        key, how = found.key, found.how
        if alg not in algorithms_for(key):
            raise TokenRejected(
                f"token algorithm {alg} does not match its key ({how} is "
                f"{'/'.join(algorithms_for(key)) or 'unsupported'})"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.service,
                issuer=self.issuer,
                options={
                    "require": ["exp", "iss", "aud"],
                    # Times are checked below against this verifier's clock, with leeway.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidAudienceError:
            aud = _unverified_claim(token, "aud")
            raise TokenRejected(
                f"token audience {aud!r} is not this registry's service {self.service!r}; "
                "request the token with service=" + self.service
            ) from None
        except jwt.InvalidIssuerError:
            iss = _unverified_claim(token, "iss")
            raise TokenRejected(
                f"token issuer {iss!r} is not the trusted issuer {self.issuer!r} "
                "(auth.token.issuer)"
            ) from None
        except jwt.InvalidSignatureError:
            raise TokenRejected(
                f"token signature does not verify with the key found by {how}: the token was "
                "altered or signed by a different key"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"token has no {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"token is malformed: {type(exc).__name__}") from None
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or (
            nbf is not None and not isinstance(nbf, int | float)
        ):
            raise TokenRejected("token exp/nbf claims must be numbers (seconds since the epoch)")
        if now > exp + self.leeway:
            raise TokenRejected(
                f"token expired {_rfc3339(exp)} (now {_rfc3339(now)}, leeway {self.leeway} s); "
                "fetch a new one from the realm"
            )
        if nbf is not None and nbf > now + self.leeway:
            raise TokenRejected(
                f"token is not valid yet (nbf {_rfc3339(nbf)}, now {_rfc3339(now)}, leeway "
                f"{self.leeway} s); check the issuer's clock"
            )
        expires_at = float(exp)
        if found.not_after is not None:
            # Caches keep a good token until expires_at + leeway: not past its chain's expiry.
            expires_at = min(expires_at, found.not_after - self.leeway)
        return VerifiedToken(
            subject=str(claims.get("sub", "")),
            expires_at=expires_at,
            access=_access(claims.get("access")),
        )


def _unverified_claim(token: str, name: str) -> Any:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get(name)
    except jwt.PyJWTError:
        return None


def _access(value: Any) -> dict[tuple[str, str], frozenset[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    if not isinstance(value, list):
        return {}
    for entry in value:
        if not isinstance(entry, dict):
            continue
        rtype, name, actions = entry.get("type"), entry.get("name"), entry.get("actions")
        if isinstance(rtype, str) and isinstance(name, str) and isinstance(actions, list):
            out.setdefault((rtype, name), set()).update(a for a in actions if isinstance(a, str))
    return {k: frozenset(v) for k, v in out.items()}


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    subject: str
    binding: str


def read_refresh_token(
    token: str,
    key: SigningKey,
    *,
    issuer: str,
    service: str,
    clock: Callable[[], float] = time.time,
) -> RefreshClaims:
    """Check a refresh token we issued (our own key only)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenRejected("refresh token is too long")
    try:
        claims = jwt.decode(
            token,
            key.public_key,
            algorithms=[key.algorithm],
            audience=_refresh_audience(service),
            issuer=issuer,
            options={"require": ["exp", "sub", "bnd"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRejected("refresh token expired; log in again") from None
    except jwt.PyJWTError:
        raise TokenRejected(
            "refresh token is invalid (not issued by this server for this service)"
        ) from None
    return RefreshClaims(str(claims["sub"]), str(claims["bnd"]))


def load_jwks_file(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError(f'{path}: not a JWKS document ({{"keys": [...]}})')
    return data
