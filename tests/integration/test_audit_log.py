"""The audit log against a real server: skopeo pushes, pulls and deletes with token auth, then
`trustyard audit` (the real CLI) shows who did it from where; its filters and `--json` shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.integration import AuthServerProcess, add_user, token_server
from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.images import make_image, write_layout

pytestmark = [pytest.mark.needs_skopeo]

KEYS = {"time", "action", "actor", "client", "repository", "digest", "tag", "outcome", "detail"}


def audit_cli(data: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "trustyard", "audit", "--data-dir", str(data), *args],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(data),
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        },
        timeout=60,
        check=False,
    )
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc


def entries(data: Path, *args: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = json.loads(audit_cli(data, "--json", *args).stdout)
    return got


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AuthServerProcess, str]]:
    """alice pushes, pulls and deletes alice/app:v1 with skopeo; the server then stops (its
    recorder writes what is queued on the way out)."""
    root = tmp_path_factory.mktemp("audit")
    data = root / "data"
    add_user(data, "alice", "alice-pw")
    server = token_server(data, TRUSTYARD_AUDIT__PULL="all").start()
    skopeo = require("skopeo")
    image = make_image(1, seed="audit")
    src = write_layout(root / "src", {"v1": image})
    ref = f"docker://{server.host}/alice/app:v1"
    try:
        run(skopeo, "copy", "--dest-tls-verify=false", "--dest-creds", "alice:alice-pw",
            f"oci:{src}:v1", ref)  # fmt: skip
        run(skopeo, "copy", "--src-tls-verify=false", "--src-creds", "alice:alice-pw",
            ref, f"oci:{root / 'dst'}:v1")  # fmt: skip
        run(skopeo, "delete", "--tls-verify=false", "--creds", "alice:alice-pw", ref)
        refused = httpx.get(
            f"{server.url}/auth/token", params={"service": "trustyard"}, auth=("alice", "bad")
        )
        assert refused.status_code == 401
    finally:
        server.stop()
    yield server, image.digest


def test_skopeo_push_pull_delete_are_recorded_with_actor_and_address(
    pushed: tuple[AuthServerProcess, str],
) -> None:
    server, digest = pushed
    got = list(reversed(entries(server.data_dir, "--repository", "alice/app")))
    summary = [(e["action"], e["actor"], e["client"], e["repository"], e["outcome"]) for e in got]
    assert summary == [
        ("push", "alice", "127.0.0.1", "alice/app", "success"),
        ("pull", "alice", "127.0.0.1", "alice/app", "success"),
        # skopeo delete GETs the manifest to learn its digest, then deletes by digest
        ("pull", "alice", "127.0.0.1", "alice/app", "success"),
        ("delete", "alice", "127.0.0.1", "alice/app", "success"),
    ]
    assert [e["digest"] for e in got] == [digest] * 4
    assert [e["tag"] for e in got] == ["v1", "v1", "v1", ""]
    assert all(set(e) == KEYS for e in got)


def test_logins_grants_and_admin_actions(pushed: tuple[AuthServerProcess, str]) -> None:
    server, _ = pushed
    logins = entries(server.data_dir, "--action", "login")
    assert {e["outcome"] for e in logins} == {"success", "failure"}
    assert all(e["actor"] == "alice" and e["client"] == "127.0.0.1" for e in logins)
    grants = entries(server.data_dir, "--action", "token", "--actor", "alice")
    scopes = {s for g in grants for s in g["detail"]["scopes"]}
    assert "repository:alice/app:pull,push" in scopes
    [admin] = entries(server.data_dir, "--action", "admin")
    assert admin["actor"].startswith("local:") and admin["outcome"] == "success"
    assert admin["detail"] == {"command": "admin user add", "account": "alice", "admin": False}


def test_cli_filters_limit_since_and_text(pushed: tuple[AuthServerProcess, str]) -> None:
    server, _ = pushed
    data = server.data_dir
    assert len(entries(data, "--limit", "2")) == 2
    assert entries(data, "--actor", "nobody") == []
    assert entries(data, "--repository", "alice/app", "--action", "push")[0]["action"] == "push"
    assert entries(data, "--since", "1h") != []
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    assert entries(data, "--since", tomorrow) == []
    text = audit_cli(data, "--action", "push").stdout.strip().splitlines()
    assert len(text) == 1 and "\tpush\tsuccess\talice\t127.0.0.1\talice/app:v1@sha256:" in text[0]
    bad = audit_cli(data, "--since", "yesterday-ish", ok=False)
    assert bad.returncode == 2 and "give an age such as 30m" in bad.stderr
    bad = audit_cli(data, "--action", "explode", ok=False)
    assert bad.returncode == 2 and "is not one of push, pull" in bad.stderr
    assert audit_cli(data, "--limit", "0", ok=False).returncode == 2
