"""Settings -> the auth objects one server needs (accounts, access rules, token issuer and
verifier). The objects and their logic live in `trustyard.auth`; this only builds them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import structlog

from trustyard.auth.access import AccessPolicy, gun_prefixes
from trustyard.auth.keyring import TrustedKeys
from trustyard.auth.service import TokenService
from trustyard.auth.token_issuer import TokenIssuer
from trustyard.auth.token_keys import (
    SigningKey,
    load_jwks_file,
    load_or_create_signing_key,
    load_signing_key,
)
from trustyard.auth.token_verifier import DEFAULT_ALGORITHMS, TokenVerifier
from trustyard.auth.users import Accounts, HtpasswdFile, LoginLimiter
from trustyard.cache.base import Cache
from trustyard.cache.memory import MemoryCache
from trustyard.config import AuthSettings, Settings
from trustyard.crypto.keyid import load_certificates
from trustyard.metadata.auth_base import AuthStore

log = structlog.get_logger("trustyard.auth")


@dataclass
class AuthRuntime:
    settings: AuthSettings
    store: AuthStore
    accounts: Accounts
    policy: AccessPolicy
    verifier: TokenVerifier | None
    tokens: TokenService | None
    cache: Cache | None = None

    async def close(self) -> None:
        """Close what this runtime was given (a server's `wiring.Services` closes the shared
        database and cache itself instead)."""
        await self.store.close()
        if self.cache is not None:
            await self.cache.close()


def signing_key(settings: AuthSettings, data_dir: Path) -> SigningKey:
    tok = settings.token
    if tok.signing_key is not None:
        if tok.signing_cert is None:
            raise ValueError("auth.token.signing_key needs auth.token.signing_cert (leaf first)")
        return load_signing_key(tok.signing_key, tok.signing_cert)
    return load_or_create_signing_key(data_dir / "auth", tok.algorithm, tok.issuer)


def trusted_keys(settings: AuthSettings, own: SigningKey | None) -> TrustedKeys:
    tok = settings.token
    trusted = TrustedKeys()
    if tok.rootcertbundle is not None:
        try:
            bundle = load_certificates(tok.rootcertbundle.read_bytes())
        except ValueError as exc:
            raise ValueError(
                f"auth.token.rootcertbundle {tok.rootcertbundle} is not a PEM or DER "
                f"certificate bundle ({exc})"
            ) from None
        trusted.add_certificates(bundle, str(tok.rootcertbundle))
    if tok.jwks is not None:
        trusted.add_jwks(load_jwks_file(tok.jwks), str(tok.jwks))
    if own is not None:
        # This issuer's key only: never the CA of a signing_cert chain, which may have issued
        # other certificates (TLS servers, other services) that must not mint tokens here.
        trusted.add_key(own.public_key, "this server's token issuer", certificate=own.chain[0])
    return trusted


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:  # a name, not an address
        return False


def gun_prefixes_of(settings: Settings) -> tuple[str, ...]:
    """`trust.gun_prefixes`, else this server's own `host:port/` (none for a wildcard address:
    clients cannot write that one, so set `trust.gun_prefixes` to the name they use)."""
    if settings.trust.gun_prefixes is not None:
        return gun_prefixes(settings.trust.gun_prefixes)
    host = settings.host
    if not host or ":" in host or _unspecified(host):
        log.info("gun_prefixes_unset", hint="set trust.gun_prefixes to HOST:PORT/ of the registry")
        return ()
    return gun_prefixes([f"{settings.host}:{settings.port}/"])


def login_limiter(settings: AuthSettings, cache: Cache | None) -> LoginLimiter:
    """Failed-login counters: in the shared cache when there is one (Redis), else per process."""
    limits = (
        settings.max_failed_logins,
        settings.max_failed_logins_per_client,
        settings.failed_login_window_seconds,
    )
    return LoginLimiter(*limits, cache=cache if cache is not None else MemoryCache())


def token_objects(
    settings: AuthSettings, data_dir: Path, accounts: Accounts, policy: AccessPolicy
) -> tuple[TokenVerifier, TokenService | None]:
    """Token mode: the verifier, and the issuer's service when this server issues tokens."""
    tok = settings.token
    own = signing_key(settings, data_dir) if tok.issue else None
    tokens = None
    if own is not None:
        issuer = TokenIssuer(
            own,
            tok.issuer,
            ttl_seconds=tok.expiration_seconds,
            refresh_ttl_seconds=tok.refresh_expiration_seconds,
            kid_format=tok.kid_format,
            x5c=tok.x5c,
        )
        tokens = TokenService(accounts, policy, issuer, tok.service)
    trusted = trusted_keys(settings, own)
    if not trusted.by_kid and not trusted.certificates:
        raise ValueError(
            "auth.mode is token but no key is trusted: set auth.token.rootcertbundle or "
            "auth.token.jwks, or keep auth.token.issue = true"
        )
    verifier = TokenVerifier(
        trusted,
        issuer=tok.issuer,
        service=tok.service,
        algorithms=tok.signingalgorithms or DEFAULT_ALGORITHMS,
    )
    log.info(
        "token_auth",
        service=tok.service,
        issuer=tok.issuer,
        issuing=own is not None,
        kid=own.kid(tok.kid_format) if own else None,
        trusted_kids=len(trusted.by_kid),
    )
    return verifier, tokens


def build_auth(
    settings: AuthSettings,
    data_dir: Path,
    store: AuthStore,
    cache: Cache | None = None,
    gun_prefixes: tuple[str, ...] = (),
) -> AuthRuntime:
    """`cache`: the shared cache (Redis) for failed-login counters, None for per-process ones.
    `gun_prefixes`: see `gun_prefixes_of` and `AccessPolicy`."""
    # In token mode a file's names become `${user}` in ACL rules: the account name rules apply.
    strict = settings.mode == "token"
    htpasswd = HtpasswdFile(settings.htpasswd, strict_names=strict) if settings.htpasswd else None
    accounts = Accounts(
        store,
        bcrypt_cost=settings.bcrypt_cost,
        limiter=login_limiter(settings, cache),
        htpasswd=htpasswd,
    )
    policy = AccessPolicy(store.list_rules, gun_prefixes=gun_prefixes)
    verifier = tokens = None
    if settings.mode == "token":
        verifier, tokens = token_objects(settings, data_dir, accounts, policy)
    elif settings.mode == "htpasswd" and settings.htpasswd is None:
        raise ValueError("auth.mode is htpasswd but auth.htpasswd (the file) is not set")
    return AuthRuntime(settings, store, accounts, policy, verifier, tokens, cache)
