"""Verified admission through the pull-through mirror, with real servers and clients (issue 22).

A second trustyard is the upstream: images signed there with `trustyard sign cosign` (tag
scheme and OCI 1.1 referrers) and `skopeo copy --sign-by` (simple signing, extension API).
The mirror enforces policy rules on `hub/*`: unsigned and wrongly signed upstream images are
refused with the policy's message and leave nothing in its data dir; signed ones are admitted
with their signatures, and verify again from the cache once the upstream is stopped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.integration import add_user, bearer, token, token_server
from tests.integration.clienttools import ALL_MANIFESTS, run
from tests.integration.conftest import require
from tests.integration.images import Image, make_image, push_image, write_layout
from tests.integration.server import ServerProcess
from tests.integration.test_policy_pull import podman_pull, skopeo
from tests.signatures.gpg import GpgKey, atomic_payload, make_key, stop_agent
from trustyard.signing import cosign

pytestmark = [pytest.mark.needs_skopeo, pytest.mark.needs_podman, pytest.mark.slow]
TTL = 2


@dataclass
class Setup:
    upstream: ServerProcess
    mirror: ServerProcess
    root: Path
    cosign_key: Path
    stranger_key: Path
    gpg: GpgKey
    gpg_stranger: GpgKey


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("mirrortrust")
    for name in ("cosign", "stranger"):
        key = ec.generate_private_key(ec.SECP256R1())
        (root / f"{name}.key").write_bytes(cosign.encrypt_cosign_key(key, b"pw"))
        (root / f"{name}.pub").write_bytes(cosign.public_pem(key.public_key()))
    gpg_root = Path(tempfile.mkdtemp(prefix="ty-gpg-"))
    gpg_key, gpg_stranger = make_key(gpg_root / "a", "signer"), make_key(gpg_root / "b", "other")
    rules = [
        {
            "name": "hub-cosign",
            "repositories": ["hub/cos*"],
            "require": {"kind": "cosign", "keys": [str(root / "cosign.pub")]},
        },
        {
            "name": "hub-gpg",
            "repositories": ["hub/gpg*"],
            "require": {"kind": "simple-signing", "keys": [str(gpg_key.public)]},
        },
    ]
    upstream = ServerProcess(root / "up").start()
    mirrors = [
        {
            "prefix": "hub",
            "upstream": upstream.url,
            "upstream_prefix": "library",
            "ttl_seconds": TTL,
        }
    ]
    env = {"TRUSTYARD_POLICY__RULES": json.dumps(rules), "TRUSTYARD_MIRRORS": json.dumps(mirrors)}
    mirror = ServerProcess(root / "mirror", extra_env=env).start()
    try:
        yield Setup(
            upstream, mirror, root, root / "cosign.key", root / "stranger.key", gpg_key,
            gpg_stranger,
        )  # fmt: skip
    finally:
        mirror.stop()
        upstream.stop()
        for k in (gpg_key, gpg_stranger):
            stop_agent(k)
        shutil.rmtree(gpg_root, ignore_errors=True)


def push_up(s: Setup, repo: str, seed: str) -> Image:
    image = make_image(1, seed=seed)
    with httpx.Client(base_url=s.upstream.url, timeout=30) as c:
        push_image(c, repo, image, "v1")
    return image


def cosign_sign(s: Setup, ref: str, key: Path, mode: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trustyard", "sign", "cosign", f"{s.upstream.host}/{ref}", "--key",
         str(key), "--mode", mode, "--plain-http"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COSIGN_PASSWORD": "pw"},
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def sign_by(s: Setup, key: GpgKey, repo: str, seed: str) -> Image:
    """`skopeo copy --sign-by` to the upstream: the image and its simple signature."""
    image = make_image(1, seed=seed)
    tmp = Path(tempfile.mkdtemp(prefix="ty-sign-", dir=s.root))
    src = write_layout(tmp / "src", {"v1": image})
    permissive = tmp / "any.json"
    permissive.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    (tmp / "home").mkdir()
    run(require("skopeo"), "copy", "--policy", permissive, "--dest-tls-verify=false",
        "--sign-by", key.fingerprint, f"oci:{src}:v1", f"docker://{s.upstream.host}/{repo}:v1",
        env={"HOME": str(tmp / "home"), **key.env})  # fmt: skip
    return image


def stored_anywhere(s: Setup, image: Image) -> list[Path]:
    """Files in the mirror's data dir named after any of the image's digests."""
    hexes = {d.split(":", 1)[1] for d in (image.digest, *(_sha(b) for b in image.blobs))}
    return [p for p in s.mirror.data_dir.rglob("*") if p.name in hexes]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def catalog(s: Setup) -> list[str]:
    r = httpx.get(f"{s.mirror.url}/v2/_catalog", timeout=30)
    assert r.status_code == 200
    repos: list[str] = r.json()["repositories"]
    return repos


def get(s: Setup, path: str) -> httpx.Response:
    return httpx.get(f"{s.mirror.url}{path}", headers={"Accept": ALL_MANIFESTS}, timeout=60)


def test_refused_admitted_and_verified_offline(setup: Setup, tmp_path: Path) -> None:
    s = setup
    unsigned = push_up(s, "library/cos-unsigned", "mt-unsigned")
    foreign = push_up(s, "library/cos-foreign", "mt-foreign")
    cosign_sign(s, "library/cos-foreign:v1", s.stranger_key, "tag")
    tagged = push_up(s, "library/cos-tag", "mt-tag")
    cosign_sign(s, "library/cos-tag:v1", s.cosign_key, "tag")
    referred = push_up(s, "library/cos-ref", "mt-ref")
    cosign_sign(s, "library/cos-ref:v1", s.cosign_key, "referrers")
    gpg_good = sign_by(s, s.gpg, "library/gpg-good", "mt-gpg-good")
    gpg_bad = sign_by(s, s.gpg_stranger, "library/gpg-bad", "mt-gpg-bad")

    # Unsigned and wrongly signed: refused with the policy's message, nothing stored.
    out = skopeo(s.mirror, "hub/cos-unsigned:v1", ok=False)
    assert "'hub-cosign' (requires cosign)" in out and "no cosign signature" in out
    out = skopeo(s.mirror, "hub/cos-foreign:v1", ok=False)
    assert "no cosign signature by a trusted key" in out
    out = skopeo(s.mirror, "hub/gpg-bad:v1", ok=False)
    assert "'hub-gpg' (requires simple-signing)" in out and "not among the trusted keys" in out
    podman_pull(s.mirror, "hub/cos-unsigned:v1", ok=False)
    r = get(s, f"/v2/hub/cos-unsigned/manifests/{unsigned.digest}")  # by digest: refused too
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    for image in (unsigned, foreign, gpg_bad):
        assert stored_anywhere(s, image) == []
    assert catalog(s) == []

    # Signed by the trusted keys: admitted, signatures cached with the image.
    for repo, image in (("cos-tag", tagged), ("cos-ref", referred), ("gpg-good", gpg_good)):
        run(require("skopeo"), "copy", "--src-tls-verify=false", "--remove-signatures",
            f"docker://{s.mirror.host}/hub/{repo}:v1", f"oci:{tmp_path / repo}:x")  # fmt: skip
        assert stored_anywhere(s, image) != []
    podman_pull(s.mirror, "hub/cos-tag:v1", ok=True)
    assert sorted(catalog(s)) == ["hub/cos-ref", "hub/cos-tag", "hub/gpg-good"]
    tags = get(s, "/v2/hub/cos-tag/tags/list").json()["tags"]
    assert f"sha256-{tagged.digest.split(':')[1]}.sig" in tags
    refs = get(s, f"/v2/hub/cos-ref/referrers/{referred.digest}").json()["manifests"]
    assert [m.get("artifactType") for m in refs] == [cosign.ARTIFACT_SIG]
    sigs = get(s, f"/extensions/v2/hub/gpg-good/signatures/{gpg_good.digest}").json()
    assert len(sigs["signatures"]) == 1
    assert '"mirror_admitted"' in s.mirror.log()

    # The upstream goes away: past the TTL the cache is served (stale) and the registry's own
    # policy verifies every image again from the cached signatures.
    assert s.mirror.log_path is not None
    before = len(s.mirror.log_path.read_text(errors="replace"))
    s.upstream.stop()
    time.sleep(TTL + 0.3)
    for repo, image in (("cos-tag", tagged), ("cos-ref", referred), ("gpg-good", gpg_good)):
        r = get(s, f"/v2/hub/{repo}/manifests/v1")
        assert r.status_code == 200, r.text
        assert r.headers["X-Trustyard-Cache"] == "stale"
        assert r.content == image.manifest
        skopeo(s.mirror, f"hub/{repo}@{image.digest}", ok=True)
    podman_pull(s.mirror, "hub/gpg-good:v1", ok=True)
    offline = s.mirror.log_path.read_text(errors="replace")[before:]
    decisions = [
        json.loads(line)
        for line in offline.splitlines()
        if line.startswith("{") and '"policy_decision"' in line
    ]
    allowed = {d["repository"] for d in decisions if d["allowed"]}
    assert allowed == {"hub/cos-tag", "hub/cos-ref", "hub/gpg-good"}
    assert not [d for d in decisions if not d["allowed"]]
    assert "mirror_stale" in offline


def test_token_auth_upstream_signatures_are_read_with_the_mirrors_credentials(
    tmp_path: Path,
) -> None:
    """A trustyard upstream with token auth: the cosign referrers, the `.sig` tag and the
    extension API are all read through the mirror's token flow (pull scope)."""
    key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "cosign.pub").write_bytes(cosign.public_pem(key.public_key()))
    gpg_root = Path(tempfile.mkdtemp(prefix="ty-gpg-"))
    gpg_key = make_key(gpg_root / "a", "signer")
    data = tmp_path / "secure"
    add_user(data, "alice", "alice-pw", admin=True)
    secure = token_server(data).start()
    mirror = None
    try:
        tok = token(secure, "repository:team/ref:pull,push", "repository:team/gpg:pull,push",
                    "repository:team/none:pull,push", auth=("alice", "alice-pw"))  # fmt: skip
        host = secure.host
        with httpx.Client(base_url=secure.url, timeout=30, headers=bearer(tok)) as up:
            ref_image, gpg_image = make_image(1, seed="tok-ref"), make_image(1, seed="tok-gpg")
            push_image(up, "team/ref", ref_image, "v1")
            push_image(up, "team/gpg", gpg_image, "v1")
            push_image(up, "team/none", make_image(1, seed="tok-none"), "v1")
            subject = {
                "mediaType": cosign.OCI_MANIFEST,
                "digest": ref_image.digest,
                "size": len(ref_image.manifest),
            }
            artifact = cosign.referrer_artifact(cosign.KeySigner(key), f"{host}/team/ref", subject)
            for blob in artifact.blobs:
                r = up.post(
                    "/v2/team/ref/blobs/uploads/", params={"digest": _sha(blob)}, content=blob
                )
                assert r.status_code == 201, r.text
            r = up.put(
                f"/v2/team/ref/manifests/{artifact.digest}",
                content=artifact.manifest,
                headers={"Content-Type": cosign.OCI_MANIFEST},
            )
            assert r.status_code == 201, r.text
            content = gpg_key.sign(atomic_payload(f"{host}/team/gpg:v1", gpg_image.digest))
            body = {
                "schemaVersion": 2,
                "type": "atomic",
                "name": f"{gpg_image.digest}@one",
                "content": base64.b64encode(content).decode(),
            }
            r = up.put(f"/extensions/v2/team/gpg/signatures/{gpg_image.digest}", json=body)
            assert r.status_code in (200, 201), r.text
        rules = [
            {
                "name": "sec",
                "repositories": ["sec/*"],
                "require": {
                    "kind": "any-of",
                    "of": [
                        {"kind": "cosign", "keys": [str(tmp_path / "cosign.pub")]},
                        {"kind": "simple-signing", "keys": [str(gpg_key.public)]},
                    ],
                },
            }
        ]
        mirrors = [
            {
                "prefix": "sec",
                "upstream": secure.url,
                "upstream_prefix": "team",
                "username": "alice",
                "password_env": "UPSTREAM_PW",
            }
        ]
        env = {
            "TRUSTYARD_POLICY__RULES": json.dumps(rules),
            "TRUSTYARD_MIRRORS": json.dumps(mirrors),
            "UPSTREAM_PW": "alice-pw",
        }
        mirror = ServerProcess(tmp_path / "mirror", extra_env=env).start()
        out = skopeo(mirror, "sec/none:v1", ok=False)
        assert "denied by signature policy 'sec'" in out
        for repo in ("ref", "gpg"):
            skopeo(mirror, f"sec/{repo}:v1", ok=True)
        refs = httpx.get(f"{mirror.url}/v2/sec/ref/referrers/{ref_image.digest}", timeout=30)
        assert [m["artifactType"] for m in refs.json()["manifests"]] == [cosign.ARTIFACT_SIG]
        sigs = httpx.get(
            f"{mirror.url}/extensions/v2/sec/gpg/signatures/{gpg_image.digest}", timeout=30
        )
        assert len(sigs.json()["signatures"]) == 1
        assert "alice-pw" not in mirror.log()
    finally:
        if mirror is not None:
            mirror.stop()
        secure.stop()
        stop_agent(gpg_key)
        shutil.rmtree(gpg_root, ignore_errors=True)
