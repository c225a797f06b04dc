"""cosign formats against a real `trustyard serve`: sign, verify, list, referrers, GC."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    make_image,
    push_blob,
    push_image,
    sha256,
)
from tests.integration.server import ServerProcess
from trustyard.signing import cosign

oras_provider = pytest.importorskip("oras.provider")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("cosign") / "data").start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("cosign-keys")
    key = ec.generate_private_key(ec.SECP256R1())
    (d / "cosign.key").write_bytes(cosign.encrypt_cosign_key(key, b"s3cret"))
    (d / "cosign.pub").write_bytes(cosign.public_pem(key.public_key()))
    other = ec.generate_private_key(ec.SECP256R1())
    (d / "other.pub").write_bytes(cosign.public_pem(other.public_key()))
    return d / "cosign.key", d / "cosign.pub", d / "other.pub"


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustyard", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COSIGN_PASSWORD": "s3cret"},
        check=False,
    )


def pushed(srv: ServerProcess, repo: str, seed: str) -> str:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        return push_image(c, repo, make_image(1, seed=seed), "v1")


def test_sign_every_mode_then_verify_and_list(
    srv: ServerProcess, keys: tuple[Path, Path, Path]
) -> None:
    key, pub, other = keys
    digest = pushed(srv, "cos/app", "cosign-all")
    ref = f"{srv.host}/cos/app:v1"
    for mode in ("tag", "referrers", "bundle"):
        out = cli("sign", "cosign", ref, "--key", key, "--mode", mode, "--plain-http")
        assert out.returncode == 0, out.stderr
    tag = f"sha256-{digest.split(':')[1]}.sig"
    assert tag in httpx.get(f"{srv.url}/v2/cos/app/tags/list", timeout=30).json()["tags"]

    ok = cli("sign", "verify-cosign", ref, "--key", pub, "--plain-http")
    assert ok.returncode == 0, ok.stderr
    kinds = sorted(
        line.split()[1] for line in ok.stdout.splitlines() if line.startswith("verified ")
    )
    assert kinds == ["cosign-referrer", "cosign-tag", "sigstore-bundle"]

    refused = cli("sign", "verify-cosign", ref, "--key", other, "--plain-http")
    assert refused.returncode == 1 and "no cosign signature verifies" in refused.stderr

    listed = cli("signatures", ref, "--key", pub, "--plain-http")
    assert listed.returncode == 0, listed.stderr
    assert f"({digest}): 3 signature(s)" in listed.stdout
    assert listed.stdout.count(" verified ") == 3

    # The registry still serves the image untouched.
    r = httpx.get(
        f"{srv.url}/v2/cos/app/manifests/v1", headers={"Accept": OCI_MANIFEST}, timeout=30
    )
    assert r.headers["docker-content-digest"] == digest


def test_referrers_show_cosign_artifacts_to_oras(
    srv: ServerProcess, keys: tuple[Path, Path, Path]
) -> None:
    key, _, _ = keys
    digest = pushed(srv, "cos/oras", "cosign-oras")
    ref = f"{srv.host}/cos/oras@{digest}"
    for mode in ("referrers", "bundle"):
        assert (
            cli("sign", "cosign", ref, "--key", key, "--mode", mode, "--plain-http").returncode == 0
        )
    reg = oras_provider.Registry(hostname=srv.host, insecure=True)
    index = reg.do_request(f"http://{srv.host}/v2/cos/oras/referrers/{digest}", "GET").json()
    types = sorted(m["artifactType"] for m in index["manifests"])
    assert types == sorted([cosign.BUNDLE_V03, cosign.ARTIFACT_SIG])
    for entry in index["manifests"]:
        manifest = reg.get_manifest(f"{srv.host}/cos/oras@{entry['digest']}")
        assert manifest["subject"]["digest"] == digest
    bundle = next(m for m in index["manifests"] if m["artifactType"] == cosign.BUNDLE_V03)
    assert bundle["annotations"][cosign.PREDICATE_ANNOTATION] == cosign.PREDICATE_SIGN


def test_tag_schema_index_is_folded_into_referrers(srv: ServerProcess) -> None:
    """cosign on a registry without the referrers API pushes an index under `sha256-<hex>`."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = pushed(srv, "cos/fallback", "cosign-fallback")
    subject = {"mediaType": OCI_MANIFEST, "digest": digest, "size": 0}
    artifact = cosign.referrer_artifact(cosign.KeySigner(key), "x/cos/fallback", subject)
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for blob in artifact.blobs:
            push_blob(c, "cos/fallback", blob)
        # stored without a subject link: only the tag-schema index makes it a referrer
        doc = json.loads(artifact.manifest)
        del doc["subject"]
        body = json.dumps(doc).encode()
        sig_digest = sha256(body)
        assert c.put(f"/v2/cos/fallback/manifests/{sig_digest}", content=body,
                     headers={"Content-Type": OCI_MANIFEST}).status_code == 201  # fmt: skip
        index = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sig_digest, "size": len(body),
                           "artifactType": cosign.ARTIFACT_SIG}],
        }).encode()  # fmt: skip
        tag = f"sha256-{digest.split(':')[1]}"
        assert c.put(f"/v2/cos/fallback/manifests/{tag}", content=index,
                     headers={"Content-Type": OCI_INDEX}).status_code == 201  # fmt: skip
        listed = c.get(f"/v2/cos/fallback/referrers/{digest}").json()["manifests"]
    assert [(m["digest"], m["artifactType"]) for m in listed] == [(sig_digest, cosign.ARTIFACT_SIG)]


def test_signing_a_missing_image_or_with_bad_key_fails_cleanly(
    srv: ServerProcess, keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    key, pub, _ = keys
    pushed(srv, "cos/missing", "cosign-missing")
    missing = f"{srv.host}/cos/missing@sha256:{'ee' * 32}"
    out = cli("sign", "cosign", missing, "--key", key, "--plain-http")
    assert out.returncode == 1 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    out = cli("sign", "verify-cosign", missing, "--key", pub, "--plain-http")
    assert out.returncode == 1 and "does not exist" in out.stderr
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n!!\n-----END")
    out = cli("sign", "cosign", f"{srv.host}/cos/missing:v1", "--key", garbage, "--plain-http")
    assert out.returncode == 1 and "error:" in out.stderr and "Traceback" not in out.stderr


def test_signatures_follow_their_image_in_gc(keys: tuple[Path, Path, Path], tmp_path: Path) -> None:
    key, _, _ = keys
    s = ServerProcess(tmp_path / "data").start()
    try:
        gone = pushed(s, "gc/cos", "gc-gone")
        kept = pushed(s, "gc/cos", "gc-kept")  # moves tag v1 to `kept`: `gone` is untagged
        for digest in (gone, kept):
            for mode in ("tag", "referrers"):
                ref = f"{s.host}/gc/cos@{digest}"
                assert cli("sign", "cosign", ref, "--key", key, "--mode", mode,
                           "--plain-http").returncode == 0  # fmt: skip
        # an orphan: a tag-scheme signature whose subject never existed
        orphan = f"sha256-{'77' * 32}.sig"
        sig_of_kept = f"sha256-{kept.split(':')[1]}.sig"
        with httpx.Client(base_url=s.url, timeout=30) as c:
            m = c.get(f"/v2/gc/cos/manifests/{sig_of_kept}", headers={"Accept": OCI_MANIFEST})
            assert c.put(f"/v2/gc/cos/manifests/{orphan}", content=m.content,
                         headers={"Content-Type": OCI_MANIFEST}).status_code == 201  # fmt: skip
        gc = subprocess.run(
            [sys.executable, "-m", "trustyard", "gc", "--grace-seconds", "0", "--data-dir",
             str(s.data_dir)], capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert gc.returncode == 0, gc.stderr
        tags = httpx.get(f"{s.url}/v2/gc/cos/tags/list", timeout=30).json()["tags"]
        assert sorted(tags) == sorted(["v1", sig_of_kept])
        assert (
            httpx.get(f"{s.url}/v2/gc/cos/referrers/{gone}", timeout=30).json()["manifests"] == []
        )
        assert (
            len(httpx.get(f"{s.url}/v2/gc/cos/referrers/{kept}", timeout=30).json()["manifests"])
            == 1
        )
        assert cli("sign", "verify-cosign", f"{s.host}/gc/cos:v1", "--key", keys[1],
                   "--plain-http").returncode == 0  # fmt: skip
        # deleting a signature never deletes the image
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert c.delete(f"/v2/gc/cos/manifests/{sig_of_kept}").status_code == 202
            r = c.get("/v2/gc/cos/manifests/v1", headers={"Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.headers["docker-content-digest"] == kept
    finally:
        s.stop()
