"""`trustyard signatures REF` and the cosign commands of `trustyard sign` (cosign, verify-cosign).

Every signature kind known for an image, with who signed it and whether it verifies against the
keys given: simple signing (OpenPGP, through the registry's extension API), cosign tag-scheme and
referrer signatures, sigstore bundles, and ir-sign annotations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.signing import cosign, keys, remote
from trustyard.signing.cosign_remote import ArtifactClient, find_and_verify, resolve_digest, sign
from trustyard.signing.errors import SigningError
from trustyard.signing.registry_client import RemoteRef
from trustyard.signing.simplesign import inspect_atomic, verify_with_gpg

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
    """A cosign key file (password from COSIGN_PASSWORD), a PEM/DER EC key, or a pkcs11: URI."""
    if spec.startswith("pkcs11:"):
        return cosign.TokenSigner(keys.open_signer(spec))
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


def list_signatures(
    ref_text: str,
    cosign_keys: list[Path],
    gpg_keys: list[Path],
    ca_pub: Path | None,
    hash_override: str | None,
    conn: Connection,
) -> tuple[str, list[Row]]:
    ref = RemoteRef.parse(ref_text)
    trusted = load_keys(cosign_keys)
    rows: list[Row] = []
    with conn.client(ref) as client:
        digest, _ = resolve_digest(client, ref)
        manifest = client.get_manifest(ref.repository, digest)
        for content in client.extension_signatures(ref.repository, digest) or []:
            rows.append(_simple_row(content, digest, gpg_keys))
        for f in find_and_verify(client, ref.repository, digest, trusted, hash_override):
            detail = "; ".join([x for x in [f.check.reason, *f.check.notes] if x])
            rows.append(Row(f.kind, f.check.status, f.check.signer, f.artifact, detail))
        annotations = manifest.doc.get("annotations") or {}
        if isinstance(annotations, dict) and IRSIGN_SIGNATURE in annotations:
            rows.append(_irsign_row(client, ref, digest, ca_pub))
    return digest, rows


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
) -> None:
    """List every signature of an image: kind, status, signer, artifact."""
    conn = Connection(plain_http, insecure, tls_ca, authfile)
    try:
        digest, rows = list_signatures(ref, key or [], gpg_key or [], ca_pub, hash_override, conn)
    except SigningError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{ref} ({digest}): {len(rows)} signature(s)")
    for row in rows:
        typer.echo(
            f"{row.kind:<16} {row.status:<12} {row.signer}  {row.artifact}"
            + (f"  ({row.detail})" if row.detail else "")
        )
