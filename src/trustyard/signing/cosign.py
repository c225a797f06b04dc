"""cosign / sigstore signature formats, key-based (no Fulcio, no Rekor: there is no network here).

Three shapes, all over the same claim (the image's manifest digest):

- tag scheme: an OCI manifest tagged `sha256-<hex>.sig` whose layers are simple-signing payloads
  (`application/vnd.dev.cosign.simplesigning.v1+json`) with the base64 DER ECDSA signature in the
  layer annotation `dev.cosignproject.cosign/signature`;
- OCI 1.1 referrer: the same layers in a manifest with `artifactType`/config media type
  `application/vnd.dev.cosign.artifact.sig.v1+json` and a `subject`;
- sigstore bundle v0.3 (cosign v3): a referrer with `artifactType
  application/vnd.dev.sigstore.bundle.v0.3+json` whose one layer is the bundle JSON: a DSSE
  envelope around an in-toto statement naming the image digest (predicate
  `https://sigstore.dev/cosign/sign/v1`).

Hash: cosign records no scheme. We follow the curve, as sigstore's algorithm registry does
(P-256 → SHA-256, P-384 → SHA-384, P-521 → SHA-512); `hash_override` verifies signatures made
with another hash (cosign's `--signature-digest-algorithm`), e.g. a P-384 key used by cosign's
SHA-256 default (sigstore/cosign#5091).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from trustyard.oci import jsonbounds
from trustyard.signing.errors import KeyFormatError, SignatureFormatError, VerificationError
from trustyard.signing.simplesign import COSIGN_TYPE, check_matches, make_payload, parse_payload

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ARTIFACT_SIG = "application/vnd.dev.cosign.artifact.sig.v1+json"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
INTOTO = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
PREDICATE_SIGN = "https://sigstore.dev/cosign/sign/v1"
SIG_ANNOTATION = "dev.cosignproject.cosign/signature"
CERT_ANNOTATIONS = ("dev.sigstore.cosign/certificate", "dev.cosignproject.cosign/certificate")
BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"
TIMESTAMP_ANNOTATION = "dev.sigstore.cosign/rfc3161timestamp"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
EMPTY_JSON = b"{}"
ENCRYPTED_LABELS = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_CURVE_HASH = {"secp256r1": "sha256", "secp384r1": "sha384", "secp521r1": "sha512"}
MAX_BUNDLE = 1 << 20

Json = dict[str, Any]


# -- keys --------------------------------------------------------------------------------------
def _check_curve(key: object, source: str) -> None:
    if not isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        raise KeyFormatError(f"{source}: not an ECDSA key (cosign keys here are P-256 or P-384)")
    if key.curve.name not in _CURVE_HASH:
        raise KeyFormatError(f"{source}: curve {key.curve.name} is not supported")


def _pem_body(data: bytes, label: str) -> bytes | None:
    begin, end = f"-----BEGIN {label}-----".encode(), f"-----END {label}-----".encode()
    if begin not in data:
        return None
    body = data.split(begin, 1)[1].split(end, 1)[0]
    try:
        return base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error:
        raise KeyFormatError(f"{label} block is not base64") from None


def decrypt_cosign_key(blob: bytes, password: bytes, source: str) -> bytes:
    """cosign's encrypted key: JSON {kdf: scrypt(N,r,p,salt), cipher: nacl/secretbox(nonce)}."""
    import nacl.exceptions
    import nacl.secret

    try:
        doc = json.loads(blob)
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise KeyFormatError(f"{source}: unsupported kdf/cipher {kdf['name']}/{cipher['name']}")
        params = kdf["params"]
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
        salt = base64.b64decode(kdf["salt"])
        nonce = base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(doc["ciphertext"])
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise KeyFormatError(f"{source}: malformed cosign encrypted key ({exc})") from None
    if n > 1 << 20 or r > 16 or p > 16:
        raise KeyFormatError(f"{source}: scrypt parameters N={n} r={r} p={p} are unreasonable")
    secret = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 << 20)
    try:
        return bytes(nacl.secret.SecretBox(secret).decrypt(ciphertext, nonce))
    except (nacl.exceptions.CryptoError, ValueError):
        raise KeyFormatError(
            f"{source}: wrong password for the cosign key (COSIGN_PASSWORD) or corrupt key"
        ) from None


def encrypt_cosign_key(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """Write a key the way `cosign generate-key-pair` does (scrypt N=32768 r=8 p=1, secretbox)."""
    import nacl.secret

    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt, nonce = os.urandom(32), os.urandom(24)
    secret = hashlib.scrypt(password, salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=256 << 20)
    ciphertext = nacl.secret.SecretBox(secret).encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": 32768, "r": 8, "p": 1},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    body = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    label = ENCRYPTED_LABELS[0]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


def load_private_key(
    data: bytes, password: bytes | None, source: str
) -> ec.EllipticCurvePrivateKey:
    """A cosign encrypted key, or a PEM/DER (PKCS#8 or SEC1) EC private key."""
    der = None
    for label in ENCRYPTED_LABELS:
        blob = _pem_body(data, label)
        if blob is not None:
            der = decrypt_cosign_key(blob, password or b"", source)
            break
    try:
        if der is not None:
            key = serialization.load_der_private_key(der, None)
        elif b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password or None)
        else:
            key = serialization.load_der_private_key(data, password or None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(
            f"{source}: not a cosign, PEM or DER EC private key ({str(exc)[:120]})"
        ) from None
    _check_curve(key, source)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def load_public_key(data: bytes, source: str) -> ec.EllipticCurvePublicKey:
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(f"{source}: not a PEM/DER public key ({str(exc)[:120]})") from None
    _check_curve(key, source)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """How we name a key in listings: sha256 of its SPKI DER (the bundle `hint` too)."""
    return "sha256:" + hashlib.sha256(spki_der(key)).hexdigest()


def hash_name(curve_name: str, override: str | None) -> str:
    if override is not None:
        if override not in _HASHES:
            raise VerificationError(f"unknown hash {override!r}: use sha256, sha384 or sha512")
        return override
    return _CURVE_HASH[curve_name]


class CosignSigner(Protocol):
    """An ECDSA signer: a key in memory or a PKCS#11 token."""

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign(self, data: bytes) -> bytes:
        """DER ECDSA signature over hash(data), the hash following the curve."""
        ...


class KeySigner:
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        name = hash_name(self._key.curve.name, None)
        return self._key.sign(data, ec.ECDSA(_HASHES[name]()))


class DigestSigner(Protocol):
    def public_key_der(self) -> bytes: ...

    def sign_digest(self, digest: bytes) -> bytes: ...


class TokenSigner:
    """Adapts a signer over precomputed digests (pkcs11.Pkcs11Signer: P-256 signs SHA-256
    digests, P-384 SHA-384 ones, as cosign and JWS ES256/ES384 pair them)."""

    def __init__(self, signer: DigestSigner) -> None:
        self._signer = signer
        self._public = load_public_key(signer.public_key_der(), "PKCS#11 token key")

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        name = hash_name(self._public.curve.name, None)
        return self._signer.sign_digest(hashlib.new(name, data).digest())


def verify_signature(
    key: ec.EllipticCurvePublicKey, data: bytes, signature: bytes, override: str | None
) -> None:
    name = hash_name(key.curve.name, override)
    try:
        key.verify(
            signature, hashlib.new(name, data).digest(), ec.ECDSA(Prehashed(_HASHES[name]()))
        )
    except InvalidSignature:
        hint = ""
        if override is None and name != "sha256":
            hint = (
                f" (verified with {name}, as {key.curve.name} implies; cosign's default is sha256)"
            )
        raise VerificationError(f"signature does not verify with this key{hint}") from None
    except ValueError as exc:  # not DER
        raise SignatureFormatError(f"signature is not DER ECDSA ({exc})") from None


def b64decode_strict(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise SignatureFormatError(f"{what} is missing")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureFormatError(f"{what} is not valid base64 (tampered?)") from None


# -- building ---------------------------------------------------------------------------------
def _desc(media_type: str, data: bytes, annotations: dict[str, str] | None = None) -> Json:
    d: Json = {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    if annotations:
        d["annotations"] = annotations
    return d


def _dumps(doc: Json) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class Artifact:
    """A signature artifact to push: blobs first, then the manifest (by tag or digest)."""

    blobs: list[bytes]
    manifest: bytes
    tag: str | None = None

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()


def signature_layer(signer: CosignSigner, identity: str, digest: str) -> tuple[bytes, Json]:
    payload = make_payload(identity, digest, COSIGN_TYPE)
    sig = base64.b64encode(signer.sign(payload)).decode()
    return payload, _desc(SIMPLESIGNING, payload, {SIG_ANNOTATION: sig})


def tag_artifact(
    signer: CosignSigner, identity: str, digest: str, existing: Json | None
) -> Artifact:
    """`sha256-<hex>.sig`: keep the layers already there, add ours (as cosign appends)."""
    payload, layer = signature_layer(signer, identity, digest)
    # Every signer signs the same payload, so layers share a digest: only an identical
    # signature (same annotations) is a duplicate, as in cosign.
    layers = [
        layer_
        for layer_ in (existing or {}).get("layers", [])
        if isinstance(layer_, dict)
        and (layer_.get("digest"), layer_.get("annotations"))
        != (layer["digest"], layer.get("annotations"))
    ] + [layer]
    config = _dumps(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]},
        }
    )
    manifest = _dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _desc(OCI_CONFIG, config),
            "layers": layers,
        }
    )
    algorithm, hexpart = digest.split(":", 1)
    return Artifact([payload, config], manifest, f"{algorithm}-{hexpart}.sig")


def referrer_artifact(signer: CosignSigner, identity: str, subject: Json) -> Artifact:
    payload, layer = signature_layer(signer, identity, subject["digest"])
    manifest = _dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": ARTIFACT_SIG,
            "config": _desc(ARTIFACT_SIG, EMPTY_JSON),
            "layers": [layer],
            "subject": subject,
        }
    )
    return Artifact([payload, EMPTY_JSON], manifest)


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def make_bundle(signer: CosignSigner, identity: str, digest: str) -> bytes:
    algorithm, hexpart = digest.split(":", 1)
    statement = _dumps(
        {
            "_type": STATEMENT_V1,
            "subject": [{"name": identity, "digest": {algorithm: hexpart}}],
            "predicateType": PREDICATE_SIGN,
            "predicate": {},
        }
    )
    signature = signer.sign(pae(INTOTO, statement))
    bundle = {
        "mediaType": BUNDLE_V03,
        "verificationMaterial": {
            "publicKey": {"hint": key_id(signer.public_key())},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": base64.b64encode(statement).decode(),
            "payloadType": INTOTO,
            "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
        },
    }
    return _dumps(bundle)


def bundle_artifact(signer: CosignSigner, identity: str, subject: Json) -> Artifact:
    bundle = make_bundle(signer, identity, subject["digest"])
    manifest = _dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE_V03,
            "config": _desc(OCI_EMPTY, EMPTY_JSON),
            "layers": [_desc(BUNDLE_V03, bundle)],
            "subject": subject,
            "annotations": {
                CONTENT_ANNOTATION: "dsse-envelope",
                PREDICATE_ANNOTATION: PREDICATE_SIGN,
            },
        }
    )
    return Artifact([bundle, EMPTY_JSON], manifest)


# -- verifying --------------------------------------------------------------------------------
@dataclass
class Check:
    """One signature's verdict: verified, failed (with why) or unverifiable (with what is missing)."""

    status: str
    signer: str = "unknown"
    reason: str = ""
    notes: list[str] = field(default_factory=list)


def _try_keys(
    keys: list[ec.EllipticCurvePublicKey], data: bytes, signature: bytes, override: str | None
) -> tuple[ec.EllipticCurvePublicKey | None, str]:
    last = "no trusted key given"
    for key in keys:
        try:
            verify_signature(key, data, signature, override)
            return key, ""
        except VerificationError as exc:
            last = str(exc)
    if len(keys) > 0 and "does not verify" in last and len(keys) > 1:
        last = "signed by none of the trusted keys"
    return None, last


def check_simplesigning(
    payload: bytes,
    annotations: Json,
    keys: list[ec.EllipticCurvePublicKey],
    digest: str,
    override: str | None = None,
) -> Check:
    """A cosign simple-signing layer (tag scheme or referrer) against trusted keys."""
    notes = []
    if any(a in annotations for a in CERT_ANNOTATIONS):
        notes.append("carries a Fulcio certificate: keyless verification is out of scope")
    if BUNDLE_ANNOTATION in annotations:
        notes.append("carries a Rekor bundle: the transparency log is not checked (offline)")
    if TIMESTAMP_ANNOTATION in annotations:
        notes.append("carries an RFC 3161 timestamp: not checked")
    try:
        signature = b64decode_strict(
            annotations.get(SIG_ANNOTATION), f"annotation {SIG_ANNOTATION}"
        )
        parsed = parse_payload(payload, COSIGN_TYPE)
        check_matches(parsed, digest)
    except (SignatureFormatError, VerificationError) as exc:
        return Check("failed", reason=str(exc), notes=notes)
    if not keys:
        return Check("unverifiable", reason="no trusted key given", notes=notes)
    key, why = _try_keys(keys, payload, signature, override)
    if key is None:
        return Check("failed", reason=why, notes=notes)
    return Check("verified", key_id(key), notes=notes)


def check_bundle(
    data: bytes,
    keys: list[ec.EllipticCurvePublicKey],
    digest: str,
    override: str | None = None,
) -> Check:
    """A sigstore bundle v0.3 (DSSE in-toto statement or message signature) against keys."""
    if len(data) > MAX_BUNDLE:
        return Check("failed", reason=f"bundle is over the {MAX_BUNDLE} byte limit")
    try:
        bundle = jsonbounds.loads(data, what="bundle")
        if not isinstance(bundle, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        return Check("failed", reason=f"bundle is not JSON ({exc})")
    notes: list[str] = []
    if not str(bundle.get("mediaType", "")).startswith("application/vnd.dev.sigstore.bundle"):
        return Check(
            "failed", reason=f"not a sigstore bundle (mediaType {bundle.get('mediaType')!r})"
        )
    signer = _bundle_signer(bundle.get("verificationMaterial") or {}, notes)
    try:
        if "dsseEnvelope" in bundle:
            signed, signature = _dsse_signed(bundle["dsseEnvelope"], digest)
        elif "messageSignature" in bundle:
            ms = bundle["messageSignature"]
            signature = b64decode_strict(ms.get("signature"), "messageSignature.signature")
            md = ms.get("messageDigest") or {}
            expected = bytes.fromhex(digest.split(":", 1)[1])
            if b64decode_strict(md.get("digest"), "messageDigest.digest") != expected:
                raise VerificationError(f"bundle message digest is not {digest}")
            return _message_check(keys, expected, signature, override, signer, notes)
        else:
            raise SignatureFormatError("bundle has neither dsseEnvelope nor messageSignature")
    except (SignatureFormatError, VerificationError) as exc:
        return Check("failed", signer, str(exc), notes)
    except (ValueError, AttributeError, TypeError) as exc:
        return Check("failed", signer, f"malformed bundle ({exc})", notes)
    if not keys:
        return Check("unverifiable", signer, "no trusted key given", notes)
    key, why = _try_keys(keys, signed, signature, override)
    if key is None:
        status = "unverifiable" if signer == "certificate" else "failed"
        return Check(status, signer, why, notes)
    return Check("verified", key_id(key), notes=notes)


def _bundle_signer(material: object, notes: list[str]) -> str:
    """Who the bundle's verificationMaterial says signed it; notes what we do not check."""
    signer = "unknown"
    if isinstance(material, dict):
        if material.get("tlogEntries"):
            notes.append("has transparency log entries: not checked (offline, no Rekor)")
        if material.get("timestampVerificationData"):
            notes.append("has RFC 3161 timestamps: not checked")
        hint = (
            (material.get("publicKey") or {}).get("hint")
            if isinstance(material.get("publicKey"), dict)
            else None
        )
        if hint:
            signer = str(hint)
        if material.get("certificate") or material.get("x509CertificateChain"):
            notes.append("signed with a Fulcio certificate: keyless verification is out of scope")
            signer = "certificate"
    return signer


def _dsse_signed(env: Any, digest: str) -> tuple[bytes, bytes]:
    """The DSSE envelope's signed bytes (PAE) and first signature, once its in-toto statement
    names `digest` among its subjects."""
    body = b64decode_strict(env.get("payload"), "dsseEnvelope.payload")
    payload_type = env.get("payloadType")
    if payload_type != INTOTO:
        raise SignatureFormatError(f"DSSE payloadType {payload_type!r} is not in-toto")
    sigs = env.get("signatures") or []
    if not isinstance(sigs, list) or not sigs:
        raise SignatureFormatError("DSSE envelope has no signatures")
    signature = b64decode_strict(sigs[0].get("sig"), "DSSE signature")
    statement = jsonbounds.loads(body, what="bundle statement")
    subjects = statement.get("subject") or []
    algorithm, hexpart = digest.split(":", 1)
    if not any((s.get("digest") or {}).get(algorithm) == hexpart for s in subjects):
        raise VerificationError(
            f"bundle statement does not name {digest} among its subjects: it belongs to "
            "another image"
        )
    return pae(INTOTO, body), signature


def _message_check(
    keys: list[ec.EllipticCurvePublicKey],
    digest_bytes: bytes,
    signature: bytes,
    override: str | None,
    signer: str,
    notes: list[str],
) -> Check:
    """messageSignature signs the artifact digest itself (sha256), prehashed."""
    for key in keys:
        try:
            key.verify(signature, digest_bytes, ec.ECDSA(Prehashed(hashes.SHA256())))
            return Check("verified", key_id(key), notes=notes)
        except (InvalidSignature, ValueError):
            continue
    return Check("failed", signer, "signed by none of the trusted keys", notes)


def simplesign_limit() -> int:
    """The largest simple-signing payload blob we read (payloads are a few hundred bytes)."""
    from trustyard.signing.simplesign import MAX_PAYLOAD

    return MAX_PAYLOAD
