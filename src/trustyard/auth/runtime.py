"""The auth objects one server runs with, built from settings by `trustyard.wiring.auth`."""

from __future__ import annotations

from dataclasses import dataclass

from trustyard.auth.access import AccessPolicy
from trustyard.auth.service import TokenService
from trustyard.auth.token_verifier import TokenVerifier
from trustyard.auth.users import Accounts
from trustyard.cache.base import Cache
from trustyard.config import AuthSettings
from trustyard.metadata.auth_base import AuthStore


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
