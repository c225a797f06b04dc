"""Signature identity under a registry policy: a signature made for repository A does not admit
the same digest in repository B (containers/image's `signedIdentity`, default
`matchRepoDigestOrExact` for simple signing; `repository` for cosign, which records no tag)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.images import (
    OCI_MANIFEST,
    Image,
    make_image,
    push_blob,
    push_image,
    write_layout,
)
from tests.integration.server import ServerProcess
from tests.integration.test_policy_pull import skopeo
from tests.signatures.gpg import GpgKey, make_key, stop_agent
from trustyard.signing import cosign

pytestmark = [pytest.mark.needs_skopeo, pytest.mark.slow]


@dataclass
class Setup:
    public: ServerProcess
    signer: ServerProcess  # same data, no rules (cosign signing reads the manifest)
    gpg: GpgKey
    cosign_key: Path
    cosign_signer: cosign.KeySigner


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("identity")
    gpg_root = Path(tempfile.mkdtemp(prefix="ty-ident-"))
    gpg = make_key(gpg_root / "a", "signer")
    key = ec.generate_private_key(ec.SECP256R1())
    (root / "cosign.key").write_bytes(cosign.encrypt_cosign_key(key, b"pw"))
    (root / "cosign.pub").write_bytes(cosign.public_pem(key.public_key()))
    gpg_rule = {"kind": "simple-signing", "keys": [str(gpg.public)]}
    rules = [
        {"name": "gpg-exact", "repositories": ["gpg/*"], "require": gpg_rule},
        {
            "name": "gpg-repo",
            "repositories": ["gpgrepo/*"],
            "require": {**gpg_rule, "match": "repository"},
        },
        {
            "name": "cosign-repo",
            "repositories": ["cos/*"],
            "require": {"kind": "cosign", "keys": [str(root / "cosign.pub")]},
        },
    ]
    data = root / "data"
    public = ServerProcess(data, extra_env={"TRUSTYARD_POLICY__RULES": json.dumps(rules)}).start()
    signer = ServerProcess(data).start()
    try:
        yield Setup(public, signer, gpg, root / "cosign.key", cosign.KeySigner(key))
    finally:
        public.stop()
        signer.stop()
        stop_agent(gpg)
        shutil.rmtree(gpg_root, ignore_errors=True)


def sign_by(s: Setup, tmp: Path, image: Image, ref: str) -> None:
    """`skopeo copy --sign-by` to the enforcing endpoint: image and signature in one push."""
    src = write_layout(tmp / f"src-{ref.replace('/', '-').replace(':', '-')}", {"v1": image})
    permissive = tmp / "any.json"
    permissive.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    run(require("skopeo"), "copy", "--policy", permissive, "--dest-tls-verify=false",
        "--sign-by", s.gpg.fingerprint, f"oci:{src}:v1", f"docker://{s.public.host}/{ref}",
        env={"HOME": str(home), **s.gpg.env})  # fmt: skip


def stored_signatures(srv: ServerProcess, repo: str, digest: str) -> list[bytes]:
    r = httpx.get(f"{srv.url}/extensions/v2/{repo}/signatures/{digest}", timeout=30)
    return [base64.b64decode(x["content"]) for x in r.json()["signatures"]]


def put_signature(srv: ServerProcess, repo: str, digest: str, content: bytes) -> None:
    body = {
        "schemaVersion": 2,
        "type": "atomic",
        "name": f"{digest}@copied",
        "content": base64.b64encode(content).decode(),
    }
    r = httpx.put(
        f"{srv.url}/extensions/v2/{repo}/signatures/{digest}", content=json.dumps(body), timeout=30
    )
    assert r.status_code == 201, r.text


def denied(srv: ServerProcess, ref: str, *needles: str) -> None:
    out = skopeo(srv, ref, ok=False)
    for needle in needles:
        assert needle in out, out


def test_a_simple_signature_for_repository_a_does_not_admit_b(setup: Setup, tmp_path: Path) -> None:
    s = setup
    image = make_image(1, seed="ident-gpg")
    sign_by(s, tmp_path, image, "gpg/a:v1")
    skopeo(s.public, "gpg/a:v1", ok=True)
    skopeo(s.public, f"gpg/a@{image.digest}", ok=True)  # by digest: the repository must match
    # The same digest under another tag: matchRepoDigestOrExact wants the exact tag.
    with httpx.Client(base_url=s.public.url, timeout=30) as c:
        push_image(c, "gpg/a", image, "v2")
        push_image(c, "gpg/b", image, "v1")
    denied(s.public, "gpg/a:v2", "gpg-exact", "is not exactly gpg/a:v2")
    # The signature copied into repository B: refused there, by tag and by digest.
    (signature,) = stored_signatures(s.public, "gpg/a", image.digest)
    put_signature(s.public, "gpg/b", image.digest, signature)
    denied(s.public, "gpg/b:v1", "gpg-exact", "names repository gpg/a, not gpg/b")
    denied(s.public, f"gpg/b@{image.digest}", "names repository gpg/a, not gpg/b")


def test_match_repository_ignores_the_tag_but_not_the_repository(
    setup: Setup, tmp_path: Path
) -> None:
    s = setup
    image = make_image(1, seed="ident-gpgrepo")
    sign_by(s, tmp_path, image, "gpgrepo/a:v1")
    with httpx.Client(base_url=s.public.url, timeout=30) as c:
        push_image(c, "gpgrepo/a", image, "v2")
        push_image(c, "gpgrepo/b", image, "v1")
    skopeo(s.public, "gpgrepo/a:v2", ok=True)
    (signature,) = stored_signatures(s.public, "gpgrepo/a", image.digest)
    put_signature(s.public, "gpgrepo/b", image.digest, signature)
    denied(s.public, "gpgrepo/b:v1", "gpg-repo", "names repository gpgrepo/a, not gpgrepo/b")


def push_artifact(srv: ServerProcess, repo: str, artifact: cosign.Artifact) -> None:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for blob in artifact.blobs:
            push_blob(c, repo, blob)
        r = c.put(
            f"/v2/{repo}/manifests/{artifact.tag or artifact.digest}",
            content=artifact.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 201, r.text


def test_a_cosign_signature_for_repository_a_does_not_admit_b(setup: Setup) -> None:
    s = setup
    image = make_image(1, seed="ident-cosign")
    with httpx.Client(base_url=s.public.url, timeout=30) as c:
        push_image(c, "cos/a", image, "v1")
        push_image(c, "cos/b", image, "v1")
    signed = subprocess.run(
        [sys.executable, "-m", "trustyard", "sign", "cosign", f"{s.signer.host}/cos/a:v1",
         "--key", str(s.cosign_key), "--mode", "tag", "--plain-http"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COSIGN_PASSWORD": "pw"},
    )  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    skopeo(s.public, "cos/a:v1", ok=True)
    skopeo(s.public, f"cos/a@{image.digest}", ok=True)
    # The same trusted key's signature for cos/a, in all three shapes, placed in cos/b.
    identity = f"{s.public.host}/cos/a"
    subject = {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest)}
    for artifact in (
        cosign.tag_artifact(s.cosign_signer, identity, image.digest, None),
        cosign.referrer_artifact(s.cosign_signer, identity, subject),
        cosign.bundle_artifact(s.cosign_signer, identity, subject),
    ):
        push_artifact(s.public, "cos/b", artifact)
    denied(s.public, "cos/b:v1", "cosign-repo", "names repository cos/a, not cos/b")
    denied(s.public, f"cos/b@{image.digest}", "names repository cos/a, not cos/b")
    # Made for cos/b, it admits cos/b.
    right = cosign.referrer_artifact(s.cosign_signer, f"{s.public.host}/cos/b", subject)
    push_artifact(s.public, "cos/b", right)
    skopeo(s.public, "cos/b:v1", ok=True)
