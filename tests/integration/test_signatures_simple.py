"""Simple signing stored in trustyard: skopeo/podman `--sign-by`, `signedBy` policies on pull.

The registry advertises `X-Registry-Supports-Signatures: 1`, so containers/image writes and reads
signatures through `/extensions/v2/<name>/signatures/<digest>` with no lookaside configuration.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.images import make_image, push_image, write_layout
from tests.integration.server import ServerProcess
from tests.signatures.gpg import GpgKey, atomic_payload, make_key, stop_agent

pytestmark = [pytest.mark.needs_skopeo]

LOOKASIDE_DIRS = [Path("/var/lib/containers/sigstore")]


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    k = make_key(Path(tempfile.mkdtemp(prefix="ty-gpg-")), "signer")
    yield k
    stop_agent(k)
    shutil.rmtree(k.home.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GpgKey]:
    k = make_key(Path(tempfile.mkdtemp(prefix="ty-gpg-")), "stranger")
    yield k
    stop_agent(k)
    shutil.rmtree(k.home.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("sigsrv") / "data").start()
    yield srv
    srv.stop()


def policy(path: Path, host: str, key: GpgKey) -> Path:
    doc = {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                host: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key.public)}]
            },
            "oci": {"": [{"type": "insecureAcceptAnything"}]},
            "dir": {"": [{"type": "insecureAcceptAnything"}]},
        },
    }
    path.write_text(json.dumps(doc))
    return path


def accept_all(path: Path) -> Path:
    path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return path


def client_env(tmp: Path, key: GpgKey) -> dict[str, str]:
    """A private HOME (the per-user lookaside default lives there) and the test's keyring."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {"HOME": str(home), **key.env}


def lookaside_snapshot(home: Path) -> set[str]:
    found = set()
    for root in [*LOOKASIDE_DIRS, home / ".local/share/containers/sigstore"]:
        if root.exists():
            found |= {str(p) for p in root.rglob("*")}
    return found


def list_signatures(srv: ServerProcess, repo: str, digest: str) -> httpx.Response:
    return httpx.get(f"{srv.url}/extensions/v2/{repo}/signatures/{digest}", timeout=30)


def put_signature(
    srv: ServerProcess, repo: str, digest: str, content: bytes, **extra: object
) -> httpx.Response:
    body = {
        "schemaVersion": 2,
        "type": "atomic",
        "name": f"{digest}@0123456789abcdef0123456789abcdef",
        "content": base64.b64encode(content).decode(),
        **extra,
    }
    return httpx.put(
        f"{srv.url}/extensions/v2/{repo}/signatures/{digest}", content=json.dumps(body), timeout=30
    )


def test_base_advertises_the_extension(registry: ServerProcess) -> None:
    r = httpx.get(f"{registry.url}/v2/", timeout=30)
    assert r.headers["x-registry-supports-signatures"] == "1"


def test_skopeo_sign_by_stores_in_registry_and_signed_by_policy_verifies(
    registry: ServerProcess, key: GpgKey, tmp_path: Path
) -> None:
    skopeo = require("skopeo")
    env = client_env(tmp_path, key)
    before = lookaside_snapshot(tmp_path / "home")
    signed, unsigned = make_image(1, seed="simple-signed"), make_image(1, seed="simple-unsigned")
    src = write_layout(tmp_path / "src", {"signed": signed, "unsigned": unsigned})
    host = registry.host
    permissive = accept_all(tmp_path / "any.json")
    run(skopeo, "copy", "--policy", permissive, "--dest-tls-verify=false", "--sign-by",
        key.fingerprint, f"oci:{src}:signed", f"docker://{host}/simple/app:signed", env=env)  # fmt: skip
    run(skopeo, "copy", "--policy", permissive, "--dest-tls-verify=false",
        f"oci:{src}:unsigned", f"docker://{host}/simple/app:unsigned", env=env)  # fmt: skip

    # The signature is in trustyard, not in a local lookaside directory.
    assert lookaside_snapshot(tmp_path / "home") == before
    listed = list_signatures(registry, "simple/app", signed.digest)
    assert listed.status_code == 200
    sigs = listed.json()["signatures"]
    assert len(sigs) == 1 and sigs[0]["type"] == "atomic" and sigs[0]["schemaVersion"] == 2
    assert sigs[0]["name"].startswith(f"{signed.digest}@")
    assert list_signatures(registry, "simple/app", unsigned.digest).json() == {"signatures": []}

    strict = policy(tmp_path / "strict.json", f"{host}/simple", key)
    run(skopeo, "copy", "--policy", strict, "--src-tls-verify=false",
        f"docker://{host}/simple/app:signed", f"dir:{tmp_path / 'ok'}", env=env)  # fmt: skip
    assert (tmp_path / "ok" / "manifest.json").read_bytes() == signed.manifest
    refused = run(skopeo, "copy", "--policy", strict, "--src-tls-verify=false",
        f"docker://{host}/simple/app:unsigned", f"dir:{tmp_path / 'no'}", env=env, check=False)  # fmt: skip
    assert refused.returncode != 0
    assert "rejected" in refused.stderr and "signature" in refused.stderr.lower()
    assert not (tmp_path / "no" / "manifest.json").exists()


def test_signed_by_refuses_a_signature_by_another_key(
    registry: ServerProcess, key: GpgKey, other_key: GpgKey, tmp_path: Path
) -> None:
    skopeo = require("skopeo")
    image = make_image(1, seed="simple-stranger")
    src = write_layout(tmp_path / "src", {"v1": image})
    host = registry.host
    run(skopeo, "copy", "--policy", accept_all(tmp_path / "any.json"), "--dest-tls-verify=false",
        "--sign-by", other_key.fingerprint, f"oci:{src}:v1", f"docker://{host}/simple/stranger:v1",
        env=client_env(tmp_path, other_key))  # fmt: skip
    strict = policy(tmp_path / "strict.json", f"{host}/simple", key)
    refused = run(skopeo, "copy", "--policy", strict, "--src-tls-verify=false",
        f"docker://{host}/simple/stranger:v1", f"dir:{tmp_path / 'no'}",
        env=client_env(tmp_path, key), check=False)  # fmt: skip
    assert refused.returncode != 0 and "rejected" in refused.stderr


@pytest.mark.needs_podman
@pytest.mark.slow
def test_podman_push_sign_by_and_pull_with_policy(
    registry: ServerProcess, key: GpgKey, tmp_path: Path
) -> None:
    podman_exe = require("podman")
    skopeo = require("skopeo")
    runroot = Path(tempfile.mkdtemp(prefix="ty-podman-"))
    conf = tmp_path / "registries.conf"
    host = registry.host
    conf.write_text(
        f'unqualified-search-registries = []\n\n[[registry]]\nlocation = "{host}"\ninsecure = true\n'
    )
    env = {
        **client_env(tmp_path, key),
        "CONTAINERS_REGISTRIES_CONF": str(conf),
        "TMPDIR": str(tmp_path),
    }
    base = ["--root", str(tmp_path / "root"), "--runroot", str(runroot), "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file"]  # fmt: skip

    def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(podman_exe, *base, *args, env=env, check=check)

    try:
        signed, unsigned = (
            make_image(1, seed="podman-signed"),
            make_image(1, seed="podman-unsigned"),
        )
        src = write_layout(tmp_path / "src", {"a": signed, "b": unsigned})
        permissive = accept_all(tmp_path / "any.json")
        for tag in ("a", "b"):
            run(skopeo, "copy", "--policy", permissive, "--dest-tls-verify=false",
                f"oci:{src}:{tag}", f"docker://{host}/podsig/staging:{tag}", env=env)  # fmt: skip
            podman("pull", "--signature-policy", str(permissive), f"{host}/podsig/staging:{tag}")
        before = lookaside_snapshot(tmp_path / "home")
        podman("tag", f"{host}/podsig/staging:a", f"{host}/podsig/app:signed")
        podman("push", "--signature-policy", str(permissive), "--sign-by", key.fingerprint,
               f"{host}/podsig/app:signed")  # fmt: skip
        podman("tag", f"{host}/podsig/staging:b", f"{host}/podsig/app:unsigned")
        podman("push", "--signature-policy", str(permissive), f"{host}/podsig/app:unsigned")
        assert lookaside_snapshot(tmp_path / "home") == before

        digest = httpx.head(
            f"{registry.url}/v2/podsig/app/manifests/signed",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                     "application/vnd.docker.distribution.manifest.v2+json"},
            timeout=30,
        ).headers["docker-content-digest"]  # fmt: skip
        assert len(list_signatures(registry, "podsig/app", digest).json()["signatures"]) == 1

        strict = policy(tmp_path / "strict.json", f"{host}/podsig", key)
        podman("rmi", "-a", "-f")
        podman("pull", "--signature-policy", str(strict), f"{host}/podsig/app:signed")
        refused = podman("pull", "--signature-policy", str(strict), f"{host}/podsig/app:unsigned",
                         check=False)  # fmt: skip
        assert refused.returncode != 0
        assert "signature" in refused.stderr.lower()
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


# -- bad input ---------------------------------------------------------------------------------
@pytest.fixture
def pushed(registry: ServerProcess) -> tuple[str, str]:
    """A fresh image in its own repository: (repo, digest)."""
    image = make_image(1, seed=os.urandom(4).hex())
    repo = f"bad/{image.digest[7:19]}"
    with httpx.Client(base_url=registry.url, timeout=30) as c:
        push_image(c, repo, image, "v1")
    return repo, image.digest


def assert_untouched(registry: ServerProcess, repo: str, digest: str) -> None:
    assert list_signatures(registry, repo, digest).json() == {"signatures": []}
    r = httpx.get(
        f"{registry.url}/v2/{repo}/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        timeout=30,
    )
    assert r.status_code == 200 and r.headers["docker-content-digest"] == digest


def test_signature_over_another_digest_is_refused(
    registry: ServerProcess, key: GpgKey, pushed: tuple[str, str]
) -> None:
    repo, digest = pushed
    other = "sha256:" + "ab" * 32
    r = put_signature(registry, repo, digest, key.sign(atomic_payload(f"x/{repo}", other)))
    assert r.status_code == 400
    assert r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    assert other in r.json()["errors"][0]["message"] and "another image" in r.text
    assert_untouched(registry, repo, digest)


def test_unknown_critical_field_is_refused(
    registry: ServerProcess, key: GpgKey, pushed: tuple[str, str]
) -> None:
    repo, digest = pushed
    payload = atomic_payload(f"x/{repo}", digest, extra={"surprise": True})
    r = put_signature(registry, repo, digest, key.sign(payload))
    assert r.status_code == 400 and "unknown field(s) extra in critical" in r.text
    assert_untouched(registry, repo, digest)


def test_non_openpgp_upload_is_refused(registry: ServerProcess, pushed: tuple[str, str]) -> None:
    repo, digest = pushed
    r = put_signature(registry, repo, digest, b"-----BEGIN PGP MESSAGE-----\nnot binary\n")
    assert r.status_code == 400 and "not an OpenPGP message" in r.text
    r = put_signature(registry, repo, digest, b"\xa3\x01garbage-after-compressed-header")
    assert r.status_code == 400 and "OpenPGP" in r.text
    r = httpx.put(
        f"{registry.url}/extensions/v2/{repo}/signatures/{digest}", content=b"{not json", timeout=30
    )
    assert r.status_code == 400 and "not JSON" in r.text
    r = put_signature(registry, repo, digest, b"x", type="cosign")
    assert r.status_code == 400 and "type must be 'atomic'" in r.text
    assert_untouched(registry, repo, digest)


def test_oversized_upload_is_refused(
    registry: ServerProcess, key: GpgKey, pushed: tuple[str, str]
) -> None:
    repo, digest = pushed
    big = key.sign(atomic_payload(f"x/{repo}", digest) + b" " * 0) + os.urandom(70 * 1024)
    r = put_signature(registry, repo, digest, big)
    assert r.status_code == 413 and r.json()["errors"][0]["code"] == "SIZE_INVALID"
    r = httpx.put(
        f"{registry.url}/extensions/v2/{repo}/signatures/{digest}",
        content=b"x" * (200 * 1024),
        timeout=30,
    )
    assert r.status_code == 413
    assert_untouched(registry, repo, digest)


def test_signature_for_a_missing_manifest_is_refused(
    registry: ServerProcess, key: GpgKey, pushed: tuple[str, str]
) -> None:
    repo, _ = pushed
    missing = "sha256:" + "cd" * 32
    r = put_signature(registry, repo, missing, key.sign(atomic_payload(f"x/{repo}", missing)))
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert list_signatures(registry, repo, missing).status_code == 404
    assert list_signatures(registry, "no/such-repo", missing).json()["errors"][0]["code"] == (
        "NAME_UNKNOWN"
    )
    r = httpx.get(f"{registry.url}/extensions/v2/{repo}/signatures/sha256:zz", timeout=30)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID"


def test_put_is_idempotent_and_limited(
    registry: ServerProcess, key: GpgKey, pushed: tuple[str, str]
) -> None:
    repo, digest = pushed
    sig = key.sign(atomic_payload(f"x/{repo}", digest))
    assert put_signature(registry, repo, digest, sig).status_code == 201
    assert put_signature(registry, repo, digest, sig).status_code == 201
    listed = list_signatures(registry, repo, digest).json()["signatures"]
    assert [base64.b64decode(s["content"]) for s in listed] == [sig]


def test_gc_removes_signatures_of_deleted_manifests(key: GpgKey, tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        image, kept = make_image(1, seed="gc-sig"), make_image(1, seed="gc-kept")
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            push_image(c, "gc/app", image, "v1")
            push_image(c, "gc/app", kept, "v2")
            for img in (image, kept):
                sig = key.sign(atomic_payload(f"{srv.host}/gc/app", img.digest))
                assert put_signature(srv, "gc/app", img.digest, sig).status_code == 201
            assert c.delete(f"/v2/gc/app/manifests/{image.digest}").status_code == 202
        db = srv.data_dir / "metadata.db"

        def rows() -> list[str]:
            with sqlite3.connect(db) as conn:
                return sorted(r[0] for r in conn.execute("SELECT digest FROM simple_signatures"))

        # Deleting the manifest leaves the signature until GC (deleting never cascades into the
        # image either way); GC then removes exactly the signature whose manifest is gone.
        assert rows() == sorted([image.digest, kept.digest])
        gc = subprocess.run(
            [sys.executable, "-m", "trustyard", "gc", "--grace-seconds", "0", "--data-dir",
             str(srv.data_dir)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert gc.returncode == 0, gc.stderr
        assert rows() == [kept.digest]
        assert len(list_signatures(srv, "gc/app", kept.digest).json()["signatures"]) == 1
    finally:
        srv.stop()


def test_signature_put_needs_push_on_the_repository(key: GpgKey, tmp_path: Path) -> None:
    from tests.auth.integration import add_user, bearer, cli, token, token_server

    data = tmp_path / "data"
    add_user(data, "root", "root-pw", admin=True)
    add_user(data, "reader", "reader-pw")
    cli(data, "acl", "add", "reader", "team/*", "pull")
    srv = token_server(data).start()
    try:
        ping = httpx.get(f"{srv.url}/v2/", timeout=30)
        assert ping.status_code == 401 and ping.headers["x-registry-supports-signatures"] == "1"
        image = make_image(1, seed="authsig")
        admin = token(srv, "repository:team/app:pull,push", auth=("root", "root-pw"))
        with httpx.Client(base_url=srv.url, timeout=30, headers=bearer(admin)) as c:
            push_image(c, "team/app", image, "v1")
        reader = token(srv, "repository:team/app:pull,push", auth=("reader", "reader-pw"))
        url = f"{srv.url}/extensions/v2/team/app/signatures/{image.digest}"
        body = {
            "schemaVersion": 2,
            "type": "atomic",
            "name": f"{image.digest}@0123456789abcdef0123456789abcdef",
            "content": base64.b64encode(
                key.sign(atomic_payload(f"{srv.host}/team/app", image.digest))
            ).decode(),
        }
        anonymous = httpx.put(url, content=json.dumps(body), timeout=30)
        assert anonymous.status_code == 401
        denied = httpx.put(url, content=json.dumps(body), headers=bearer(reader), timeout=30)
        assert denied.status_code == 403 and denied.json()["errors"][0]["code"] == "DENIED"
        listed = httpx.get(url, headers=bearer(reader), timeout=30)
        assert listed.status_code == 200 and listed.json() == {"signatures": []}
        ok = httpx.put(url, content=json.dumps(body), headers=bearer(admin), timeout=30)
        assert ok.status_code == 201
        assert len(httpx.get(url, headers=bearer(reader), timeout=30).json()["signatures"]) == 1
    finally:
        srv.stop()
