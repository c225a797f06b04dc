"""`trustyard signatures REF` and the cosign commands of `trustyard sign` (cosign, verify-cosign).

Every signature kind known for an image, with who signed it and whether it verifies against the
keys given: Notary targets (from the trust server, verified as `trustyard trust verify` does),
simple signing (OpenPGP, through the registry's extension API), cosign tag-scheme and referrer
signatures, sigstore bundles, ir-sign annotations, and the JWS signatures inside a Docker
schema 1 manifest (by libtrust key ID).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.crypto import ecdsa as keys
from trustyard.crypto.jws import JwsError, verify_schema1
from trustyard.crypto.pkcs11 import Pkcs11Signer
from trustyard.crypto.x5c import describe
from trustyard.oci import mediatypes as mt
from trustyard.signing import cosign, remote
from trustyard.signing.cosign_remote import ArtifactClient, find_and_verify, resolve_digest, sign
from trustyard.signing.errors import SigningError
from trustyard.signing.registry_client import RemoteRef
from trustyard.signing.simplesign import inspect_atomic, verify_with_gpg
from trustyard.trust.client.config import load_config
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.keys import KeyStore
from trustyard.trust.client.lookup import ROOT_TRUST, NotaryTarget, image_targets
from trustyard.trust.client.repository import TrustClient, gun_of

IRSIGN_SIGNATURE = "com.samsung.islet.image.signature"


@dataclass(frozen=True)
class Connection:
    plain_http: bool = False
    insecure: bool = False
    tls_ca: Path | None = None
    authfile: Path | None = None

    def client(self, ref: RemoteRef, push: bool = False) -> ArtifactClient:
        return ArtifactClient(
            ref.host,
            push=push,
            plain_http=self.plain_http,
            insecure=self.insecure,
            ca_file=self.tls_ca,
            auth_file=self.authfile,
        )


def open_cosign_signer(spec: str) -> cosign.CosignSigner:
    """A cosign key file (password from COSIGN_PASSWORD), a PEM/DER EC key, or a pkcs11: URI
    (a P-256 or P-384 token key; the hash follows the curve, as for a key file)."""
    if spec.startswith("pkcs11:"):
        return cosign.TokenSigner(Pkcs11Signer.from_uri(spec))
    path = Path(spec)
    data = keys.read_key_file(path)
    password = os.environ.get("COSIGN_PASSWORD")
    key = cosign.load_private_key(data, password.encode() if password is not None else None, spec)
    return cosign.KeySigner(key)


def load_keys(paths: list[Path]) -> list[ec.EllipticCurvePublicKey]:
    return [cosign.load_public_key(keys.read_key_file(p), str(p)) for p in paths]


def cosign_sign(ref_text: str, key: str, mode: str, conn: Connection) -> str:
    ref = RemoteRef.parse(ref_text)
    signer = open_cosign_signer(key)
    with conn.client(ref, push=True) as client:
        return sign(client, ref, signer, mode)


def verify_cosign(
    ref_text: str, key_paths: list[Path], hash_override: str | None, conn: Connection
) -> tuple[str, list[tuple[str, str, cosign.Check]]]:
    ref = RemoteRef.parse(ref_text)
    trusted = load_keys(key_paths)
    with conn.client(ref) as client:
        digest, _ = resolve_digest(client, ref)
        found = find_and_verify(client, ref.repository, digest, trusted, hash_override)
    return digest, [(f.kind, f.artifact, f.check) for f in found]


@dataclass
class Row:
    kind: str
    status: str
    signer: str
    artifact: str
    detail: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "extra"} | self.extra


@dataclass(frozen=True)
class NotaryOptions:
    """Where the Notary trust data is and how it is trusted (the `trustyard trust` options)."""

    gun: str | None = None
    server: str | None = None  # default: the config's remote_server.url, else the registry
    trust_dir: Path | None = None
    config: Path | None = None
    enabled: bool = True


def open_trust_client(ref: RemoteRef, opts: NotaryOptions, conn: Connection) -> TrustClient:
    """A trust client for the image's Notary data: the config's server, else the registry."""
    cfg = load_config(opts.config, opts.trust_dir, opts.server)
    if cfg.server is None:
        scheme = "http" if conn.plain_http else "https"
        cfg = dataclasses.replace(cfg, server=f"{scheme}://{ref.host}")
    if cfg.root_ca is None and conn.tls_ca is not None:
        cfg = dataclasses.replace(cfg, root_ca=conn.tls_ca)
    return TrustClient(cfg, KeyStore(cfg.trust_dir), auth_file=conn.authfile)


def notary_rows(
    ref: RemoteRef, digest: str, size: int, opts: NotaryOptions, conn: Connection
) -> list[Row]:
    """The Notary targets signing this manifest (or its tag); none without a collection."""
    algorithm, _, hex_ = digest.partition(":")
    if not opts.enabled or algorithm != "sha256":
        return []
    gun = opts.gun or gun_of(ref.host, ref.repository)
    try:
        with open_trust_client(ref, opts, conn) as client:
            found = image_targets(client, gun, hex_, size, ref.tag)
    except TrustError as exc:
        found = [NotaryTarget(gun, "unverifiable", reason=str(exc))]
    return [_notary_row(t) for t in found]


def _notary_row(t: NotaryTarget) -> Row:
    if t.name is None:  # the collection as a whole
        return Row("notary", t.status, "-", t.gun, t.reason, {"notary": t.to_json()})
    signer = "key " + ", ".join(k[:16] for k in t.canonical_key_ids) if t.key_ids else "-"
    notes = [f"role {t.role}", ROOT_TRUST.get(t.root_trusted_by or "", "")]
    detail = "; ".join(x for x in [*notes, t.reason, *t.warnings] if x)
    return Row("notary", t.status, signer, f"{t.gun}:{t.name}", detail, {"notary": t.to_json()})


def list_signatures(
    ref_text: str,
    cosign_keys: list[Path],
    gpg_keys: list[Path],
    ca_pub: Path | None,
    hash_override: str | None,
    conn: Connection,
    notary: NotaryOptions | None = None,
) -> tuple[str, list[Row]]:
    ref = RemoteRef.parse(ref_text)
    trusted = load_keys(cosign_keys)
    rows: list[Row] = []
    with conn.client(ref) as client:
        digest, _ = resolve_digest(client, ref)
        manifest = client.get_manifest(ref.repository, digest)
        rows += notary_rows(ref, digest, len(manifest.data), notary or NotaryOptions(), conn)
        if manifest.media_type in mt.SCHEMA1 or manifest.doc.get("schemaVersion") == 1:
            rows += jws_rows(manifest.data, digest)
        for content in client.extension_signatures(ref.repository, digest) or []:
            rows.append(_simple_row(content, digest, gpg_keys))
        for f in find_and_verify(client, ref.repository, digest, trusted, hash_override):
            detail = "; ".join([x for x in [f.check.reason, *f.check.notes] if x])
            rows.append(Row(f.kind, f.check.status, f.check.signer, f.artifact, detail))
        annotations = manifest.doc.get("annotations") or {}
        if isinstance(annotations, dict) and IRSIGN_SIGNATURE in annotations:
            rows.append(_irsign_row(client, ref, digest, ca_pub))
    return digest, rows


def jws_rows(data: bytes, digest: str) -> list[Row]:
    """The JWS signatures of a schema 1 manifest. Each names its own key (`jwk` or `x5c`), so
    "verified" means the manifest is what that key signed; whether the key is trusted for the
    repository is the authority policy's question."""
    try:
        signers = verify_schema1(data)
    except JwsError as exc:
        return [Row("jws", "failed", "unknown", digest, exc.reason)]
    rows = []
    for s in signers:
        subject = describe(s.chain[0]) if s.chain else None
        source = f"x5c subject {subject}" if subject else "key from its jwk header"
        extra = {"jws": {"key_id": s.key_id, "alg": s.alg, "x5c_subject": subject}}
        rows.append(Row("jws", "verified", s.key_id, digest, f"{s.alg}; {source}", extra))
    return rows


def _simple_row(content: bytes, digest: str, gpg_keys: list[Path]) -> Row:
    try:
        sig = inspect_atomic(content)
    except SigningError as exc:
        return Row("simple-signing", "failed", "unknown", digest, str(exc))
    detail = f"identity {sig.payload.docker_reference}"
    if sig.payload.manifest_digest != digest:
        return Row(
            "simple-signing", "failed", sig.signer, digest, "signature is over another image"
        )
    if not gpg_keys:
        return Row("simple-signing", "unverifiable", sig.signer, digest, f"{detail}; no --gpg-key")
    try:
        fingerprint = verify_with_gpg(content, gpg_keys)
    except SigningError as exc:
        return Row("simple-signing", "failed", sig.signer, digest, f"{detail}; {exc}")
    return Row("simple-signing", "verified", fingerprint, digest, detail)


def _irsign_row(client: ArtifactClient, ref: RemoteRef, digest: str, ca_pub: Path | None) -> Row:
    if ca_pub is None:
        return Row("ir-sign", "unverifiable", "vendor key", digest, "no --ca-pub")
    root = keys.load_public_key(keys.read_key_file(ca_pub), str(ca_pub))
    pinned = RemoteRef(ref.host, ref.repository, None, digest)
    report = remote.verify_remote(client, pinned, root)
    status = "verified" if report.ok else "failed"
    return Row("ir-sign", status, f"{len(report.verified)} vendor key(s)", digest, "root CA")


KeyOpt = Annotated[
    list[Path] | None,
    typer.Option("--key", help="Trusted cosign public key (PEM/DER); repeatable."),
]
GpgOpt = Annotated[
    list[Path] | None,
    typer.Option("--gpg-key", help="Trusted OpenPGP public key (gpg --export); repeatable."),
]
HashOpt = Annotated[
    str | None,
    typer.Option("--hash", help="Verify ECDSA with this hash instead of the curve's (sha256…)."),
]


def signatures(
    ref: Annotated[str, typer.Argument(help="HOST[:PORT]/REPO:TAG or …@DIGEST")],
    key: KeyOpt = None,
    gpg_key: GpgOpt = None,
    ca_pub: Annotated[
        Path | None, typer.Option("--ca-pub", help="ir-sign root CA public key.")
    ] = None,
    hash_override: HashOpt = None,
    plain_http: Annotated[bool, typer.Option("--plain-http")] = False,
    insecure: Annotated[bool, typer.Option("--insecure")] = False,
    tls_ca: Annotated[Path | None, typer.Option("--tls-ca")] = None,
    authfile: Annotated[Path | None, typer.Option("--authfile")] = None,
    gun: Annotated[
        str | None, typer.Option("--gun", help="Notary GUN (default: HOST[:PORT]/REPO).")
    ] = None,
    trust_server: Annotated[
        str | None,
        typer.Option(
            "--trust-server", help="Notary trust server URL (default: config, else the registry)."
        ),
    ] = None,
    trust_dir: Annotated[
        Path | None,
        typer.Option(
            "--trust-dir", help="Trust client dir: cached roots, pins (~/.trustyard/trust)."
        ),
    ] = None,
    trust_config: Annotated[
        Path | None,
        typer.Option("--trust-config", help="Notary-style config.json (trust_pinning, …)."),
    ] = None,
    no_notary: Annotated[
        bool, typer.Option("--no-notary", help="Do not look for Notary trust data.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List every signature of an image: kind, status, signer, artifact."""
    conn = Connection(plain_http, insecure, tls_ca, authfile)
    notary = NotaryOptions(gun, trust_server, trust_dir, trust_config, not no_notary)
    try:
        digest, rows = list_signatures(
            ref, key or [], gpg_key or [], ca_pub, hash_override, conn, notary
        )
    except SigningError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        report = {"reference": ref, "digest": digest, "signatures": [r.to_json() for r in rows]}
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"{ref} ({digest}): {len(rows)} signature(s)")
    for row in rows:
        typer.echo(
            f"{row.kind:<16} {row.status:<12} {row.signer}  {row.artifact}"
            + (f"  ({row.detail})" if row.detail else "")
        )
