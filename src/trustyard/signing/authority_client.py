"""The client side of the registry's authority-statement API (http/authority_routes.py).

Posting needs the registry's admin right (token scope `registry:catalog:*`); fetching needs any
identity and follows the `Link: rel="next"` pages to the end. Each page is read bounded; the
statements themselves are judged later, offline, by `authority.statements.evaluate`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from trustyard.remote.bounded import ERROR_BODY, loads_json, read_body
from trustyard.signing.errors import RemoteError
from trustyard.signing.registry_client import RegistryClient, _registry_error

PATH = "/extensions/v2/_authority/statements"
ADMIN_SCOPE = "registry:catalog:*"
MAX_PAGE_BYTES = 16 << 20  # 100 statements of up to 64 KiB, with room
MAX_PAGES = 10_000
_NEXT = re.compile(r"<([^>]*)>\s*;\s*rel=\"?next\"?")


def split_registry(url: str) -> tuple[str, bool]:
    """`http://host:port` → (host:port, plain_http); a bare `host:port` means HTTPS."""
    if "://" not in url:
        return url.rstrip("/"), False
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RemoteError(f"registry URL {url!r} must be http://HOST[:PORT] or https://…")
    return parts.netloc, parts.scheme == "http"


class AuthorityClient(RegistryClient):
    """Post and fetch the namespace authority's statements on one registry."""

    def post_statement(self, statement: bytes) -> dict[str, Any]:
        """Store a statement; the registry's answer (`id`, `type`, `key`, and `created`)."""
        headers = {"Content-Type": "application/jose"}
        with self._request(
            "POST", "", PATH, headers=headers, content=statement, scope=ADMIN_SCOPE
        ) as r:
            if r.status_code not in (200, 201):
                raise self._fail(r, "cannot store the statement")
            doc = loads_json(read_body(r, ERROR_BODY, "statement answer"), "statement answer")
        if not isinstance(doc, dict):
            raise RemoteError(f"{self.host} answered the statement upload with no JSON object")
        return doc | {"created": r.status_code == 201}

    def fetch_statements(self, page_size: int = 100) -> list[bytes]:
        """Every stored statement, in issue order, following the pages."""
        found: list[bytes] = []
        path: str | None = f"{PATH}?n={page_size}"
        for _ in range(MAX_PAGES):
            if path is None:
                return found
            with self._request("GET", "", path, scope="") as r:
                if r.status_code != 200:
                    if r.status_code == 404:
                        body = read_body(r, ERROR_BODY, "statements", truncate=True)
                        raise RemoteError(
                            f"{self.host} does not serve authority statements "
                            f"({_registry_error(r, body)})"
                        )
                    raise self._fail(r, "cannot fetch the statements")
                doc = loads_json(read_body(r, MAX_PAGE_BYTES, "statements page"), "page")
                link = r.headers.get("Link")
            items = doc.get("statements") if isinstance(doc, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise RemoteError(f"{self.host}: a statements page without a 'statements' list")
            found += [i.encode() for i in items]
            path = _next_path(link)
        raise RemoteError(f"{self.host} served more than {MAX_PAGES} pages of statements")


def _next_path(link: str | None) -> str | None:
    if not link:
        return None
    match = _NEXT.search(link)
    if match is None:
        return None
    target = urlsplit(match.group(1))
    if target.path != PATH:
        raise RemoteError(f"the next-page link {match.group(1)[:100]!r} leaves the statements API")
    return f"{target.path}?{target.query}" if target.query else target.path
