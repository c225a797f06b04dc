"""Helpers for the token-auth integration tests: accounts via the real CLI, token servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.integration.server import ServerProcess

FAST_BCRYPT = {"TRUSTYARD_AUTH__BCRYPT_COST": "4"}


def cli(data_dir: Path, *args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "trustyard", "admin", "--data-dir", str(data_dir), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "TRUSTYARD_AUTH__BCRYPT_COST": "4",
            "HOME": str(data_dir),
            # The code under test (a worktree's src), as the server processes get it.
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        },
        timeout=60,
        check=False,
    )
    if check:
        assert proc.returncode == 0, f"admin {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def add_user(data_dir: Path, name: str, password: str, *, admin: bool = False) -> None:
    cli(
        data_dir,
        "user",
        "add",
        name,
        "--password-stdin",
        *(["--admin"] if admin else []),
        stdin=password + "\n",
    )


class AuthServerProcess(ServerProcess):
    """A ServerProcess whose readiness probe accepts 401 (every /v2/ request needs a token)."""

    def __init__(self, data_dir: Path, **kwargs: Any) -> None:
        super().__init__(data_dir, ready_statuses=(200, 401), **kwargs)


def token_server(data_dir: Path, **env: str) -> AuthServerProcess:
    return AuthServerProcess(
        data_dir,
        extra_env={"TRUSTYARD_AUTH__MODE": "token", **FAST_BCRYPT, **env},
    )


def token_issuer(data_dir: Path, **env: str) -> AuthServerProcess:
    """`trustyard serve --only token`: the issuer alone (token auth implied, not configured)."""
    server = AuthServerProcess(
        data_dir, extra_env={**FAST_BCRYPT, **env}, extra_args=["--only", "token"]
    )
    server.ready_path = "/auth/jwks.json"
    return server


def fetch_token(
    server: ServerProcess,
    *scopes: str,
    auth: tuple[str, str] | None = None,
    **params: str,
) -> httpx.Response:
    return httpx.get(
        f"{server.url}/auth/token",
        params=[("service", "trustyard"), *[("scope", s) for s in scopes], *params.items()],
        auth=auth,
        timeout=30,
    )


def token(server: ServerProcess, *scopes: str, auth: tuple[str, str] | None = None) -> str:
    r = fetch_token(server, *scopes, auth=auth)
    assert r.status_code == 200, r.text
    value: str = r.json()["token"]
    return value


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def challenge(response: httpx.Response) -> dict[str, Any]:
    """WWW-Authenticate Bearer parameters as a dict (values unquoted)."""
    header = response.headers["www-authenticate"]
    scheme, _, rest = header.partition(" ")
    out: dict[str, Any] = {"scheme": scheme}
    import re

    for key, value in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest):
        out[key] = value
    return out
