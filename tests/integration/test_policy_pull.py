"""Registry-side signature policy: skopeo/podman cannot pull an unsigned tag from a protected
repository; after `trustyard trust sign` they can; warn mode logs and lets the pull through."""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import require
from tests.integration.images import make_image, push_image
from tests.integration.server import ServerProcess
from tests.integration.trusttools import push, trust

pytestmark = [pytest.mark.needs_skopeo, pytest.mark.needs_podman, pytest.mark.slow]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("policy") / "data")
    rules = [
        {
            "name": "prod-signed",
            "repositories": ["prod/*"],
            "require": {"kind": "notary", "gun_prefix": f"{s.host}/"},
            "protect_tags": ["release-*"],
        },
        {
            "name": "staging-watch",
            "repositories": ["staging/*"],
            "mode": "warn",
            "require": {"kind": "any-of", "of": [{"kind": "notary", "gun_prefix": f"{s.host}/"}]},
        },
    ]
    s.extra_env = {"TRUSTYARD_POLICY__RULES": json.dumps(rules)}
    s.start()
    yield s
    s.stop()


def skopeo(srv: ServerProcess, ref: str, ok: bool) -> str:
    proc = subprocess.run(
        [require("skopeo"), "inspect", "--tls-verify=false", "--raw", f"docker://{srv.host}/{ref}"],
        capture_output=True,
        timeout=60,
    )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert (proc.returncode == 0) == ok, out
    return out


def podman_pull(srv: ServerProcess, ref: str, ok: bool) -> str:
    root = Path(tempfile.mkdtemp(prefix="ty-pol-"))
    proc = subprocess.run(
        [
            require("podman"), "--root", str(root / "r"), "--runroot", str(root / "rr"),
            "--storage-driver", "vfs", "pull", "--tls-verify=false", f"{srv.host}/{ref}",
        ],
        capture_output=True,
        timeout=120,
    )  # fmt: skip
    out = proc.stdout.decode() + proc.stderr.decode()
    assert (proc.returncode == 0) == ok, out
    return out


def test_unsigned_refused_then_signed_allowed(srv: ServerProcess, tmp_path: Path) -> None:
    image = make_image(seed="prod")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        digest = push_image(c, "prod/app", image, "v1")
    out = skopeo(srv, "prod/app:v1", ok=False)
    assert "prod-signed" in out and "denied" in out.lower()
    podman_pull(srv, "prod/app:v1", ok=False)
    owner, gun = tmp_path / "owner", f"{srv.host}/prod/app"
    trust(srv, owner, "init", gun)
    # the policy hides the unsigned manifest, so the digest comes from the push (addhash-style)
    size = str(len(image.manifest))
    trust(srv, owner, "sign", f"{gun}:v1", "--digest", digest, "--size", size)
    assert json.loads(skopeo(srv, "prod/app:v1", ok=True))["schemaVersion"] == 2
    skopeo(srv, f"prod/app@{digest}", ok=True)  # by digest: it is a signed target
    podman_pull(srv, "prod/app:v1", ok=True)
    # the tag moves to an unsigned manifest: refused again
    push(srv, "prod/app", "v1", "moved")
    assert "moved after signing" in skopeo(srv, "prod/app:v1", ok=False)
    log = srv.log()
    assert '"event": "policy_decision"' in log and '"allowed": false' in log


def test_protected_tag_push_refused(srv: ServerProcess) -> None:
    with pytest.raises(AssertionError, match="prod-signed"):
        push(srv, "prod/app", "release-1", "unsigned-release")


def test_warn_mode_logs_and_allows(srv: ServerProcess) -> None:
    push(srv, "staging/app", "v1", "staging")
    skopeo(srv, "staging/app:v1", ok=True)
    decisions = [
        json.loads(line)
        for line in srv.log().splitlines()
        if '"policy_decision"' in line and "staging/app" in line
    ]
    assert decisions and decisions[-1]["allowed"] is False and decisions[-1]["mode"] == "warn"
