"""cosign signatures on a live registry: push (tag, referrer, bundle) and find + verify them."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.remote.bounded import BodyError, loads_json, read_body
from trustyard.signing import cosign
from trustyard.signing.errors import ReferenceNotFoundError, RemoteError
from trustyard.signing.layout import MAX_JSON, Json
from trustyard.signing.registry_client import RegistryClient, RemoteRef

_SIG_TAG_SUFFIX = ".sig"
# A registry's answers are bounded in bytes; these bound how many fetches they can fan out to.
MAX_ARTIFACTS = 64  # signature manifests among the referrers
MAX_LAYERS = 64  # signature layers per manifest


class ArtifactClient(RegistryClient):
    """RegistryClient plus what signature artifacts need: small blobs, referrers."""

    def __enter__(self) -> ArtifactClient:
        return self

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._request("HEAD", repo, f"/v2/{repo}/blobs/{digest}") as r:
            if r.status_code == 200:
                return digest
        with self._request(
            "POST",
            repo,
            f"/v2/{repo}/blobs/uploads/?digest={digest}",
            headers={"Content-Type": "application/octet-stream"},
            content=data,
        ) as r:
            if r.status_code == 201:
                return digest
            if r.status_code != 202:
                raise self._fail(r, f"cannot upload blob {digest}")
            location = r.headers.get("Location", "")
        sep = "&" if "?" in location else "?"
        path = location if location.startswith("/") else "/" + location.split("/", 3)[-1]
        with self._request(
            "PUT",
            repo,
            f"{path}{sep}digest={digest}",
            headers={"Content-Type": "application/octet-stream"},
            content=data,
        ) as r:
            if r.status_code != 201:
                raise self._fail(r, f"cannot upload blob {digest}")
        return digest

    def get_blob(self, repo: str, desc: Json, limit: int = MAX_JSON) -> bytes:
        digest = str(desc.get("digest", ""))
        with self._request("GET", repo, f"/v2/{repo}/blobs/{digest}") as r:
            if r.status_code != 200:
                raise self._fail(r, f"cannot get blob {digest}")
            data = read_body(r, limit, f"blob {digest}")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RemoteError(f"blob {digest} does not match its digest (tampered or corrupt)")
        return data

    def referrers(self, repo: str, digest: str) -> list[Json]:
        with self._request("GET", repo, f"/v2/{repo}/referrers/{digest}") as r:
            if r.status_code == 404:
                return []
            if r.status_code != 200:
                raise self._fail(r, f"cannot list referrers of {digest}")
            doc = loads_json(
                read_body(r, MAX_JSON, f"referrers of {digest}"), f"referrers of {digest}"
            )
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        return [m for m in manifests or [] if isinstance(m, dict)]

    def extension_signatures(self, repo: str, digest: str) -> list[bytes] | None:
        """Simple signatures through the containers extension API; None if not offered."""
        with self._request("GET", repo, f"/extensions/v2/{repo}/signatures/{digest}") as r:
            if r.status_code in (404, 405):
                return None
            if r.status_code != 200:
                raise self._fail(r, f"cannot list simple signatures of {digest}")
            what = f"simple signatures of {digest}"
            data = read_body(r, MAX_JSON, what)
            try:
                doc = loads_json(data, what)
                entries = doc["signatures"]
                return [
                    base64.b64decode(e["content"])
                    for e in entries
                    if e.get("schemaVersion") == 2 and e.get("type") == "atomic"
                ]
            except (BodyError, ValueError, KeyError, TypeError, AttributeError):
                raise RemoteError(f"{what}: malformed answer") from None

    def push_artifact(self, repo: str, artifact: cosign.Artifact) -> str:
        for blob in artifact.blobs:
            self.push_blob(repo, blob)
        return self.put_manifest(
            repo, artifact.tag or artifact.digest, artifact.manifest, cosign.OCI_MANIFEST
        )


def resolve_digest(client: RegistryClient, ref: RemoteRef) -> tuple[str, Json]:
    """The manifest digest `ref` names (an index is signed as itself, as cosign does)."""
    fetched = client.get_manifest(ref.repository, ref.digest or str(ref.tag))
    if ref.digest and fetched.digest != ref.digest:
        raise ReferenceNotFoundError(f"{ref}: registry answered {fetched.digest}")
    subject = {"mediaType": fetched.media_type, "digest": fetched.digest, "size": len(fetched.data)}
    return fetched.digest, subject


def sign(client: ArtifactClient, ref: RemoteRef, signer: cosign.CosignSigner, mode: str) -> str:
    """Sign the image `ref` names; returns the signature artifact's manifest digest."""
    digest, subject = resolve_digest(client, ref)
    identity = f"{ref.host}/{ref.repository}"
    if mode == "tag":
        existing = None
        algorithm, hexpart = digest.split(":", 1)
        try:
            existing = client.get_manifest(ref.repository, f"{algorithm}-{hexpart}.sig").doc
        except ReferenceNotFoundError:
            existing = None
        artifact = cosign.tag_artifact(signer, identity, digest, existing)
    elif mode == "referrers":
        artifact = cosign.referrer_artifact(signer, identity, subject)
    elif mode == "bundle":
        artifact = cosign.bundle_artifact(signer, identity, subject)
    else:
        raise RemoteError(f"unknown mode {mode!r}: tag, referrers or bundle")
    return client.push_artifact(ref.repository, artifact)


@dataclass
class Found:
    """One cosign/sigstore signature of an image and its verdict."""

    kind: str  # cosign-tag | cosign-referrer | sigstore-bundle
    artifact: str  # manifest digest (tag scheme: the .sig manifest @ layer index)
    check: cosign.Check
    extra: list[str] = field(default_factory=list)


def _too_deep(data: bytes, what: str) -> cosign.Check | None:
    """A failed check for JSON that is broken or nested too deeply to parse safely (the
    cosign parsers would end in a RecursionError on a few megabytes of `[`)."""
    try:
        loads_json(data, what)
    except BodyError as exc:
        return cosign.Check("failed", reason=str(exc))
    return None


def _check_simplesigning(
    payload: bytes,
    annotations: dict[str, str],
    keys: list[ec.EllipticCurvePublicKey],
    digest: str,
    override: str | None,
) -> cosign.Check:
    bad = _too_deep(payload, "signature payload")
    return bad or cosign.check_simplesigning(payload, annotations, keys, digest, override)


def _check_bundle(
    data: bytes, keys: list[ec.EllipticCurvePublicKey], digest: str, override: str | None
) -> cosign.Check:
    bad = _too_deep(data, "sigstore bundle")
    if bad is not None:
        return bad
    try:
        return cosign.check_bundle(data, keys, digest, override)
    except RecursionError:  # the DSSE payload inside the bundle is decoded there
        return cosign.Check("failed", reason="sigstore bundle payload is JSON nested too deeply")


def _layers(doc: Json) -> list[Json]:
    layers = doc.get("layers")
    return (
        [x for x in layers if isinstance(x, dict)][:MAX_LAYERS] if isinstance(layers, list) else []
    )


def find_and_verify(
    client: ArtifactClient,
    repo: str,
    digest: str,
    keys: list[ec.EllipticCurvePublicKey],
    override: str | None = None,
) -> list[Found]:
    """Every cosign signature of `digest` in `repo` (tag scheme and referrers), verified."""
    out: list[Found] = []
    seen: set[str] = set()
    algorithm, hexpart = digest.split(":", 1)
    try:
        sig = client.get_manifest(repo, f"{algorithm}-{hexpart}{_SIG_TAG_SUFFIX}")
    except ReferenceNotFoundError:
        sig = None
    if sig is not None:
        seen.add(sig.digest)
        for i, layer in enumerate(_layers(sig.doc)):
            if layer.get("mediaType") != cosign.SIMPLESIGNING:
                continue
            payload = client.get_blob(repo, layer, cosign.simplesign_limit())
            check = _check_simplesigning(
                payload, layer.get("annotations") or {}, keys, digest, override
            )
            out.append(Found("cosign-tag", f"{sig.digest}#{i}", check))
    candidates = [
        d
        for d in client.referrers(repo, digest)
        if d.get("artifactType") in (cosign.ARTIFACT_SIG, cosign.BUNDLE_V03)
    ]
    for desc in candidates[:MAX_ARTIFACTS]:
        artifact_type = desc.get("artifactType")
        manifest_digest = str(desc.get("digest"))
        if manifest_digest in seen:
            continue
        seen.add(manifest_digest)
        doc = client.get_manifest(repo, manifest_digest).doc
        for layer in _layers(doc):
            if (
                artifact_type == cosign.ARTIFACT_SIG
                and layer.get("mediaType") == cosign.SIMPLESIGNING
            ):
                payload = client.get_blob(repo, layer, cosign.simplesign_limit())
                check = _check_simplesigning(
                    payload, layer.get("annotations") or {}, keys, digest, override
                )
                out.append(Found("cosign-referrer", manifest_digest, check))
            elif artifact_type == cosign.BUNDLE_V03:
                data = client.get_blob(repo, layer, cosign.MAX_BUNDLE)
                out.append(
                    Found(
                        "sigstore-bundle",
                        manifest_digest,
                        _check_bundle(data, keys, digest, override),
                    )
                )
    return out
