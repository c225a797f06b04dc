"""Verifying Docker registry tokens (JWT) by Distribution's rules.

Key from `x5c` (a trusted key itself, or a chain validated to the explicit root bundle:
`trustyard.crypto.x5c`), else a `jwk` matching a trusted key, else `kid` looked up under every
form; every key-naming header present must name that same key (`trustyard.auth.keyring`); pinned
algorithm; `iss`, `aud`, `exp`/`nbf` with 60 s leeway. Every refusal says why, in words a user can
act on, and never contains the token.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from trustyard.auth.keyring import FoundKey, KeyResolver, TokenRejected, TrustedKeys
from trustyard.auth.token_keys import algorithms_for

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


def rfc3339(ts: float) -> str:
    """A timestamp for messages and `issued_at`; the raw number when it is out of range."""
    try:
        return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return repr(ts)


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
        """Header and key, then signature and claims, then times, in that order."""
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected(f"token is {len(token)} bytes; the limit is {MAX_TOKEN_BYTES}")
        alg, found = self._key_for(token, now)
        claims = self._decode(token, alg, found)
        exp = self._check_times(claims, now)
        expires_at = float(exp)
        if found.not_after is not None:
            # Caches keep a good token until expires_at + leeway: not past its chain's expiry.
            expires_at = min(expires_at, found.not_after - self.leeway)
        return VerifiedToken(
            subject=str(claims.get("sub", "")),
            expires_at=expires_at,
            access=_access(claims.get("access")),
        )

    def _key_for(self, token: str, now: float) -> tuple[str, FoundKey]:
        """The header's algorithm, accepted here and pinned to the trusted key it names."""
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
        if alg not in algorithms_for(found.key):
            raise TokenRejected(
                f"token algorithm {alg} does not match its key ({found.how} is "
                f"{'/'.join(algorithms_for(found.key)) or 'unsupported'})"
            )
        return str(alg), found

    def _decode(self, token: str, alg: str, found: FoundKey) -> dict[str, Any]:
        """Signature, `iss` and `aud`; each PyJWT refusal becomes a message a user can act on."""
        try:
            return jwt.decode(
                token,
                found.key,
                algorithms=[alg],
                audience=self.service,
                issuer=self.issuer,
                options={
                    "require": ["exp", "iss", "aud"],
                    # Times are checked by _check_times against this verifier's clock, with leeway.
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
                f"token signature does not verify with the key found by {found.how}: the token "
                "was altered or signed by a different key"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected(f"token has no {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"token is malformed: {type(exc).__name__}") from None

    def _check_times(self, claims: dict[str, Any], now: float) -> int | float:
        """`exp` and `nbf` against this verifier's clock with leeway; returns `exp`."""
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or (
            nbf is not None and not isinstance(nbf, int | float)
        ):
            raise TokenRejected("token exp/nbf claims must be numbers (seconds since the epoch)")
        if now > exp + self.leeway:
            raise TokenRejected(
                f"token expired {rfc3339(exp)} (now {rfc3339(now)}, leeway {self.leeway} s); "
                "fetch a new one from the realm"
            )
        if nbf is not None and nbf > now + self.leeway:
            raise TokenRejected(
                f"token is not valid yet (nbf {rfc3339(nbf)}, now {rfc3339(now)}, leeway "
                f"{self.leeway} s); check the issuer's clock"
            )
        return exp


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
