"""Policy kinds `cosign` and `simple-signing`: signatures stored next to the image, on the pull path.

* `cosign`: the manifest needs a cosign signature by one of the trusted public keys (`keys`, PEM
  or DER EC P-256/P-384), found in any of cosign's shapes: the tag scheme (`sha256-<hex>.sig`),
  an OCI 1.1 referrer (`application/vnd.dev.cosign.artifact.sig.v1+json`, including entries of a
  tag-schema index) or a sigstore bundle v0.3 referrer. Signature artifacts themselves (manifests
  whose layers are all signature payloads or bundles) are exempt: a verifier must be able to
  fetch them, and they carry nothing runnable.
* `simple-signing`: the manifest needs a containers simple signature (OpenPGP, stored through the
  extension API) that gpg verifies with one of the trusted public keys (`keys`: exported keyring
  files); `fingerprints` optionally narrows the accepted signers.

Both are registered with `policy.register_kind`; `http/app.py` imports this module and fills the
`PolicyContext` readers they need (`get_tagged`, `referrers`, `simple_signatures`).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from trustyard import jsonbounds
from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.registry.policy import Decision, PolicyConfigError, PolicyContext, register_kind
from trustyard.signing import cosign
from trustyard.signing.errors import SigningError
from trustyard.signing.simplesign import check_matches, inspect_atomic, verify_with_gpg

MAX_CANDIDATES = 32  # signatures looked at per decision: bounded work per pull
MAX_SIG_MANIFEST = 256 * 1024
_SIGNATURE_LAYERS = {cosign.SIMPLESIGNING, cosign.BUNDLE_V03}
_SIGNATURE_CONFIGS = {cosign.OCI_CONFIG, cosign.ARTIFACT_SIG, cosign.OCI_EMPTY}
_FINGERPRINT = re.compile(r"^(?:[0-9A-F]{16}|[0-9A-F]{40}|[0-9A-F]{64})$")


def _key_paths(spec: dict[str, Any], kind: str) -> list[str]:
    value = spec.get("keys")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise PolicyConfigError(f"{kind}: keys must be a non-empty list of public key files")
    for path in value:
        if not Path(path).is_file():
            raise PolicyConfigError(f"{kind}: key file {path} does not exist")
    return value


def _json(data: bytes) -> dict[str, Any] | None:
    try:
        doc = jsonbounds.loads(data, what="signature artifact")
    except jsonbounds.JSONBoundsError:
        return None
    return doc if isinstance(doc, dict) else None


def _layers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    layers = doc.get("layers")
    return [x for x in layers if isinstance(x, dict)] if isinstance(layers, list) else []


def is_signature_artifact(record: ManifestRecord) -> bool:
    """A cosign signature/bundle manifest: every layer a signature payload, nothing runnable."""
    if len(record.content) > MAX_SIG_MANIFEST:
        return False
    doc = _json(record.content)
    if doc is None:
        return False
    layers = _layers(doc)
    config = doc.get("config")
    return (
        bool(layers)
        and len(layers) == len(doc.get("layers") or [])
        and all(x.get("mediaType") in _SIGNATURE_LAYERS for x in layers)
        and isinstance(config, dict)
        and config.get("mediaType") in _SIGNATURE_CONFIGS
    )


class CosignCheck:
    """A cosign signature (tag scheme, referrer or bundle) by one of the trusted keys."""

    kind = "cosign"

    def __init__(self, spec: dict[str, Any], ctx: PolicyContext) -> None:
        self.ctx = ctx
        self.keys: list[ec.EllipticCurvePublicKey] = []
        for path in _key_paths(spec, "cosign"):
            try:
                self.keys.append(cosign.load_public_key(Path(path).read_bytes(), path))
            except SigningError as exc:
                raise PolicyConfigError(f"cosign: {exc}") from None
        override = spec.get("hash")
        if override is not None and override not in ("sha256", "sha384", "sha512"):
            raise PolicyConfigError("cosign: hash must be sha256, sha384 or sha512")
        self.hash_override: str | None = override
        if ctx.get_tagged is None or ctx.referrers is None:
            raise PolicyConfigError("cosign: this registry gives policies no tag/referrer reader")

    async def _blob(self, desc: dict[str, Any], limit: int) -> bytes | None:
        try:
            digest = Digest.parse(str(desc.get("digest")))
        except RegistryError:
            return None
        data = await self.ctx.read_blob(digest, limit)
        if data is None or hashlib.new(digest.algorithm, data).hexdigest() != digest.hex:
            return None
        return data

    async def _check_layers(
        self, where: str, doc: dict[str, Any], digest: str, failures: list[str]
    ) -> Decision | None:
        for layer in _layers(doc)[:MAX_CANDIDATES]:
            media_type = layer.get("mediaType")
            if media_type == cosign.SIMPLESIGNING:
                payload = await self._blob(layer, cosign.simplesign_limit())
                if payload is None:
                    failures.append(f"{where}: payload blob missing or too large")
                    continue
                check = cosign.check_simplesigning(
                    payload, layer.get("annotations") or {}, self.keys, digest, self.hash_override
                )
            elif media_type == cosign.BUNDLE_V03:
                bundle = await self._blob(layer, cosign.MAX_BUNDLE)
                if bundle is None:
                    failures.append(f"{where}: bundle blob missing or too large")
                    continue
                check = cosign.check_bundle(bundle, self.keys, digest, self.hash_override)
            else:
                continue
            if check.status == "verified":
                return Decision(True, f"{where} signature verified", check.signer)
            failures.append(f"{where}: {check.reason or check.status}")
        return None

    async def verify(self, repository: str, record: ManifestRecord, tag: str | None) -> Decision:
        if is_signature_artifact(record):
            return Decision(True, "a cosign signature artifact (exempt)")
        assert self.ctx.get_tagged is not None and self.ctx.referrers is not None
        digest = str(record.digest)
        failures: list[str] = []
        sig_tag = f"{record.digest.algorithm}-{record.digest.hex}.sig"
        sig = await self.ctx.get_tagged(repository, sig_tag)
        if sig is not None:
            doc = _json(sig.content)
            if doc is not None:
                found = await self._check_layers(f"cosign tag {sig_tag}", doc, digest, failures)
                if found is not None:
                    return found
        wanted = {cosign.ARTIFACT_SIG: "cosign referrer", cosign.BUNDLE_V03: "sigstore bundle"}
        descs = await self.ctx.referrers(repository, record.digest)
        descs = [d for d in descs if d.artifact_type in wanted][:MAX_CANDIDATES]
        for desc in descs:
            referrer = await self.ctx.get_manifest(repository, desc.digest)
            doc = _json(referrer.content) if referrer is not None else None
            if doc is None:
                continue
            where = f"{wanted[str(desc.artifact_type)]} {desc.digest}"
            found = await self._check_layers(where, doc, digest, failures)
            if found is not None:
                return found
        if not failures:
            return Decision(False, f"no cosign signature of {digest} found")
        return Decision(False, f"no cosign signature by a trusted key: {'; '.join(failures[:4])}")


class SimpleSigningCheck:
    """A containers simple signature (extension API) that gpg verifies with a trusted key."""

    kind = "simple-signing"
    CACHE_SIZE = 1024

    def __init__(self, spec: dict[str, Any], ctx: PolicyContext) -> None:
        self.ctx = ctx
        self.keys = [Path(p) for p in _key_paths(spec, "simple-signing")]
        fingerprints = spec.get("fingerprints") or []
        if isinstance(fingerprints, str):
            fingerprints = [fingerprints]
        if not isinstance(fingerprints, list) or not all(isinstance(f, str) for f in fingerprints):
            raise PolicyConfigError("simple-signing: fingerprints must be a list of strings")
        self.fingerprints = [f.replace(" ", "").upper() for f in fingerprints]
        bad = [f for f in self.fingerprints if not _FINGERPRINT.match(f)]
        if bad:
            raise PolicyConfigError(
                f"simple-signing: {bad[0]!r} is not a key ID or fingerprint (16/40/64 hex digits)"
            )
        if ctx.simple_signatures is None:
            raise PolicyConfigError("simple-signing: this registry stores no simple signatures")
        # sha256(signature bytes) -> signer fingerprint or failure reason; keys are fixed.
        self._verified: OrderedDict[str, tuple[bool, str]] = OrderedDict()

    def _accepted(self, fingerprint: str) -> bool:
        return not self.fingerprints or any(fingerprint.endswith(f) for f in self.fingerprints)

    async def _gpg(self, content: bytes) -> tuple[bool, str]:
        key = hashlib.sha256(content).hexdigest()
        cached = self._verified.get(key)
        if cached is not None:
            return cached
        try:
            result = (True, await asyncio.to_thread(verify_with_gpg, content, self.keys))
        except SigningError as exc:
            result = (False, str(exc))
        self._verified[key] = result
        while len(self._verified) > self.CACHE_SIZE:
            self._verified.popitem(last=False)
        return result

    async def verify(self, repository: str, record: ManifestRecord, tag: str | None) -> Decision:
        assert self.ctx.simple_signatures is not None
        digest = str(record.digest)
        signatures = (await self.ctx.simple_signatures(repository, record.digest))[:MAX_CANDIDATES]
        if not signatures:
            return Decision(False, f"no simple signature of {digest} stored")
        failures = []
        for content in signatures:
            try:
                check_matches(inspect_atomic(content).payload, digest)
            except SigningError as exc:
                failures.append(str(exc))
                continue
            ok, what = await self._gpg(content)
            if not ok:
                failures.append(what)
            elif not self._accepted(what):
                failures.append(f"signed by {what}, which is not among the trusted fingerprints")
            else:
                return Decision(True, "simple signature verified", what)
        return Decision(False, f"no simple signature by a trusted key: {'; '.join(failures[:4])}")


register_kind("cosign", CosignCheck)
register_kind("simple-signing", SimpleSigningCheck)
KINDS_REGISTERED = ("cosign", "simple-signing")
