"""HTTP to a Notary v1 trust server: credentials, the token exchange, bounded reads, errors.

Credentials are found as the notary client finds them (`$NOTARY_AUTH`, else the Docker
config.json entry for the server's host); the 401 challenge is answered by the one token exchange
of `remote/token_auth.py`, asking for the scope each route needs (`trust_scope`). The server is not
trusted to be small or quick: every answer is streamed and read under a size cap and a deadline
(`remote/bounded.py`), error bodies included.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

import httpx

from trustyard.crypto.notary_keys import KeyError_, PublicKey
from trustyard.remote.bounded import ERROR_BODY, BodyError, buffered, loads_json, read_body
from trustyard.remote.credentials import Credentials, load_credentials
from trustyard.remote.errors import RemoteError
from trustyard.remote.token_auth import CredentialsMissing, TokenAuth, TokenRefused, drive
from trustyard.trust.client.errors import TrustError

MAX_METADATA = 16 * 1024 * 1024
MAX_KEY = 64 * 1024
NO_CREDENTIALS = (
    "the trust server wants authentication and there are no credentials: set "
    "NOTARY_AUTH (base64 of user:password) or log in (docker login HOST)"
)
_GUN_PATH = re.compile(r"^/v2/(?P<gun>.+)/_trust/")


def trust_credentials(server: str, auth_file: Path | None = None) -> Credentials | None:
    """Credentials for a trust server, as the notary client finds them: `$NOTARY_AUTH`
    (base64 of `user:password`), else the Docker config.json `auths` entry for its host
    (`$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`)."""
    env = os.environ.get("NOTARY_AUTH", "").strip()
    if env:
        try:
            user, sep, password = base64.b64decode(env, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise TrustError("NOTARY_AUTH is not base64 of user:password") from None
        if not sep or not user:
            raise TrustError("NOTARY_AUTH is not base64 of user:password")
        return Credentials(user, password)
    host = httpx.URL(server).netloc.decode()
    try:
        return load_credentials(host, auth_file)
    except RemoteError as exc:
        raise TrustError(str(exc)) from None


def trust_scope(request: httpx.Request) -> str | None:
    """The token scope a trust route needs, as the notary client asks for it:
    `repository:GUN:ACTIONS` (GET pull, POST pull,push, DELETE *; a server key: GET pull,push,
    POST *); None outside a GUN."""
    match = _GUN_PATH.match(request.url.path)
    if match is None:
        return None
    method = request.method
    actions = "pull" if method in ("GET", "HEAD") else "*" if method == "DELETE" else "pull,push"
    if request.url.path.endswith(".key"):  # server keys: read pull,push, rotate * (notary)
        actions = "pull,push" if method == "GET" else "*"
    return f"repository:{match.group('gun')}:{actions}"


def _auth_error(exc: RemoteError) -> TrustError:
    """The token exchange's errors in the words `trustyard trust` has always used."""
    if isinstance(exc, CredentialsMissing):
        return TrustError(NO_CREDENTIALS)
    if isinstance(exc, TokenRefused):
        who = f"user {exc.user}" if exc.user is not None else "anonymous access"
        return TrustError(f"token server {exc.realm} refused {who}")
    return TrustError(str(exc))


class TrustServer:
    """One trust server: metadata reads, server keys, publishing; one line per failure."""

    def __init__(
        self,
        server: str,
        *,
        root_ca: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        auth_file: Path | None = None,
    ) -> None:
        self.server = server
        verify: Any = str(root_ca) if root_ca else True
        self.auth = TokenAuth(trust_credentials(server, auth_file), scope=trust_scope)
        self.http = httpx.Client(
            base_url=server.rstrip("/"), verify=verify, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def request(
        self, method: str, path: str, *, limit: int = MAX_METADATA, what: str = "", **kwargs: Any
    ) -> httpx.Response:
        """Send (answering the server's 401 challenge once) and return the answer read under
        `limit` bytes (error answers: cut at `ERROR_BODY`). The auth flow is driven here
        rather than by httpx, which would read every 401 body whole."""
        what = what or f"the trust server's answer to {method} {path}"
        try:
            request = self.http.build_request(method, path, **kwargs)
            send = lambda r: self.http.send(r, stream=True)  # noqa: E731
            response, sends = drive(self.auth.auth_flow(request), send, self.http)
            try:
                denied = response.status_code in (401, 403)
                if sends > 1 and denied and self.auth.credentials is None:
                    raise TrustError(NO_CREDENTIALS)
                ok = response.status_code == 200
                body = read_body(response, limit if ok else ERROR_BODY, what, truncate=not ok)
                return buffered(response, body)
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise TrustError(
                f"cannot reach the trust server {self.server}: {exc.__class__.__name__}"
                f" {exc}; nothing was published"
            ) from None
        except BodyError as exc:
            raise TrustError(f"{exc} (from the trust server {self.server})") from None
        except RemoteError as exc:
            raise _auth_error(exc) from None

    @staticmethod
    def fail(r: httpx.Response, what: str) -> TrustError:
        """The server's error answer as one line: Notary's nested `detail.Error.Msg` if any."""
        detail = r.text[:300]
        try:
            errors = loads_json(r.content, "error answer").get("errors") or []
            if errors:
                e = errors[0]
                inner = (e.get("detail") or {}).get("Error") if isinstance(e, dict) else None
                msg = inner.get("Msg") if isinstance(inner, dict) else None
                detail = f"{e.get('code')}: {msg or e.get('message')}"
        except (BodyError, AttributeError):
            pass
        if r.status_code == 401:
            detail += " (the trust server wants authentication)"
        return TrustError(f"{what}: the trust server answered {r.status_code} ({detail})")

    def get_file(self, gun: str, role: str) -> bytes | None:
        """The current `role.json` of `gun` (read under `MAX_METADATA` bytes), None on 404."""
        return self._get_metadata(gun, role, f"{role}.json")

    def get_root_version(self, gun: str, version: int) -> bytes | None:
        """Root `version` of `gun` (`N.root.json`, as notary-server serves old roots)."""
        return self._get_metadata(gun, f"root version {version}", f"{version}.root.json")

    def _get_metadata(self, gun: str, what: str, name: str) -> bytes | None:
        r = self.request(
            "GET", f"/v2/{gun}/_trust/tuf/{name}", limit=MAX_METADATA, what=f"{what} of {gun}"
        )
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise self.fail(r, f"cannot fetch {what} of {gun}")
        return r.content

    def server_key(self, gun: str, role: str) -> PublicKey:
        what = f"the server's {role} key for {gun}"
        r = self.request("GET", f"/v2/{gun}/_trust/tuf/{role}.key", limit=MAX_KEY, what=what)
        if r.status_code != 200:
            raise self.fail(r, f"cannot get the server's {role} key for {gun}")
        try:
            return PublicKey.from_json(loads_json(r.content, what))
        except BodyError as exc:
            raise TrustError(str(exc)) from None
        except (ValueError, KeyError_) as exc:
            raise TrustError(f"the server's {role} key for {gun} is invalid: {exc}") from None

    def publish(self, gun: str, files: dict[str, bytes]) -> None:
        """One atomic publish: a multipart POST of every changed role."""
        parts = [
            ("files", (role, data, "application/octet-stream")) for role, data in files.items()
        ]
        r = self.request("POST", f"/v2/{gun}/_trust/tuf/", files=parts)
        if r.status_code != 200:
            raise self.fail(r, f"publishing {', '.join(files)} of {gun} failed")
