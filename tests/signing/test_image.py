"""sign-image / verify-image on OCI layouts, checked with openssl, umoci and skopeo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trustyard.signing import annotations as ann
from trustyard.signing.layout import Layout, dumps

from .helpers import Keys, Unchanged, blob, manifest_of, read_json, run, sh

SIG, PUB, PUBSIG = ann.SIGNATURE, ann.VENDORPUB, ann.VENDORPUB_SIGNATURE


def realistic(registry: Path, keyset: Keys, tag: str = "1.0", *extra: str) -> object:
    return run(
        "sign-image",
        "-r",
        registry,
        "-a",
        "app",
        "-d",
        tag,
        "-v",
        keyset.vendor_prv,
        "-s",
        keyset.vendor_pub_sig,
        "-c",
        keyset.root_pub,
        *extra,
    )


def verify(registry: Path, root: Path, tag: str = "1.0") -> object:
    return run("verify-image", "-r", registry, "-a", "app", "-d", tag, "-c", root)


def assert_tools_accept(layout: Path, tag: str, tmp: Path) -> None:
    """umoci and skopeo re-read every digest of the image: the layout is still valid."""
    sh("umoci", "stat", "--image", f"{layout}:{tag}")
    sh("umoci", "unpack", "--rootless", "--image", f"{layout}:{tag}", tmp / f"bundle-{tag}")
    sh("skopeo", "copy", f"oci:{layout}:{tag}", f"oci:{tmp / 'copy'}:{tag}")
    assert (tmp / f"bundle-{tag}" / "rootfs" / f"{tag}.txt").exists()


def test_realistic_flow_writes_ir_sign_annotations(
    registry: Path, keyset: Keys, tmp_path: Path
) -> None:
    layout = registry / "app"
    old_desc, old_manifest = manifest_of(layout, "1.0")
    other_before = manifest_of(layout, "2.0")[0]
    result = realistic(registry, keyset)
    assert result.exit_code == 0, result.output
    desc, manifest = manifest_of(layout, "1.0")
    assert desc["digest"] != old_desc["digest"]
    assert desc["size"] == blob(layout, desc["digest"]).stat().st_size
    a = manifest["annotations"]
    assert bytes.fromhex(a[PUB]) == keyset.vendor_pub.read_bytes()
    assert bytes.fromhex(a[PUBSIG]) == keyset.vendor_pub_sig.read_bytes()
    assert manifest["config"] == old_manifest["config"]
    assert manifest["layers"] == old_manifest["layers"]
    # the old manifest blob is gone, the other image is untouched
    assert not blob(layout, old_desc["digest"]).exists()
    assert manifest_of(layout, "2.0")[0] == other_before
    # verify the config signature by hand with openssl, as docs/signing.md shows
    sig = tmp_path / "config.sig"
    sig.write_bytes(bytes.fromhex(a[SIG]))
    config = blob(layout, manifest["config"]["digest"])
    out = sh(
        "openssl",
        "dgst",
        "-sha384",
        "-verify",
        keyset.vendor_pub,
        "-keyform",
        "DER",
        "-signature",
        sig,
        config,
    )
    assert out.strip() == b"Verified OK"
    assert_tools_accept(layout, "1.0", tmp_path)
    result = verify(registry, keyset.root_pub)
    assert result.exit_code == 0, result.output
    assert "ok   [ir-sign] config signature verifies" in result.output
    assert "ok   config sha256:" in result.output


def test_simplified_flow_creates_the_vendor_key_signature(registry: Path, keyset: Keys) -> None:
    result = run(
        "sign-image",
        "-r",
        registry,
        "-a",
        "app",
        "-d",
        "2.0",
        "-v",
        keyset.vendor_prv,
        "-x",
        keyset.root_prv,
    )
    assert result.exit_code == 0, result.output
    a = manifest_of(registry / "app", "2.0")[1]["annotations"]
    pubsig = registry / "pubsig"
    pubsig.write_bytes(bytes.fromhex(a[PUBSIG]))
    out = sh(
        "openssl",
        "dgst",
        "-sha384",
        "-verify",
        keyset.root_pub,
        "-keyform",
        "DER",
        "-signature",
        pubsig,
        keyset.vendor_pub,
    )
    assert out.strip() == b"Verified OK"
    pubsig.unlink()
    assert verify(registry, keyset.root_pub, "2.0").exit_code == 0


def test_sign_by_digest_and_resign_is_idempotent_in_shape(registry: Path, keyset: Keys) -> None:
    digest = manifest_of(registry / "app", "1.0")[0]["digest"]
    assert realistic(registry, keyset, digest).exit_code == 0
    assert realistic(registry, keyset).exit_code == 0  # re-sign: replaces, does not add
    a = manifest_of(registry / "app", "1.0")[1]["annotations"]
    assert not [k for k in a if k.startswith(ann.EXTRA_PREFIX)]
    assert verify(registry, keyset.root_pub).exit_code == 0


def test_signing_never_reads_layers(registry: Path, keyset: Keys) -> None:
    layout = registry / "app"
    layer = blob(layout, manifest_of(layout, "1.0")[1]["layers"][0]["digest"])
    layer.write_bytes(b"\0" * layer.stat().st_size)  # same size, wrong content
    result = realistic(registry, keyset)
    assert result.exit_code == 0, result.output  # had it hashed the layer, it would refuse


def test_vendor_signature_by_another_root_is_refused(
    registry: Path, keyset: Keys, unchanged: Unchanged
) -> None:
    result = run(
        "sign-image",
        "-r",
        registry,
        "-a",
        "app",
        "-d",
        "1.0",
        "-v",
        keyset.vendor_prv,
        "-s",
        keyset.vendor_pub_othersig,
        "-c",
        keyset.root_pub,
    )
    assert result.exit_code == 1
    assert "not a signature of this root CA over vendor key" in result.output
    unchanged()


def test_both_or_neither_scenario_is_refused(
    registry: Path, keyset: Keys, unchanged: Unchanged
) -> None:
    result = run(
        "sign-image",
        "-r",
        registry,
        "-a",
        "app",
        "-d",
        "1.0",
        "-v",
        keyset.vendor_prv,
        "-s",
        keyset.vendor_pub_sig,
    )
    assert result.exit_code == 1 and "-s SIG -c PUB" in result.output
    unchanged()


def test_tampered_config_is_neither_signed_nor_verified(
    registry: Path, keyset: Keys, unchanged: Unchanged
) -> None:
    layout = registry / "app"
    config = blob(layout, manifest_of(layout, "1.0")[1]["config"]["digest"])
    original = config.read_bytes()
    config.write_bytes(
        original.replace(b"amd64", b"arm64") if b"amd64" in original else original + b" "
    )
    result = realistic(registry, keyset)
    assert result.exit_code == 1
    assert "does not match its digest (tampered or corrupt)" in result.output
    config.write_bytes(original)
    unchanged()
    # signed first, tampered afterwards: verification catches it
    assert realistic(registry, keyset).exit_code == 0
    config.write_bytes(original + b" ")
    result = verify(registry, keyset.root_pub)
    assert result.exit_code == 1
    assert "FAIL config:" in result.output and "does not verify" in result.output


def test_tampered_annotation_is_caught(registry: Path, keyset: Keys) -> None:
    assert realistic(registry, keyset).exit_code == 0
    layout = registry / "app"
    desc, manifest = manifest_of(layout, "1.0")
    path = blob(layout, desc["digest"])
    sig = bytearray(bytes.fromhex(manifest["annotations"][SIG]))
    sig[-1] ^= 1
    manifest["annotations"][SIG] = sig.hex()
    # naive tamper: the manifest no longer matches its digest
    path.write_bytes(dumps(manifest))
    result = verify(registry, keyset.root_pub)
    assert result.exit_code == 1 and "does not match its digest" in result.output
    # careful tamper: digests fixed up, the signature itself fails
    path.unlink()
    Layout(layout).replace_manifest(desc["digest"], dumps(manifest))
    result = verify(registry, keyset.root_pub)
    assert result.exit_code == 1
    assert "FAIL [ir-sign] config signature does not verify" in result.output
    # a swapped vendor key is not endorsed by the root
    manifest["annotations"][SIG] = bytes(sig[:-1] + bytes([sig[-1] ^ 1])).hex()
    manifest["annotations"][PUB] = keyset.qa_pub.read_bytes().hex()
    cur = manifest_of(layout, "1.0")[0]["digest"]
    Layout(layout).replace_manifest(cur, dumps(manifest))
    result = verify(registry, keyset.root_pub)
    assert result.exit_code == 1
    assert "is not endorsed by this root CA" in result.output
    # broken hex
    manifest["annotations"][PUB] = "zz"
    Layout(layout).replace_manifest(manifest_of(layout, "1.0")[0]["digest"], dumps(manifest))
    result = verify(registry, keyset.root_pub)
    assert result.exit_code == 1 and "is not hex-encoded DER" in result.output


def test_nonexistent_reference(registry: Path, keyset: Keys, unchanged: Unchanged) -> None:
    result = realistic(registry, keyset, "3.0")
    assert result.exit_code == 1
    assert "'3.0' names no manifest" in result.output and "tags: 1.0, 2.0" in result.output
    result = realistic(registry, keyset, "sha256:" + "0" * 64)
    assert result.exit_code == 1 and "names no manifest" in result.output
    result = run("verify-image", "-r", registry, "-a", "nope", "-d", "1.0", "-c", keyset.root_pub)
    assert result.exit_code == 1 and "is not a directory" in result.output
    unchanged()


def test_unsigned_image_and_wrong_root_fail_verification(registry: Path, keyset: Keys) -> None:
    result = verify(registry, keyset.root_pub, "2.0")
    assert result.exit_code == 1 and "the image is not signed" in result.output
    assert realistic(registry, keyset).exit_code == 0
    result = verify(registry, keyset.otherroot_pub)
    assert result.exit_code == 1
    assert "no signature on this image is endorsed by this root CA" in result.output


def test_several_signatures_each_verifiable_on_its_own(
    registry: Path, keyset: Keys, tmp_path: Path
) -> None:
    assert realistic(registry, keyset).exit_code == 0
    primary = manifest_of(registry / "app", "1.0")[1]["annotations"][SIG]
    result = run(
        "sign-image",
        "-r",
        registry,
        "-a",
        "app",
        "-d",
        "1.0",
        "-v",
        keyset.qa_prv,
        "-s",
        keyset.qa_pub_sig,
        "-c",
        keyset.qaroot_pub,
        "--add",
    )
    assert result.exit_code == 0, result.output
    a = manifest_of(registry / "app", "1.0")[1]["annotations"]
    assert a[SIG] == primary  # ir-sign's slot keeps the vendor signature
    kid = sh("sha256sum", keyset.qa_pub).decode()[:16]
    assert bytes.fromhex(a[f"{ann.EXTRA_PREFIX}{kid}.vendorpub"]) == keyset.qa_pub.read_bytes()
    ok_vendor = verify(registry, keyset.root_pub)
    ok_qa = verify(registry, keyset.qaroot_pub)
    assert ok_vendor.exit_code == 0 and ok_qa.exit_code == 0, ok_qa.output
    assert f"ok   [extra {kid}] config signature verifies" in ok_qa.output
    assert f"skip [extra {kid}]" in ok_vendor.output
    assert verify(registry, keyset.otherroot_pub).exit_code == 1
    assert_tools_accept(registry / "app", "1.0", tmp_path)
    # a broken extra signature fails verification under its own root only
    layout = registry / "app"
    desc, manifest = manifest_of(layout, "1.0")
    key = f"{ann.EXTRA_PREFIX}{kid}.signature"
    manifest["annotations"][key] = manifest["annotations"][SIG]
    Layout(layout).replace_manifest(desc["digest"], dumps(manifest))
    assert verify(registry, keyset.root_pub).exit_code == 0
    bad = verify(registry, keyset.qaroot_pub)
    assert bad.exit_code == 1 and f"FAIL [extra {kid}]" in bad.output


def test_index_with_several_manifests_signs_only_the_one_asked(
    registry: Path, keyset: Keys
) -> None:
    layout = registry / "app"
    before = read_json(layout / "index.json")["manifests"]
    assert len(before) == 2
    assert realistic(registry, keyset, "2.0").exit_code == 0
    after = read_json(layout / "index.json")["manifests"]
    assert after[0] == before[0]  # 1.0 untouched
    assert after[1]["digest"] != before[1]["digest"]
    assert after[1]["annotations"] == before[1]["annotations"]
    assert verify(registry, keyset.root_pub, "2.0").exit_code == 0
    assert verify(registry, keyset.root_pub, "1.0").exit_code == 1


def test_nested_index_is_rehashed_up_to_index_json(
    registry: Path, keyset: Keys, tmp_path: Path
) -> None:
    """index.json → image index blob → manifest: both the manifest and the index are rehashed."""
    layout = registry / "app"
    desc = dict(manifest_of(layout, "1.0")[0])
    desc.pop("annotations")
    desc["platform"] = {"os": "linux", "architecture": "amd64"}
    inner = dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [desc],
        }
    )
    inner_digest = Layout(layout)._put_blob(inner, [])
    index = read_json(layout / "index.json")
    index["manifests"] = [
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": inner_digest,
            "size": len(inner),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }
    ]
    (layout / "index.json").write_bytes(dumps(index))
    result = realistic(registry, keyset, "multi")
    assert result.exit_code == 0, result.output
    top = read_json(layout / "index.json")["manifests"][0]
    assert top["digest"] != inner_digest
    assert not blob(layout, inner_digest).exists()
    new_inner = read_json(blob(layout, top["digest"]))
    assert new_inner["manifests"][0]["digest"] != desc["digest"]
    assert new_inner["manifests"][0]["platform"] == desc["platform"]
    assert verify(registry, keyset.root_pub, "multi").exit_code == 0
    signed = new_inner["manifests"][0]["digest"]
    assert verify(registry, keyset.root_pub, signed).exit_code == 0
    sh("skopeo", "copy", "--all", f"oci:{layout}:multi", f"oci:{tmp_path / 'copy'}:multi")


def test_index_of_several_images_asks_for_a_digest(
    registry: Path, keyset: Keys, unchanged: Unchanged
) -> None:
    layout = registry / "app"
    descs = [
        dict(manifest_of(layout, t)[0], platform={"os": "linux", "architecture": a})
        for t, a in (("1.0", "amd64"), ("2.0", "arm64"))
    ]
    inner = dumps({"schemaVersion": 2, "manifests": descs})
    lay = Layout(layout)
    digest = lay._put_blob(inner, [])
    index = read_json(layout / "index.json")
    index["manifests"].append(
        {
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": len(inner),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }
    )
    (layout / "index.json").write_bytes(dumps(index))
    guard_before = json.dumps(read_json(layout / "index.json"))
    result = realistic(registry, keyset, "multi")
    assert result.exit_code == 1
    assert "index of 2 images; pass one digest with -d" in result.output
    assert "linux/arm64" in result.output
    assert json.dumps(read_json(layout / "index.json")) == guard_before


def test_failure_before_index_switch_leaves_layout_unchanged(
    registry: Path, keyset: Keys, unchanged: Unchanged, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trustyard.signing.layout as layout_mod

    real = layout_mod.write_atomic

    def failing(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name == "index.json":
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(layout_mod, "write_atomic", failing)
    with pytest.raises(OSError):
        Layout(registry / "app").replace_manifest(
            manifest_of(registry / "app", "1.0")[0]["digest"], b'{"schemaVersion":2}'
        )
    unchanged()


def test_ir_sign_style_image_signed_by_hand_verifies(
    registry: Path, keyset: Keys, tmp_path: Path
) -> None:
    """An image annotated with openssl-made signatures (what ir-sign writes) verifies."""
    layout = registry / "app"
    desc, manifest = manifest_of(layout, "1.0")
    sig = tmp_path / "config.sig"
    sh(
        "openssl",
        "dgst",
        "-sha384",
        "-sign",
        keyset.vendor_prv,
        "-keyform",
        "DER",
        "-out",
        sig,
        blob(layout, manifest["config"]["digest"]),
    )
    manifest["annotations"] = {
        SIG: sig.read_bytes().hex(),
        PUB: keyset.vendor_pub.read_bytes().hex(),
        PUBSIG: keyset.vendor_pub_sig.read_bytes().hex(),
    }
    blob(layout, desc["digest"]).unlink()
    Layout(layout).replace_manifest(desc["digest"], json.dumps(manifest, indent=2).encode())
    result = verify(registry, keyset.root_pub)
    assert result.exit_code == 0, result.output
