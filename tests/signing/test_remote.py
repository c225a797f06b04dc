"""sign-image / verify-image --ref against a real `trustyard serve` over the distribution API."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.images import Image, make_image, make_index, push_blob, push_image
from tests.integration.server import ServerProcess
from trustyard.crypto.ecdsa import FileKeySigner
from trustyard.signing import annotations as ann
from trustyard.signing import remote
from trustyard.signing.registry_client import RegistryClient, RemoteRef

from .helpers import Keys, run, sh
from .hsm import Token


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One registry for the module; every test pushes to its own repository."""
    srv = ServerProcess(tmp_path_factory.mktemp("registry") / "data").start()
    yield srv
    srv.stop()


def push(server: ServerProcess, repo: str, tag: str, image: Image | None = None) -> Image:
    image = image or make_image(2, seed=repo)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        push_image(c, repo, image, tag)
    return image


def raw_manifest(server: ServerProcess, repo: str, ref: str) -> tuple[bytes, dict[str, Any]]:
    """What skopeo sees: `skopeo inspect --raw` of the reference."""
    out = sh(
        "skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{server.host}/{repo}:{ref}"
    )
    return out, json.loads(out)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sign(ref: str, keyset: Keys, *extra: str) -> Any:
    return run(
        "sign-image", "--ref", ref, "--plain-http", "-v", keyset.vendor_prv,
        "-s", keyset.vendor_pub_sig, "-c", keyset.root_pub, *extra,
    )  # fmt: skip


def verify(ref: str, root: Path, *extra: str) -> Any:
    return run("verify-image", "--ref", ref, "--plain-http", "-c", root, *extra)


def test_sign_by_ref_then_skopeo_and_verify(
    server: ServerProcess, keyset: Keys, tmp_path: Path
) -> None:
    image = push(server, "app", "1.0")
    old = json.loads(image.manifest)
    ref = f"{server.host}/app:1.0"
    result = sign(ref, keyset)
    assert result.exit_code == 0, result.output
    assert "tag 1.0 moved" in result.output
    raw, manifest = raw_manifest(server, "app", "1.0")
    a = manifest["annotations"]
    assert bytes.fromhex(a[ann.VENDORPUB]) == keyset.vendor_pub.read_bytes()
    assert bytes.fromhex(a[ann.VENDORPUB_SIGNATURE]) == keyset.vendor_pub_sig.read_bytes()
    assert sha256(raw) in result.output and sha256(raw) != image.digest
    # only the annotations changed: same config, same layers (never re-uploaded)
    assert manifest["config"] == old["config"] and manifest["layers"] == old["layers"]
    # the config signature verifies by hand with openssl
    sig, config = tmp_path / "config.sig", tmp_path / "config"
    sig.write_bytes(bytes.fromhex(a[ann.SIGNATURE]))
    config.write_bytes(image.config)
    out = sh("openssl", "dgst", "-sha384", "-verify", keyset.vendor_pub, "-keyform", "DER",
             "-signature", sig, config)  # fmt: skip
    assert b"Verified OK" in out
    result = verify(ref, keyset.root_pub)
    assert result.exit_code == 0, result.output
    assert f"verified: {ref}" in result.output
    # every digest holds: skopeo copies the whole image (layers included) into an OCI layout
    sh("skopeo", "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{tmp_path / 'oci'}:1.0")
    index = json.loads((tmp_path / "oci" / "index.json").read_bytes())
    assert index["manifests"][0]["digest"] == sha256(raw)


def test_only_config_and_manifests_travel(server: ServerProcess, keyset: Keys) -> None:
    """Signing never downloads or uploads a layer: every request is logged and checked."""
    image = push(server, "lean", "1.0")
    seen: list[tuple[str, str]] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            seen.append((request.method, request.url.path))
            return super().handle_request(request)

    vendor = FileKeySigner.from_file(keyset.vendor_prv)
    ref = RemoteRef.parse(f"{server.host}/lean:1.0")
    with RegistryClient(ref.host, push=True, plain_http=True, transport=Recording()) as client:
        out = remote.sign_remote(client, ref, vendor, keyset.vendor_pub_sig.read_bytes())
    config = sha256(image.config)
    assert seen == [
        ("GET", "/v2/lean/manifests/1.0"),
        ("GET", f"/v2/lean/blobs/{config}"),
        ("PUT", "/v2/lean/manifests/1.0"),
    ]
    assert out.result.old_digest == image.digest and out.tag == "1.0"


def test_vendor_and_qa_signatures_each_verify(server: ServerProcess, keyset: Keys) -> None:
    push(server, "multi-sig", "1.0")
    ref = f"{server.host}/multi-sig:1.0"
    assert sign(ref, keyset).exit_code == 0
    qa = run(
        "sign-image", "--ref", ref, "--plain-http", "--add", "-v", keyset.qa_prv,
        "-s", keyset.qa_pub_sig, "-c", keyset.qaroot_pub,
    )  # fmt: skip
    assert qa.exit_code == 0, qa.output
    assert "extra" in qa.output
    _raw, manifest = raw_manifest(server, "multi-sig", "1.0")
    assert len(ann.slots(manifest["annotations"])) == 2
    for root in (keyset.root_pub, keyset.qaroot_pub):
        result = verify(ref, root)
        assert result.exit_code == 0, result.output
        assert "signed by 1 vendor key(s)" in result.output
        assert "skip" in result.output  # the other vendor's signature, under another root
    wrong = verify(ref, keyset.otherroot_pub)
    assert wrong.exit_code == 1
    assert "no signature on this image is endorsed by this root CA" in wrong.output


def test_tampered_config_in_registry_fails(server: ServerProcess, keyset: Keys) -> None:
    image = push(server, "tamper", "1.0")
    ref = f"{server.host}/tamper:1.0"
    assert sign(ref, keyset).exit_code == 0
    # flip a byte of the stored config blob behind the registry's back
    hexpart = sha256(image.config).split(":")[1]
    (path,) = [p for p in server.data_dir.rglob(hexpart) if p.is_file()]
    data = bytearray(path.read_bytes())
    data[-2] ^= 1
    path.write_bytes(bytes(data))
    result = verify(ref, keyset.root_pub)
    assert result.exit_code == 1
    assert "does not match its digest" in result.output
    # and signing refuses to sign the tampered config
    again = sign(ref, keyset)
    assert again.exit_code == 1 and "does not match its digest" in again.output


def test_config_swapped_under_kept_annotations_fails(server: ServerProcess, keyset: Keys) -> None:
    """Someone with push rights points the signed manifest at another config: detected."""
    push(server, "swap", "1.0")
    ref = f"{server.host}/swap:1.0"
    assert sign(ref, keyset).exit_code == 0
    _raw, manifest = raw_manifest(server, "swap", "1.0")
    evil = json.dumps({**json.loads(make_image(1, seed="evil").config), "os": "evil"}).encode()
    with httpx.Client(base_url=server.url, timeout=30) as c:
        push_blob(c, "swap", evil)
        manifest["config"] = {**manifest["config"], "digest": sha256(evil), "size": len(evil)}
        r = c.put("/v2/swap/manifests/1.0", content=json.dumps(manifest),
                  headers={"Content-Type": manifest["mediaType"]})  # fmt: skip
        assert r.status_code == 201, r.text
    result = verify(ref, keyset.root_pub)
    assert result.exit_code == 1
    assert "config signature does not verify" in result.output


def test_missing_references_are_clear_errors(server: ServerProcess, keyset: Keys) -> None:
    push(server, "present", "1.0")
    for ref, says in [
        (f"{server.host}/present:nope", "does not exist"),
        (f"{server.host}/absent:1.0", "does not exist"),
        (f"{server.host}/present@sha256:{'0' * 64}", "does not exist"),
        ("no-host-here:1.0", "expected HOST[:PORT]/REPOSITORY:TAG"),
        (f"{server.host}/Bad_Repo:1.0", "invalid repository"),
    ]:
        for result in (sign(ref, keyset), verify(ref, keyset.root_pub)):
            assert result.exit_code == 1, result.output
            assert says in result.output, result.output
            assert "Traceback" not in result.output
    both = run("verify-image", "--ref", f"{server.host}/present:1.0", "-r", ".", "-c",
               keyset.root_pub)  # fmt: skip
    assert both.exit_code == 1 and "not both" in both.output
    # an unsigned image does not verify
    unsigned = verify(f"{server.host}/present:1.0", keyset.root_pub)
    assert unsigned.exit_code == 1 and "not signed" in unsigned.output


def test_https_registry_needs_its_ca(keyset: Keys, tmp_path: Path) -> None:
    # the same flow over plain HTTP without --plain-http says what to pass
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
       "-addext", "subjectAltName=IP:127.0.0.1")  # fmt: skip
    srv = ServerProcess(tmp_path / "data", tls=(cert, key)).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30, verify=srv.verify) as c:
            push_image(c, "app", make_image(1, seed="tls"), "1.0")
        ref = f"{srv.host}/app:1.0"
        base = ("sign-image", "--ref", ref, "-v", keyset.vendor_prv, "-x", keyset.root_prv)
        untrusted = run(*base)
        assert untrusted.exit_code == 1 and "cannot reach" in untrusted.output
        signed = run(*base, "--tls-ca", cert)
        assert signed.exit_code == 0, signed.output
        ok = run("verify-image", "--ref", ref, "--tls-ca", cert, "-c", keyset.root_pub)
        assert ok.exit_code == 0, ok.output
        insecure = run("verify-image", "--ref", ref, "--insecure", "-c", keyset.root_pub)
        assert insecure.exit_code == 0, insecure.output
    finally:
        srv.stop()


def test_plain_http_registry_without_flag_says_what_to_pass(
    server: ServerProcess, keyset: Keys
) -> None:
    push(server, "plain", "1.0")
    result = run("verify-image", "--ref", f"{server.host}/plain:1.0", "-c", keyset.root_pub)
    assert result.exit_code == 1 and "--plain-http" in result.output
    # --insecure falls back to plain HTTP, as docker's insecure registries do
    assert sign(f"{server.host}/plain:1.0", keyset).exit_code == 0
    ok = run("verify-image", "--ref", f"{server.host}/plain:1.0", "--insecure", "-c",
             keyset.root_pub)  # fmt: skip
    assert ok.exit_code == 0, ok.output


def test_image_in_index_signed_index_rehashed_tag_moved(
    server: ServerProcess, keyset: Keys, tmp_path: Path
) -> None:
    amd, arm = make_image(1, seed="amd"), make_image(1, seed="arm", arch="arm64")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        push_image(c, "idx", amd)
        push_image(c, "idx", arm)
        index = make_index([(amd, "amd64"), (arm, "arm64")])
        r = c.put("/v2/idx/manifests/multi", content=index,
                  headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})  # fmt: skip
        assert r.status_code == 201, r.text
    ref = f"{server.host}/idx:multi"
    ambiguous = sign(ref, keyset)
    assert ambiguous.exit_code == 1
    assert "index of 2 images" in ambiguous.output and arm.digest in ambiguous.output
    result = sign(f"{ref}@{arm.digest}", keyset)
    assert result.exit_code == 0, result.output
    raw, new_index = raw_manifest(server, "idx", "multi")
    assert "pushed index " + sha256(raw) in result.output
    digests = [d["digest"] for d in new_index["manifests"]]
    assert digests[0] == amd.digest and digests[1] != arm.digest  # only arm was re-signed
    assert new_index["manifests"][1]["platform"]["architecture"] == "arm64"
    ok = verify(f"{ref}@{digests[1]}", keyset.root_pub)
    assert ok.exit_code == 0, ok.output
    assert verify(f"{server.host}/idx@{digests[1]}", keyset.root_pub).exit_code == 0
    unsigned = verify(f"{ref}@{amd.digest}", keyset.root_pub)
    assert unsigned.exit_code == 1
    # every digest of the index and both images holds
    sh("skopeo", "copy", "--all", "--src-tls-verify=false", f"docker://{ref}",
       f"oci:{tmp_path / 'oci'}:multi")  # fmt: skip
    # an index holding one image is signed through its tag alone
    with httpx.Client(base_url=server.url, timeout=30) as c:
        single = make_index([(amd, "amd64")])
        r = c.put("/v2/idx/manifests/single", content=single,
                  headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})  # fmt: skip
        assert r.status_code == 201
    assert sign(f"{server.host}/idx:single", keyset).exit_code == 0
    assert verify(f"{server.host}/idx:single", keyset.root_pub).exit_code == 0


def test_pkcs11_vendor_key_signs_by_ref(
    server: ServerProcess, hsm: Token, keyset: Keys, tmp_path: Path
) -> None:
    push(server, "hsm", "1.0")
    root_pub = tmp_path / "root.pub"
    assert run("extract-public", "-i", hsm.uri("root"), "-o", root_pub).exit_code == 0
    ref = f"{server.host}/hsm:1.0"
    result = run("sign-image", "--ref", ref, "--plain-http", "-v", hsm.uri(), "-x",
                 hsm.uri("root"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert verify(ref, root_pub).exit_code == 0
    assert verify(ref, keyset.root_pub).exit_code == 1
