"""An enforcing cosign rule exempts signature artifacts, and only real ones (issue 16, item 3).

The attack: a normal image whose layer is a real tar.gz merely *labelled*
`application/vnd.dev.cosign.simplesigning.v1+json` was "a signature artifact (exempt)" and was
pulled by tag and digest (podman unpacked it). Now exempt is only what parses, byte for byte, as
bounded simple-signing payloads or sigstore bundles with an empty or cosign signature config;
its neighbours (mixed layers, a real image config, an index, artifactType labels, huge payloads,
foreign-URL descriptors) are refused too, on pulls and on protected-tag pushes alike.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.images import OCI_INDEX, OCI_MANIFEST, layer_tar, make_image, push_blob
from tests.integration.images import push_image as push_whole
from tests.integration.server import ServerProcess
from tests.integration.test_policy_pull import podman_pull, skopeo
from trustyard.signing import cosign

pytestmark = [pytest.mark.needs_skopeo, pytest.mark.needs_podman, pytest.mark.slow]
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass
class Setup:
    public: ServerProcess  # enforcing cosign rule on exe/*, release-* tags protected
    signer: ServerProcess  # same data, no rules
    key: Path
    signer_key: cosign.KeySigner


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("exempt")
    key = ec.generate_private_key(ec.SECP256R1())
    (root / "cosign.key").write_bytes(cosign.encrypt_cosign_key(key, b"pw"))
    (root / "cosign.pub").write_bytes(cosign.public_pem(key.public_key()))
    rules = [
        {
            "name": "cosign-signed",
            "repositories": ["exe/*"],
            "protect_tags": ["release-*"],
            "require": {"kind": "cosign", "keys": [str(root / "cosign.pub")]},
        }
    ]
    public = ServerProcess(
        root / "data", extra_env={"TRUSTYARD_POLICY__RULES": json.dumps(rules)}
    ).start()
    signer = ServerProcess(root / "data").start()
    try:
        yield Setup(public, signer, root / "cosign.key", cosign.KeySigner(key))
    finally:
        public.stop()
        signer.stop()


def desc(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
        **extra,
    }


def put(
    srv: ServerProcess,
    repo: str,
    ref: str | None,
    doc: dict[str, Any],
    blobs: list[bytes],
    media_type: str = OCI_MANIFEST,
) -> tuple[int, str]:
    """Push blobs and a manifest; (status of the manifest PUT, manifest digest)."""
    body = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for blob in blobs:
            push_blob(c, repo, blob)
        r = c.put(
            f"/v2/{repo}/manifests/{ref or digest}",
            content=body,
            headers={"Content-Type": media_type},
        )
    return r.status_code, digest


def pull(srv: ServerProcess, repo: str, ref: str) -> httpx.Response:
    accept = f"{OCI_MANIFEST}, {OCI_INDEX}"
    return httpx.get(f"{srv.url}/v2/{repo}/manifests/{ref}", headers={"Accept": accept}, timeout=30)


def assert_denied(srv: ServerProcess, repo: str, ref: str) -> str:
    r = pull(srv, repo, ref)
    assert r.status_code == 403, (ref, r.status_code, r.text)
    error = r.json()["errors"][0]
    assert error["code"] == "DENIED" and "'cosign-signed' (requires cosign)" in error["message"]
    return str(error["message"])


def image_config(layers: list[bytes]) -> bytes:
    """A real image config: a platform and a command to run."""
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/evil.sh"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": ["sha256:" + hashlib.sha256(x).hexdigest() for x in layers],
            },
        }
    ).encode()


def tar_layer(seed: str) -> bytes:
    return layer_tar({"evil.sh": f"#!/bin/sh\necho {seed}\n".encode()})


def test_a_tar_labelled_as_a_signature_is_not_exempt(setup: Setup) -> None:
    """The reported attack, pulled the ways it got through: skopeo by tag and digest, podman."""
    s = setup
    layer = tar_layer("labelled")
    config = image_config([layer])
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(IMAGE_CONFIG, config),
        "layers": [desc(cosign.SIMPLESIGNING, layer)],
    }
    status, digest = put(s.public, "exe/app", "v1", doc, [config, layer])
    assert status == 201
    out = skopeo(s.public, "exe/app:v1", ok=False)
    assert "cosign-signed" in out and "not a signature artifact" in out
    skopeo(s.public, f"exe/app@{digest}", ok=False)
    assert "cosign-signed" in podman_pull(s.public, "exe/app:v1", ok=False)
    message = assert_denied(s.public, "exe/app", digest)
    assert "layers[0]" in message  # says which part failed to parse
    # HEAD answers the same (one use case)
    head = httpx.head(
        f"{s.public.url}/v2/exe/app/manifests/v1", headers={"Accept": OCI_MANIFEST}, timeout=30
    )
    assert head.status_code == 403


def test_neighbours_of_the_disguise_are_refused(setup: Setup) -> None:
    s = setup
    signer = s.signer_key
    repo = "exe/near"
    target = make_image(1, seed="near-target")
    with httpx.Client(base_url=s.public.url, timeout=30) as c:
        push_whole(c, repo, target, "base")
    payload, sig_layer = cosign.signature_layer(signer, f"{s.public.host}/{repo}", target.digest)
    tar = tar_layer("near")
    empty = cosign.EMPTY_JSON
    sig_config = json.dumps(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [sig_layer["digest"]]},
        }
    ).encode()
    cases: dict[str, tuple[dict[str, Any], list[bytes]]] = {
        # one real signature layer plus a tar labelled as another
        "mixed": (
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": desc(cosign.ARTIFACT_SIG, empty),
                "layers": [sig_layer, desc(cosign.SIMPLESIGNING, tar)],
            },
            [payload, empty, tar],
        ),
        # only signature layers, but a real image config (platform, command)
        "image-config": (
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": desc(IMAGE_CONFIG, image_config([payload])),
                "layers": [sig_layer],
            },
            [payload, image_config([payload])],
        ),
        # artifactType says signature, the layer is a tar
        "artifact-type": (
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": cosign.ARTIFACT_SIG,
                "config": desc(cosign.ARTIFACT_SIG, empty),
                "layers": [desc(cosign.SIMPLESIGNING, tar)],
            },
            [empty, tar],
        ),
        # a real signature under an artifactType that is no signature's
        "other-artifact-type": (
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.thing",
                "config": desc(cosign.ARTIFACT_SIG, empty),
                "layers": [sig_layer],
            },
            [payload, empty],
        ),
        # a tar labelled as a sigstore bundle
        "bundle-tar": (
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": desc(cosign.OCI_EMPTY, empty),
                "layers": [desc(cosign.BUNDLE_V03, tar)],
            },
            [empty, tar],
        ),
        # a real payload whose descriptor also points clients at a foreign URL
        "foreign-url": (
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": desc(IMAGE_CONFIG, sig_config),
                "layers": [sig_layer | {"urls": ["https://evil.example/layer.tar.gz"]}],
            },
            [payload, sig_config],
        ),
        # a signature config that is not `{}` under an artifact media type
        "config-not-empty": (
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": desc(cosign.OCI_EMPTY, b'{"Cmd":["/evil.sh"]}'),
                "layers": [sig_layer],
            },
            [payload, b'{"Cmd":["/evil.sh"]}'],
        ),
    }
    # a "payload" far over the simple-signing bound (valid JSON, 1 MiB of padding)
    huge = payload[:-1] + b" " * (1 << 20) + b"}"
    huge_layer = desc(cosign.SIMPLESIGNING, huge, annotations=sig_layer["annotations"])
    cases["huge-payload"] = (
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": desc(cosign.ARTIFACT_SIG, empty),
            "layers": [huge_layer],
        },
        [huge, empty],
    )
    for name, (doc, blobs) in cases.items():
        status, digest = put(s.public, repo, name, doc, blobs)
        assert status == 201, name
        message = assert_denied(s.public, repo, name)
        assert "not a signature artifact" in message, (name, message)
        assert_denied(s.public, repo, digest)

    # an index labelled as a signature, holding the disguised image
    layer = tar_layer("in-index")
    config = image_config([layer])
    child = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(IMAGE_CONFIG, config),
        "layers": [desc(cosign.SIMPLESIGNING, layer)],
    }
    status, child_digest = put(s.public, repo, None, child, [config, layer])
    assert status == 201
    child_bytes = json.dumps(child).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": cosign.ARTIFACT_SIG,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": child_digest,
                "size": len(child_bytes),
                "artifactType": cosign.ARTIFACT_SIG,
            }
        ],
    }
    status, _ = put(s.public, repo, "index", index, [], OCI_INDEX)
    assert status == 201
    assert "is not a signature manifest" in assert_denied(s.public, repo, "index")
    assert_denied(s.public, repo, child_digest)


def test_real_signature_artifacts_stay_exempt_and_signed_images_pull(setup: Setup) -> None:
    s = setup
    repo = "exe/signed"
    with httpx.Client(base_url=s.public.url, timeout=30) as c:
        digest = push_whole(c, repo, make_image(1, seed="exempt-signed"), "v1")
    for mode in ("tag", "referrers", "bundle"):
        signed = subprocess.run(
            [sys.executable, "-m", "trustyard", "sign", "cosign", f"{s.signer.host}/{repo}:v1",
             "--key", str(s.key), "--mode", mode, "--plain-http"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "COSIGN_PASSWORD": "pw"},
        )  # fmt: skip
        assert signed.returncode == 0, signed.stderr
    assert json.loads(skopeo(s.public, f"{repo}:v1", ok=True))["schemaVersion"] == 2
    podman_pull(s.public, f"{repo}:v1", ok=True)
    sig_tag = f"sha256-{digest.split(':')[1]}.sig"
    sig = json.loads(skopeo(s.public, f"{repo}:{sig_tag}", ok=True))
    assert [x["mediaType"] for x in sig["layers"]] == [cosign.SIMPLESIGNING]
    referrers = httpx.get(f"{s.public.url}/v2/{repo}/referrers/{digest}", timeout=30).json()
    assert len(referrers["manifests"]) == 2
    for entry in referrers["manifests"]:
        r = pull(s.public, repo, entry["digest"])
        assert r.status_code == 200, r.text


def test_protected_tags_apply_the_same_rule(setup: Setup) -> None:
    s = setup
    repo = "exe/release"
    layer = tar_layer("release")
    config = image_config([layer])
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(IMAGE_CONFIG, config),
        "layers": [desc(cosign.SIMPLESIGNING, layer)],
    }
    status, _ = put(s.public, repo, "release-1", doc, [config, layer])
    assert status == 403
    with httpx.Client(base_url=s.public.url, timeout=30) as c:
        assert "release-1" not in c.get(f"/v2/{repo}/tags/list").text
    # a real signature artifact may carry a protected tag (it is exempt)
    target = make_image(1, seed="release-target")
    with httpx.Client(base_url=s.public.url, timeout=30) as c:
        push_whole(c, repo, target, "base")
    artifact = cosign.tag_artifact(s.signer_key, f"{s.public.host}/{repo}", target.digest, None)
    status, _ = put(s.public, repo, "release-sig", json.loads(artifact.manifest), artifact.blobs)
    assert status == 201


def test_cosign_junk_does_not_crowd_out_the_trusted_signature(setup: Setup) -> None:
    """40 signatures by an untrusted key ahead of the trusted one, as referrers and as layers of
    the tag-scheme `.sig` manifest: the rule used to look at the first 32 only."""
    s = setup
    stranger = cosign.KeySigner(ec.generate_private_key(ec.SECP256R1()))
    for mode in ("referrers", "tag"):
        repo = f"exe/crowd-{mode}"
        target = make_image(1, seed=f"crowd-{mode}")
        with httpx.Client(base_url=s.public.url, timeout=30) as c:
            push_whole(c, repo, target, "v1")
        identity = f"{s.public.host}/{repo}"
        subject = {"mediaType": OCI_MANIFEST, "digest": target.digest, "size": len(target.manifest)}
        existing: dict[str, Any] | None = None
        for _ in range(40):
            if mode == "referrers":
                junk = cosign.referrer_artifact(stranger, identity, subject)
                put(s.public, repo, None, json.loads(junk.manifest), junk.blobs)
            else:
                junk = cosign.tag_artifact(stranger, identity, target.digest, existing)
                existing = json.loads(junk.manifest)
        if mode == "tag":
            real = cosign.tag_artifact(s.signer_key, identity, target.digest, existing)
            assert len(json.loads(real.manifest)["layers"]) == 41
        else:
            real = cosign.referrer_artifact(s.signer_key, identity, subject)
        assert_denied(s.public, repo, "v1")
        status, _ = put(s.public, repo, real.tag, json.loads(real.manifest), real.blobs)
        assert status == 201
        assert pull(s.public, repo, "v1").status_code == 200, mode
