"""The token server's use case: authenticate, grant the allowed part of each scope, sign."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustyard.auth.access import AccessPolicy
from trustyard.auth.keyring import TokenRejected
from trustyard.auth.scopes import Scope, format_scope_param
from trustyard.auth.token_issuer import TokenIssuer, read_refresh_token
from trustyard.auth.token_keys import SigningKey
from trustyard.auth.users import ANONYMOUS, Accounts, AuthFailed, Principal, binding_of


class UnknownService(ValueError):
    pass


@dataclass
class TokenService:
    accounts: Accounts
    policy: AccessPolicy
    issuer: TokenIssuer
    service: str
    extra_keys: tuple[SigningKey, ...] = ()  # older keys, still listed in the JWKS

    def check_service(self, service: str | None) -> str:
        if service is None or service == "":
            return self.service
        if service != self.service:
            raise UnknownService(
                f"this token server issues tokens for service {self.service!r}, not "
                f"{service[:100]!r}; set the registry's auth.token.service to match"
            )
        return service

    async def login(self, name: str, secret: str, client: str) -> Principal:
        return await self.accounts.authenticate(name, secret, client)

    async def from_refresh_token(self, token: str) -> Principal:
        try:
            claims = read_refresh_token(
                token,
                self.issuer.key,
                issuer=self.issuer.issuer,
                service=self.service,
                clock=self.issuer.clock,
            )
        except TokenRejected as exc:
            raise AuthFailed(exc.reason) from None
        return await self.accounts.refresh(claims.subject, claims.binding)

    async def grant(
        self, principal: Principal, scopes: list[Scope], *, offline: bool, oauth: bool
    ) -> tuple[dict[str, Any], list[Scope]]:
        """The JSON answer (GET or OAuth2 POST form) and the granted scopes."""
        granted = await self.policy.grant(principal, scopes)
        issued = self.issuer.issue(principal.name, self.service, granted)
        body: dict[str, Any] = {
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued.issued_at,
        }
        if oauth:
            body["scope"] = format_scope_param(granted)
        if offline and principal is not ANONYMOUS and not principal.anonymous:
            account = await self.accounts.store.get_account(principal.name)
            if account is not None:
                body["refresh_token"] = self.issuer.issue_refresh(
                    principal.name, self.service, binding_of(account)
                )
        return body, granted

    def jwks(self) -> dict[str, Any]:
        return self.issuer.jwks(self.extra_keys)
