"""Policy kinds `cosign` and `simple-signing`: signatures stored next to the image, on the pull path.

* `cosign`: the manifest needs a cosign signature by one of the trusted public keys (`keys`, PEM
  or DER EC P-256/P-384), found in any of cosign's shapes: the tag scheme (`sha256-<hex>.sig`),
  an OCI 1.1 referrer (`application/vnd.dev.cosign.artifact.sig.v1+json`, including entries of a
  tag-schema index) or a sigstore bundle v0.3 referrer. Signature artifacts themselves are
  exempt (a verifier must be able to fetch them), but only when their bytes prove they carry
  nothing runnable (`signature_artifact_problem`): labels alone are an attacker's to choose.
* `simple-signing`: the manifest needs a containers simple signature (OpenPGP, stored through the
  extension API) that gpg verifies with one of the trusted public keys (`keys`: exported keyring
  files); `fingerprints` optionally narrows the accepted signers.
* Both check the signature's identity against the pulled repository (`match`, `hosts`:
  `IdentityRule`), so a signature made for repository A does not admit the digest in B.

Both are registered with `policy.register_kind`; `trustyard.wiring` imports this module and fills
the `PolicyContext` readers they need (`get_tagged`, `referrers`, `simple_signatures`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
from collections import OrderedDict
from collections.abc import AsyncGenerator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.metadata.base import ManifestRecord
from trustyard.oci import jsonbounds
from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.registry.policy import Decision, PolicyConfigError, PolicyContext, register_kind
from trustyard.registry.signature_artifacts import (
    MAX_SIG_MANIFEST,
    SIGNATURE_ARTIFACT_TYPES,
    SIGNATURE_LAYERS,
    one_of,
    signature_artifact_problem,
)
from trustyard.registry.signed_identity import IdentityRule
from trustyard.signing import cosign
from trustyard.signing.errors import SigningError
from trustyard.signing.simplesign import (
    check_matches,
    claimed_key_ids,
    inspect_atomic,
    parse_payload,
    show_fingerprints,
    verify_with_gpg,
)

MAX_CANDIDATES = 32  # simple signatures by trusted keys gpg-checked per decision
# cosign: signature entries (tag-scheme layers, referrer layers) and referrer manifests looked at
# per decision. Every entry is verified (ECDSA, cheap), payload blobs are read once per digest:
# junk by untrusted keys costs work up to these bounds but is never skipped over in favour of it.
MAX_COSIGN_ENTRIES = 1024
MAX_REFERRERS = 256
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


@dataclass(frozen=True)
class CosignEntry:
    """One cosign signature entry of a manifest, checked against the keys given."""

    where: str  # "cosign tag sha256-….sig", "cosign referrer sha256:…", "sigstore bundle …"
    media_type: object
    data: bytes  # the payload or bundle blob, read back and matching its digest
    check: cosign.Check


class _Budget:
    """Work left in one decision, and the payload blobs already read (by digest)."""

    def __init__(self, ctx: PolicyContext, entries: int = MAX_COSIGN_ENTRIES) -> None:
        self.ctx = ctx
        self.limit = self.entries = entries
        self.blobs: dict[str, bytes | None] = {}

    async def blob(self, desc: dict[str, Any], limit: int) -> bytes | None:
        key = str(desc.get("digest"))
        if key in self.blobs:
            return self.blobs[key]
        try:
            digest = Digest.parse(key)
        except RegistryError:
            return None
        data = await self.ctx.read_blob(digest, limit)
        if data is not None and hashlib.new(digest.algorithm, data).hexdigest() != digest.hex:
            data = None
        self.blobs[key] = data
        return data


async def _layer_entries(
    where: str,
    doc: dict[str, Any],
    digest: str,
    keys: list[ec.EllipticCurvePublicKey],
    override: str | None,
    failures: list[str],
    budget: _Budget,
) -> AsyncGenerator[CosignEntry, None]:
    seen: set[tuple[str, str]] = set()
    for layer in _layers(doc):
        media_type = layer.get("mediaType")
        annotations = layer.get("annotations") or {}
        if not isinstance(annotations, dict):
            continue
        key = (str(layer.get("digest")), str(annotations.get(cosign.SIG_ANNOTATION)))
        if not one_of(media_type, SIGNATURE_LAYERS) or key in seen:
            continue
        seen.add(key)
        if budget.entries <= 0:
            failures.append(f"stopped after {budget.limit} signatures")
            return
        budget.entries -= 1
        if media_type == cosign.SIMPLESIGNING:
            data = await budget.blob(layer, cosign.simplesign_limit())
            if data is None:
                failures.append(f"{where}: payload blob missing or too large")
                continue
            check = cosign.check_simplesigning(data, annotations, keys, digest, override)
        else:
            data = await budget.blob(layer, cosign.MAX_BUNDLE)
            if data is None:
                failures.append(f"{where}: bundle blob missing or too large")
                continue
            check = cosign.check_bundle(data, keys, digest, override)
        yield CosignEntry(where, media_type, data, check)


async def cosign_entries(
    ctx: PolicyContext,
    repository: str,
    record: ManifestRecord,
    keys: list[ec.EllipticCurvePublicKey],
    override: str | None,
    failures: list[str],
    max_entries: int = MAX_COSIGN_ENTRIES,
) -> AsyncGenerator[CosignEntry, None]:
    """Every cosign signature entry of `record` (tag scheme, then referrers and bundles), each
    checked against `keys`, within this module's bounds (at most `max_entries` entries); what
    could not be looked at is appended to `failures`. Shared by `cosign` and `authority`
    (policy_authority.py)."""
    assert ctx.get_tagged is not None and ctx.referrers is not None
    digest = str(record.digest)
    budget = _Budget(ctx, max_entries)
    sig_tag = f"{record.digest.algorithm}-{record.digest.hex}.sig"
    sig = await ctx.get_tagged(repository, sig_tag)
    if sig is not None and len(sig.content) <= MAX_SIG_MANIFEST:
        doc = _json(sig.content)
        if doc is not None:
            where = f"cosign tag {sig_tag}"
            async for entry in _layer_entries(where, doc, digest, keys, override, failures, budget):
                yield entry
    wanted = {cosign.ARTIFACT_SIG: "cosign referrer", cosign.BUNDLE_V03: "sigstore bundle"}
    descs = await ctx.referrers(repository, record.digest)
    descs = [d for d in descs if d.artifact_type in wanted]
    if len(descs) > MAX_REFERRERS:
        failures.append(f"only the first {MAX_REFERRERS} of {len(descs)} referrers looked at")
    for desc in descs[:MAX_REFERRERS]:
        referrer = await ctx.get_manifest(repository, desc.digest)
        if referrer is None or len(referrer.content) > MAX_SIG_MANIFEST:
            continue
        doc = _json(referrer.content)
        if doc is None:
            continue
        where = f"{wanted[str(desc.artifact_type)]} {desc.digest}"
        async for entry in _layer_entries(where, doc, digest, keys, override, failures, budget):
            yield entry


class CosignCheck:
    """A cosign signature (tag scheme, referrer or bundle) by one of the trusted keys, whose
    identity names this repository (`match`, default `repository`: cosign records no tag)."""

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
        self.identity = IdentityRule.from_spec(spec, "cosign", "repository")
        if ctx.get_tagged is None or ctx.referrers is None:
            raise PolicyConfigError("cosign: this registry gives policies no tag/referrer reader")

    def _identities(self, media_type: object, data: bytes, digest: str) -> list[str]:
        """The identities a verified payload or bundle claims for `digest`."""
        try:
            if media_type == cosign.SIMPLESIGNING:
                return [parse_payload(data).docker_reference]
            env = jsonbounds.loads(data, what="sigstore bundle")["dsseEnvelope"]
            statement = jsonbounds.loads(base64.b64decode(env["payload"]), what="in-toto statement")
            algorithm, hexpart = digest.split(":", 1)
            return [
                str(s.get("name"))
                for s in statement.get("subject") or []
                if (s.get("digest") or {}).get(algorithm) == hexpart
            ]
        except (ValueError, KeyError, TypeError, AttributeError, SigningError):
            return []

    async def verify(self, repository: str, record: ManifestRecord, tag: str | None) -> Decision:
        problem = await signature_artifact_problem(self.ctx, record)
        if problem is None:
            return Decision(True, "a cosign signature artifact (exempt)")
        record = replace(record, repository=repository)
        digest = str(record.digest)
        failures: list[str] = []
        entries = cosign_entries(
            self.ctx, repository, record, self.keys, self.hash_override, failures
        )
        async for entry in entries:
            check = entry.check
            if check.status != "verified":
                failures.append(f"{entry.where}: {check.reason or check.status}")
                continue
            identities = self._identities(entry.media_type, entry.data, digest) or ["(none)"]
            names = self.ctx.identity_names(repository)
            wrong = [self.identity.mismatch_any(i, names, tag, digest) for i in identities]
            if None in wrong:
                await entries.aclose()
                return Decision(True, f"{entry.where} signature verified", check.signer)
            failures.append(f"{entry.where}: {wrong[0]}")
        # A manifest labelled as a signature says why it is not exempt (the label is not enough).
        doc = _json(record.content) if len(record.content) <= MAX_SIG_MANIFEST else None
        labelled = doc is not None and (
            one_of(doc.get("artifactType"), SIGNATURE_ARTIFACT_TYPES)
            or any(one_of(x.get("mediaType"), SIGNATURE_LAYERS) for x in _layers(doc))
        )
        why = f" ({problem})" if labelled or record.media_type in mt.INDEXES else ""
        if not failures:
            return Decision(False, f"no cosign signature of {digest} found{why}")
        return Decision(
            False, f"no cosign signature by a trusted key: {'; '.join(failures[:4])}{why}"
        )


def keyring_fingerprints(paths: list[Path]) -> frozenset[str]:
    """Fingerprints of every key and subkey in exported keyrings (`gpg --show-keys`)."""
    found: set[str] = set()
    for path in paths:
        try:
            found.update(show_fingerprints(path.read_bytes()))
        except OSError as exc:
            raise PolicyConfigError(f"simple-signing: cannot read {path}: {exc.strerror}") from None
        except SigningError as exc:
            raise PolicyConfigError(f"simple-signing: {path}: {exc}") from None
    return frozenset(found)


class SimpleSigningCheck:
    """A containers simple signature (extension API) that gpg verifies with a trusted key, whose
    identity names this repository (`match`, default `repo-digest-or-exact` as in policy.json).

    Only signatures that name a trusted key are verified: the others cannot crowd them out.
    The extension API refuses uploads that name a trusted key but do not verify with it
    (`vet_upload`), so the trusted candidates are bounded by its per-signer limit.
    """

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
        self.identity = IdentityRule.from_spec(spec, "simple-signing", "repo-digest-or-exact")
        if ctx.simple_signatures is None:
            raise PolicyConfigError("simple-signing: this registry stores no simple signatures")
        self.trusted_ids = frozenset(f[-16:] for f in keyring_fingerprints(self.keys))
        # sha256(signature bytes) -> signer fingerprint or failure reason; keys are fixed.
        self._verified: OrderedDict[str, tuple[bool, str]] = OrderedDict()

    def _accepted(self, fingerprint: str) -> bool:
        return not self.fingerprints or any(fingerprint.endswith(f) for f in self.fingerprints)

    def names_trusted_key(self, key_ids: list[str]) -> bool:
        return any(k in self.trusted_ids for k in key_ids)

    async def vet_upload(self, content: bytes) -> tuple[bool, str]:
        """gpg's verdict on an upload naming one of our keys: (True, fingerprint) or
        (False, why)."""
        return await self._gpg(content)

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
        signatures = await self.ctx.simple_signatures(repository, record.digest)
        if not signatures:
            return Decision(False, f"no simple signature of {digest} stored")
        failures: list[str] = []
        candidates = []
        strangers: list[str] = []
        for content in signatures:
            try:
                payload = inspect_atomic(content).payload
                check_matches(payload, digest)
            except SigningError as exc:
                failures.append(str(exc))
                continue
            ids = claimed_key_ids(content)
            if self.names_trusted_key(ids):
                candidates.append((content, payload.docker_reference))
            else:
                strangers.extend(ids[:1] or ["no key"])
        if strangers:
            shown = ", ".join(sorted(set(strangers))[:4])
            failures.append(
                f"{len(strangers)} signed by key(s) not among the trusted keys ({shown})"
            )
        for content, reference in candidates[:MAX_CANDIDATES]:
            ok, what = await self._gpg(content)
            if not ok:
                failures.append(what)
            elif not self._accepted(what):
                failures.append(f"signed by {what}, which is not among the trusted fingerprints")
            else:
                names = self.ctx.identity_names(repository)
                wrong = self.identity.mismatch_any(reference, names, tag, digest)
                if wrong is None:
                    return Decision(True, "simple signature verified", what)
                failures.append(wrong)
        return Decision(False, f"no simple signature by a trusted key: {'; '.join(failures[:4])}")


register_kind("cosign", CosignCheck)
register_kind("simple-signing", SimpleSigningCheck)
KINDS_REGISTERED = ("cosign", "simple-signing")
