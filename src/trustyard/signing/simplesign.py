"""The containers "simple signing" payload (atomic and cosign flavours) and GPG verification.

The payload is `{"critical": {"identity": {"docker-reference": R}, "image":
{"docker-manifest-digest": D}, "type": T}, "optional": {...} | null}`. containers/image parses
`critical` strictly: every listed field is required and any other field is an error (a verifier
that ignored unknown critical fields could be tricked into accepting a claim it does not
understand). The same strictness is applied here to both flavours:
`atomic container signature` (podman/skopeo `--sign-by`, inside an OpenPGP message) and
`cosign container image signature` (cosign, signed with ECDSA).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustyard.oci import jsonbounds
from trustyard.signing.errors import SignatureFormatError, SigningError, VerificationError
from trustyard.signing.openpgp import parse_signed_message

ATOMIC_TYPE = "atomic container signature"
COSIGN_TYPE = "cosign container image signature"
MAX_PAYLOAD = 64 * 1024
_DIGEST_RE = re.compile(r"^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})\Z")


@dataclass(frozen=True)
class Payload:
    """A parsed, strictly checked simple-signing payload (its claims, not yet trusted)."""

    type: str
    docker_reference: str
    manifest_digest: str
    optional: dict[str, Any] | None


def _exact(obj: object, keys: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise SignatureFormatError(f"signature payload: {where} is not a JSON object")
    extra = sorted(set(obj) - keys)
    if extra:
        raise SignatureFormatError(
            f"signature payload: unknown field(s) {', '.join(extra)} in {where} "
            "(critical fields must be understood; refusing)"
        )
    missing = sorted(keys - set(obj))
    if missing:
        raise SignatureFormatError(
            f"signature payload: {where} lacks required field(s) {', '.join(missing)}"
        )
    return obj


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise SignatureFormatError(f"signature payload: {where}.{key} is not a string")
    return value


def parse_payload(data: bytes, expected_type: str | None = None) -> Payload:
    """Parse and strictly validate a payload; `expected_type` pins the flavour."""
    if len(data) > MAX_PAYLOAD:
        raise SignatureFormatError(f"signature payload is over the {MAX_PAYLOAD} byte limit")
    try:
        doc = jsonbounds.loads(data, what="signature payload")
    except jsonbounds.JSONBoundsError as exc:
        raise SignatureFormatError(str(exc)) from None
    top = _exact(doc, {"critical", "optional"}, "the payload")
    critical = _exact(top["critical"], {"identity", "image", "type"}, "critical")
    kind = _string(critical, "type", "critical")
    if kind not in (ATOMIC_TYPE, COSIGN_TYPE):
        raise SignatureFormatError(f"signature payload: unknown critical.type {kind!r}")
    if expected_type is not None and kind != expected_type:
        raise SignatureFormatError(
            f"signature payload: critical.type is {kind!r}, expected {expected_type!r}"
        )
    image = _exact(critical["image"], {"docker-manifest-digest"}, "critical.image")
    identity = _exact(critical["identity"], {"docker-reference"}, "critical.identity")
    digest = _string(image, "docker-manifest-digest", "critical.image")
    if not _DIGEST_RE.match(digest):
        raise SignatureFormatError(
            f"signature payload: critical.image.docker-manifest-digest {digest[:80]!r} is not a "
            "digest"
        )
    optional = top.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise SignatureFormatError("signature payload: optional is neither an object nor null")
    return Payload(
        kind, _string(identity, "docker-reference", "critical.identity"), digest, optional
    )


def make_payload(
    docker_reference: str, manifest_digest: str, kind: str = COSIGN_TYPE, optional: Any = None
) -> bytes:
    """The payload bytes cosign writes (compact JSON, this key order)."""
    doc = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": kind,
        },
        "optional": optional,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def check_matches(payload: Payload, digest: str) -> None:
    """The payload must be about `digest`: a signature copied onto another image is refused."""
    if payload.manifest_digest != digest:
        raise VerificationError(
            f"signature is over {payload.manifest_digest}, not {digest}: it belongs to another "
            "image"
        )


@dataclass(frozen=True)
class AtomicSignature:
    """A simple-signing (OpenPGP) signature's claims: payload and the key it names."""

    payload: Payload
    key_ids: list[str]
    fingerprints: list[str]

    @property
    def signer(self) -> str:
        if self.fingerprints:
            return self.fingerprints[0]
        return self.key_ids[0] if self.key_ids else "unknown"


def inspect_atomic(content: bytes) -> AtomicSignature:
    """Parse (without verifying) a simple signature: OpenPGP structure and strict payload."""
    message = parse_signed_message(content, limit=MAX_PAYLOAD)
    payload = parse_payload(message.literal, ATOMIC_TYPE)
    return AtomicSignature(payload, message.key_ids, message.fingerprints)


def claimed_key_ids(content: bytes) -> list[str]:
    """The 16-hex key IDs a simple signature names as its signers (unverified claims)."""
    try:
        message = inspect_atomic(content)
    except SigningError:
        return []
    ids = [f[-16:] for f in message.fingerprints] + message.key_ids
    return list(dict.fromkeys(ids))


def show_fingerprints(public_key: bytes) -> list[str]:
    """Fingerprints (upper-case hex) of the key and subkeys in an exported OpenPGP public key
    (`gpg --show-keys`: the key is read, never imported)."""
    gpg = shutil.which("gpg")
    if gpg is None:
        raise VerificationError("gpg is not installed")
    with tempfile.TemporaryDirectory(prefix="ty-gpg-") as home:
        os.chmod(home, 0o700)
        path = Path(home) / "key"
        path.write_bytes(public_key)
        shown = subprocess.run(
            [gpg, "--batch", "--with-colons", "--show-keys", str(path)],
            capture_output=True,
            text=True,
            env={**os.environ, "GNUPGHOME": home},
            timeout=60,
            check=False,
        )
    fprs = [
        line.split(":")[9].upper() for line in shown.stdout.splitlines() if line.startswith("fpr:")
    ]
    if shown.returncode != 0 or not fprs:
        raise VerificationError("holds no OpenPGP public key")
    return fprs


def verify_with_gpg(content: bytes, public_keys: list[Path]) -> str:
    """Verify an OpenPGP signed message against exported public keys; return the fingerprint.

    gpg runs in a throwaway GNUPGHOME, so nothing of the user's keyring is trusted implicitly
    and nothing is written to it.
    """
    gpg = shutil.which("gpg")
    if gpg is None:
        raise VerificationError("gpg is not installed: cannot verify simple-signing signatures")
    with tempfile.TemporaryDirectory(prefix="ty-gpg-") as home:
        os.chmod(home, 0o700)
        env = {**os.environ, "GNUPGHOME": home}
        for key in public_keys:
            imported = subprocess.run(
                [gpg, "--batch", "--quiet", "--import", str(key)],
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
            if imported.returncode != 0:
                raise VerificationError(
                    f"cannot import OpenPGP public key {key}: "
                    f"{imported.stderr.decode(errors='replace').strip()[:300]}"
                )
        sig = Path(home) / "signature.gpg"
        sig.write_bytes(content)
        result = subprocess.run(
            [gpg, "--batch", "--status-fd", "1", "--verify", str(sig)],
            capture_output=True,
            env=env,
            timeout=60,
            check=False,
        )
    fingerprint = None
    for line in result.stdout.decode(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[:2] == ["[GNUPG:]", "VALIDSIG"]:
            fingerprint = parts[2]
    if result.returncode != 0 or fingerprint is None:
        if "NO_PUBKEY" in result.stdout.decode(errors="replace"):
            raise VerificationError("signed by a key that is not among the trusted keys")
        raise VerificationError("OpenPGP signature does not verify (BADSIG or corrupt message)")
    return fingerprint
