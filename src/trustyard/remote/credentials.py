"""Registry credentials as docker and skopeo find them, and the parts of an auth challenge.

Credentials come from a Docker `config.json` `auths` entry (`auth` = base64 of user:password, or
`username`/`password`); the file is `$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else
`~/.docker/config.json`. Shared by the signing toolkit's registry client and the trust client.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from trustyard.remote.errors import RemoteError

_CHALLENGE_RE = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        """The `Authorization` header value for HTTP Basic."""
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback address, with or without a port or IPv6 brackets."""
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _auth_key(key: str) -> str:
    """Normalise a config.json `auths` key (`https://host:port/v1/` → `host:port`)."""
    for scheme in ("https://", "http://"):
        if key.startswith(scheme):
            key = key[len(scheme) :]
    return key.split("/", 1)[0]


def default_auth_file() -> Path:
    """`$REGISTRY_AUTH_FILE`, else `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    if os.environ.get("REGISTRY_AUTH_FILE"):
        return Path(os.environ["REGISTRY_AUTH_FILE"])
    if os.environ.get("DOCKER_CONFIG"):
        return Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    return Path.home() / ".docker" / "config.json"


def load_credentials(host: str, auth_file: Path | None) -> Credentials | None:
    """The `auths` entry for `host` in a Docker config.json (`auth` = base64 user:password).

    A missing default file means anonymous access; a file named explicitly must exist.
    """
    path = auth_file or default_auth_file()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if auth_file is not None:
            raise RemoteError(f"auth file {path} does not exist") from None
        return None
    except OSError as exc:
        raise RemoteError(f"cannot read auth file {path}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RemoteError(f"auth file {path} is not valid JSON ({exc})") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return None
    entry = next((v for k, v in auths.items() if _auth_key(k) == host), None)
    if not isinstance(entry, dict):
        return None
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = (
                base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise RemoteError(f"auth file {path}: auths[{host!r}].auth is not base64") from None
        if not sep:
            raise RemoteError(f"auth file {path}: auths[{host!r}].auth is not user:password")
        return Credentials(user, password)
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(entry["username"], entry["password"])
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…",scope="…"` → ('bearer', {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): (
            m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3)
        )
        for m in _CHALLENGE_RE.finditer(rest)
    }
    return scheme.lower(), params
