"""Signing and verifying one image in an OCI layout, ir-sign style.

The vendor signs the config blob (whose diff_ids bind the layers), the signature and the vendor
key's endorsement go into the manifest annotations, and the manifest plus every index above it
are rehashed. Verification needs only the root CA public key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.crypto.ecdsa import Signer, load_public_key, verify_digest
from trustyard.signing import annotations as ann
from trustyard.signing.chain import verify_vendor_key
from trustyard.signing.errors import LayoutError, SigningError
from trustyard.signing.layout import Json, Layout, dumps


@dataclass(frozen=True)
class SignResult:
    old_digest: str
    new_digest: str
    key_id: str
    slot: str


OK, FAIL, SKIP = "ok", "FAIL", "skip"


@dataclass(frozen=True)
class Check:
    """One line of a verification report; 'skip' is a signature made under another root CA."""

    status: str
    text: str


@dataclass
class VerifyReport:
    manifest_digest: str
    checks: list[Check] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)  # key ids whose signature held

    @property
    def ok(self) -> bool:
        return bool(self.verified) and all(c.status != FAIL for c in self.checks)


def check_manifest(manifest: Json, digest: str) -> Json:
    """The config descriptor of an image manifest whose annotations are all strings."""
    config = manifest.get("config")
    if not isinstance(config, dict):
        raise LayoutError(f"manifest {digest} has no config descriptor")
    annotations = manifest.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise LayoutError(f"manifest {digest} has malformed annotations")
    return config


def _load_manifest(layout: Layout, reference: str) -> tuple[Json, Json, Json]:
    desc = layout.resolve(reference)
    manifest = layout.read_json(desc)
    return desc, manifest, check_manifest(manifest, desc["digest"])


def sign_manifest(
    manifest: Json,
    config_sha384: bytes,
    vendor: Signer,
    endorsement: bytes,
    *,
    additional: bool = False,
) -> tuple[Json, ann.VendorSignature, str]:
    """A copy of `manifest` carrying the vendor's signature over the config (SHA-384 given).

    Returns (new manifest, the signature, the slot it went to: 'ir-sign' or 'extra <keyid>').
    """
    sig = ann.VendorSignature(
        config_signature=vendor.sign_digest(config_sha384),
        vendor_pub=vendor.public_key_der(),
        vendor_pub_signature=endorsement,
    )
    signed = dict(manifest)
    signed["annotations"] = ann.add_signature(
        manifest.get("annotations") or {}, sig, additional=additional
    )
    slot = (
        "ir-sign"
        if signed["annotations"].get(ann.VENDORPUB) == sig.vendor_pub.hex()
        else f"extra {sig.key_id}"
    )
    return signed, sig, slot


def sign_image(
    layout_dir: Path,
    reference: str,
    vendor: Signer,
    endorsement: bytes,
    *,
    additional: bool = False,
) -> SignResult:
    """Sign the config of the manifest `reference` names; rewrite manifest and indexes.

    The config is verified against its digest before it is signed, so a tampered config is never
    signed. `endorsement` is the root CA's signature over the vendor key (see chain.py).
    """
    layout = Layout(layout_dir)
    desc, manifest, config = _load_manifest(layout, reference)
    config_sha384 = layout.hash_blob(config, "sha384")
    signed, sig, slot = sign_manifest(
        manifest, config_sha384, vendor, endorsement, additional=additional
    )
    new_digest = layout.replace_manifest(desc["digest"], dumps(signed))
    return SignResult(desc["digest"], new_digest, sig.key_id, slot)


def verify_image(
    layout_dir: Path, reference: str, root_pub: ec.EllipticCurvePublicKey
) -> VerifyReport:
    """Check digests and every signature slot; a slot from another root is reported, not fatal.

    The image verifies when its digests hold, at least one signature chains to `root_pub`, and
    every signature that chains to `root_pub` also verifies over the config.
    """
    layout = Layout(layout_dir)
    desc, manifest, config = _load_manifest(layout, reference)
    return verify_manifest(
        desc["digest"], manifest, config, lambda: layout.hash_blob(config, "sha384"), root_pub
    )


def verify_manifest(
    manifest_digest: str,
    manifest: Json,
    config: Json,
    config_sha384: Callable[[], bytes],
    root_pub: ec.EllipticCurvePublicKey,
) -> VerifyReport:
    """The checks of `verify_image` on a manifest already checked against `manifest_digest`.

    `config_sha384` reads the config blob, checks it against `config` (digest and size; raising
    `SigningError` when it does not match) and returns its SHA-384.
    """
    report = VerifyReport(manifest_digest)
    report.checks.append(Check(OK, f"manifest {manifest_digest} matches its digest"))
    try:
        config_hash = config_sha384()
    except SigningError as exc:
        report.checks.append(Check(FAIL, f"config: {exc}"))
        return report
    report.checks.append(Check(OK, f"config {config['digest']} matches the manifest"))
    annotations: dict[str, str] = manifest.get("annotations") or {}
    found = ann.slots(annotations)
    if not found:
        report.checks.append(
            Check(FAIL, f"manifest has no {ann.SIGNATURE} annotation: the image is not signed")
        )
    for slot in found:
        _verify_slot(report, annotations, slot, config_hash, root_pub)
    if found and not report.verified:
        report.checks.append(Check(FAIL, "no signature on this image is endorsed by this root CA"))
    return report


def _verify_slot(
    report: VerifyReport,
    annotations: dict[str, str],
    slot: ann.Slot,
    config_sha384: bytes,
    root_pub: ec.EllipticCurvePublicKey,
) -> None:
    try:
        sig = ann.read_slot(annotations, slot)
        if slot is not ann.PRIMARY and slot.label != f"extra {sig.key_id}":
            raise SigningError(f"its name does not match vendor key {sig.key_id}")
        vendor_pub = load_public_key(sig.vendor_pub, "vendor key")
    except SigningError as exc:
        report.checks.append(Check(FAIL, f"[{slot.label}] malformed signature: {exc}"))
        return
    try:
        verify_vendor_key(root_pub, sig.vendor_pub, sig.vendor_pub_signature, "")
    except SigningError:
        report.checks.append(
            Check(SKIP, f"[{slot.label}] vendor key {sig.key_id} is not endorsed by this root CA")
        )
        return
    report.checks.append(
        Check(OK, f"[{slot.label}] vendor key {sig.key_id} is endorsed by the root CA")
    )
    try:
        verify_digest(vendor_pub, sig.config_signature, config_sha384, "config signature")
    except SigningError:
        report.checks.append(
            Check(FAIL, f"[{slot.label}] config signature does not verify with {sig.key_id}")
        )
        return
    report.checks.append(
        Check(OK, f"[{slot.label}] config signature verifies with vendor key {sig.key_id}")
    )
    report.verified.append(sig.key_id)
