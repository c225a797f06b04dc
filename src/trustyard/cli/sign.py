"""`trustyard sign …`: ir-sign compatible keys, signatures and image signing on OCI layouts.

Each command is interchangeable with the openssl command docs/signing.md lists beside it. Every
`SigningError` becomes one line on stderr and exit code 1; no traceback reaches the user.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from trustyard.crypto import ecdsa as keys
from trustyard.crypto.signer import open_signer
from trustyard.signing import archive, chain, image, remote
from trustyard.signing.errors import ArchiveError, KeyFormatError, SigningError, VerificationError
from trustyard.signing.fileio import write_atomic
from trustyard.signing.registry_client import RegistryClient, RemoteRef

app = typer.Typer(help="Sign and verify images (ir-sign compatible).", no_args_is_help=True)

P = ParamSpec("P")
T = TypeVar("T")

RegistryOpt = Annotated[
    Path, typer.Option("-r", "--registry", help="Registry directory holding one layout per app.")
]
AppOpt = Annotated[str, typer.Option("-a", "--app", help="App name: REGISTRY_DIR/APP_NAME.")]
RefOpt = Annotated[str, typer.Option("-d", "--reference", help="Manifest tag or digest.")]
MaybeRegistryOpt = Annotated[
    Path | None,
    typer.Option("-r", "--registry", help="Registry directory holding one layout per app."),
]
MaybeAppOpt = Annotated[
    str | None, typer.Option("-a", "--app", help="App name: REGISTRY_DIR/APP_NAME.")
]
MaybeRefOpt = Annotated[
    str | None, typer.Option("-d", "--reference", help="Manifest tag or digest (in the layout).")
]
RemoteOpt = Annotated[
    str | None,
    typer.Option(
        "--ref",
        help="Image in a live registry, HOST[:PORT]/REPO:TAG, …@DIGEST or …:TAG@DIGEST "
        "(instead of -r/-a/-d).",
    ),
]
PlainHttpOpt = Annotated[
    bool, typer.Option("--plain-http", help="--ref: talk plain HTTP to the registry.")
]
InsecureOpt = Annotated[
    bool,
    typer.Option(
        "--insecure",
        help="--ref: do not verify the registry's TLS certificate; fall back to plain HTTP.",
    ),
]
TlsCaOpt = Annotated[
    Path | None,
    typer.Option("--tls-ca", help="--ref: CA certificate (PEM) the registry's TLS chains to."),
]
AuthFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--authfile",
        help="--ref: Docker config.json with `auths` (default: $REGISTRY_AUTH_FILE, "
        "$DOCKER_CONFIG/config.json, ~/.docker/config.json).",
    ),
]
VendorOpt = Annotated[
    str, typer.Option("-v", "--vendor-key", help="Vendor private key (DER/PEM) or pkcs11: URI.")
]
VendorSigOpt = Annotated[
    Path | None,
    typer.Option("-s", "--vendor-pub-sig", help="Root CA signature over vendor.pub (realistic)."),
]
CaPubOpt = Annotated[
    Path | None, typer.Option("-c", "--ca-pub", help="Root CA public key (realistic).")
]
CaPrvOpt = Annotated[
    str | None,
    typer.Option("-x", "--ca-key", help="Root CA private key or pkcs11: URI (simplified)."),
]
AddOpt = Annotated[
    bool,
    typer.Option(
        "--add",
        help="Keep existing signatures; add this one (extra annotations ir-sign ignores).",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing key file.")]


def _user_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn typed signing errors into `error: …` on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except SigningError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _write_output(path: Path, data: bytes, *, private: bool = False, force: bool = True) -> None:
    if private and not force and path.exists():
        raise KeyFormatError(f"{path} exists; refusing to overwrite a key (use --force)")
    try:
        write_atomic(path, data, 0o600 if private else 0o644)
    except OSError as exc:
        raise KeyFormatError(f"cannot write {path}: {exc.strerror or exc}") from None


def _read(path: Path) -> bytes:
    return keys.read_key_file(path)


def _endorsement(
    vendor: keys.Signer, vendor_sig: Path | None, ca_pub: Path | None, ca_key: str | None
) -> bytes:
    if ca_key is not None and vendor_sig is None and ca_pub is None:
        return chain.vendor_endorsement(vendor, root=open_signer(ca_key))
    if ca_key is None and vendor_sig is not None and ca_pub is not None:
        return chain.vendor_endorsement(
            vendor,
            endorsement=_read(vendor_sig),
            root_pub=keys.load_public_key(_read(ca_pub), str(ca_pub)),
        )
    return chain.vendor_endorsement(vendor)  # raises: says which options to pass


def _report_signed(result: image.SignResult) -> None:
    typer.echo(
        f"signed: vendor key {result.key_id} ({result.slot} annotations); "
        f"manifest {result.old_digest} -> {result.new_digest}"
    )


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    columns = (
        TextColumn("extracting"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("extract", total=total)
        yield lambda n: bar.advance(task, n)


@app.command("gen-key")
@_user_errors
def gen_key(
    output: Annotated[Path, typer.Option("-o", "--output", help="Private key file to write.")],
    force: ForceOpt = False,
) -> None:
    """Generate a secp384r1 key, SEC1 DER (= openssl ecparam -genkey -noout -outform DER)."""
    key = keys.generate_private_key()
    _write_output(output, keys.private_key_to_der(key), private=True, force=force)


@app.command("extract-public")
@_user_errors
def extract_public(
    input: Annotated[
        str, typer.Option("-i", "--input", help="Private key (DER or PEM) or pkcs11: URI.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Public key file to write.")],
) -> None:
    """Write the SPKI DER public key (= openssl ec -pubout -outform DER)."""
    _write_output(output, open_signer(input).public_key_der())


@app.command("sign")
@_user_errors
def sign(
    key: Annotated[
        str, typer.Option("-k", "--key", help="Private key (DER or PEM) or pkcs11: URI.")
    ],
    file: Annotated[Path, typer.Option("-f", "--file", help="File to sign.")],
    signature: Annotated[Path, typer.Option("-s", "--signature", help="Signature to write.")],
) -> None:
    """ECDSA-SHA384 DER signature of FILE (= openssl dgst -sha384 -sign KEY -keyform DER)."""
    signer = open_signer(key)
    _write_output(signature, signer.sign_digest(keys.sha384_file(file)))


@app.command("verify")
@_user_errors
def verify(
    public: Annotated[Path, typer.Option("-p", "--public", help="Public key (DER or PEM).")],
    file: Annotated[Path, typer.Option("-f", "--file", help="File that was signed.")],
    signature: Annotated[Path, typer.Option("-s", "--signature", help="DER signature.")],
) -> None:
    """Verify a signature (= openssl dgst -sha384 -verify PUB -keyform DER -signature SIG)."""
    pub = keys.load_public_key(_read(public), str(public))
    sig = _read(signature)
    keys.verify_digest(pub, sig, keys.sha384_file(file), str(signature))
    typer.echo("Verified OK")


@app.command("sign-image")
@_user_errors
def sign_image(
    vendor_key: VendorOpt,
    registry: MaybeRegistryOpt = None,
    app_name: MaybeAppOpt = None,
    reference: MaybeRefOpt = None,
    vendor_pub_sig: VendorSigOpt = None,
    ca_pub: CaPubOpt = None,
    ca_key: CaPrvOpt = None,
    add: AddOpt = False,
    ref: RemoteOpt = None,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    tls_ca: TlsCaOpt = None,
    authfile: AuthFileOpt = None,
) -> None:
    """Sign an image's config with the vendor key; annotate and rehash its manifest."""
    target = _target(registry, app_name, reference, ref)
    vendor = open_signer(vendor_key)
    endorsement = _endorsement(vendor, vendor_pub_sig, ca_pub, ca_key)
    if isinstance(target, RemoteRef):
        with _client(target, True, plain_http, insecure, tls_ca, authfile) as client:
            pushed = remote.sign_remote(client, target, vendor, endorsement, additional=add)
        _report_signed(pushed.result)
        if pushed.index_digest:
            typer.echo(f"pushed index {pushed.index_digest}")
        where = f"tag {pushed.tag} moved" if pushed.tag else "no tag moved (digest reference)"
        typer.echo(f"pushed to {target.host}/{target.repository}: {where}")
        return
    registry_dir, app_dir, manifest_ref = target
    archive.check_app_name(app_dir)
    result = image.sign_image(
        registry_dir / app_dir, manifest_ref, vendor, endorsement, additional=add
    )
    _report_signed(result)


def _target(
    registry: Path | None, app_name: str | None, reference: str | None, ref: str | None
) -> RemoteRef | tuple[Path, str, str]:
    """Either a registry reference (--ref) or a layout (-r/-a/-d), never both."""
    if ref is not None:
        if registry is not None or app_name is not None or reference is not None:
            raise SigningError("give either --ref HOST/REPO:TAG or -r/-a/-d, not both")
        return RemoteRef.parse(ref)
    missing = [
        name
        for name, value in (("-r", registry), ("-a", app_name), ("-d", reference))
        if value is None
    ]
    if missing:
        raise SigningError(
            f"missing {', '.join(missing)}: give -r REGISTRY_DIR -a APP_NAME -d REF "
            "(a layout) or --ref HOST[:PORT]/REPO:TAG (a live registry)"
        )
    assert registry is not None and app_name is not None and reference is not None
    return registry, app_name, reference


def _client(
    ref: RemoteRef,
    push: bool,
    plain_http: bool,
    insecure: bool,
    tls_ca: Path | None,
    authfile: Path | None,
) -> RegistryClient:
    return RegistryClient(
        ref.host,
        push=push,
        plain_http=plain_http,
        insecure=insecure,
        ca_file=tls_ca,
        auth_file=authfile,
    )


@app.command("extract-sign-image")
@_user_errors
def extract_sign_image(
    registry: RegistryOpt,
    file: Annotated[Path, typer.Option("-f", "--file", help="OCI or docker save archive (tar).")],
    reference: RefOpt,
    vendor_key: VendorOpt,
    app_name: Annotated[
        str | None, typer.Option("-a", "--app", help="App name (default: file name sans .tar).")
    ] = None,
    vendor_pub_sig: VendorSigOpt = None,
    ca_pub: CaPubOpt = None,
    ca_key: CaPrvOpt = None,
    add: AddOpt = False,
) -> None:
    """Unpack an image archive into REGISTRY_DIR/APP_NAME, then sign it as sign-image does."""
    vendor = open_signer(vendor_key)
    endorsement = _endorsement(vendor, vendor_pub_sig, ca_pub, ca_key)
    app_dir = app_name or archive.default_app_name(file)
    try:
        total = file.stat().st_size
    except OSError as exc:
        raise ArchiveError(f"cannot read {file}: {exc.strerror or exc}") from None
    with _progress(total) as progress:
        result = archive.import_archive(
            file,
            registry,
            app_dir,
            lambda layout: image.sign_image(layout, reference, vendor, endorsement, additional=add),
            progress,
        )
    typer.echo(f"extracted {file} into {registry / app_dir}")
    _report_signed(result)


@app.command("verify-image")
@_user_errors
def verify_image(
    ca_pub: Annotated[Path, typer.Option("-c", "--ca-pub", help="Root CA public key.")],
    registry: MaybeRegistryOpt = None,
    app_name: MaybeAppOpt = None,
    reference: MaybeRefOpt = None,
    ref: RemoteOpt = None,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    tls_ca: TlsCaOpt = None,
    authfile: AuthFileOpt = None,
) -> None:
    """Verify config digest, vendor key endorsement and config signature(s) with the root CA."""
    target = _target(registry, app_name, reference, ref)
    root = keys.load_public_key(_read(ca_pub), str(ca_pub))
    if isinstance(target, RemoteRef):
        with _client(target, False, plain_http, insecure, tls_ca, authfile) as client:
            report = remote.verify_remote(client, target, root)
        name = str(target)
    else:
        registry_dir, app_dir, name = target
        archive.check_app_name(app_dir)
        report = image.verify_image(registry_dir / app_dir, name, root)
    for check in report.checks:
        typer.echo(f"{check.status:<4} {check.text}")
    if not report.ok:
        failed = next((c.text for c in report.checks if c.status == image.FAIL), "not verified")
        raise VerificationError(f"image {name} does not verify: {failed}")
    typer.echo(
        f"verified: {name} ({report.manifest_digest}) signed by {len(report.verified)} "
        "vendor key(s) endorsed by the root CA"
    )


# -- cosign formats (cli/signatures.py does the work) ---------------------------------------
@app.command("cosign")
@_user_errors
def cosign_sign(
    ref: Annotated[str, typer.Argument(help="HOST[:PORT]/REPO:TAG or …@DIGEST")],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            help="cosign.key (password: COSIGN_PASSWORD), PEM/DER EC P-256/P-384 key, or "
            "pkcs11: URI.",
        ),
    ],
    mode: Annotated[
        str, typer.Option("--mode", help="tag (sha256-<hex>.sig), referrers or bundle (v0.3).")
    ] = "tag",
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    tls_ca: TlsCaOpt = None,
    authfile: AuthFileOpt = None,
) -> None:
    """Sign an image in a registry in cosign's formats (key-based)."""
    from trustyard.cli import signatures as sigs

    if mode not in ("tag", "referrers", "bundle"):
        raise SigningError(f"--mode must be tag, referrers or bundle, not {mode!r}")
    conn = sigs.Connection(plain_http, insecure, tls_ca, authfile)
    digest = sigs.cosign_sign(ref, key, mode, conn)
    typer.echo(f"signed {ref} ({mode}): signature manifest {digest}")


@app.command("verify-cosign")
@_user_errors
def verify_cosign(
    ref: Annotated[str, typer.Argument(help="HOST[:PORT]/REPO:TAG or …@DIGEST")],
    key: Annotated[list[Path], typer.Option("--key", help="Trusted public key; repeatable.")],
    hash_override: Annotated[
        str | None,
        typer.Option("--hash", help="ECDSA hash if not the curve's (cosign default: sha256)."),
    ] = None,
    plain_http: PlainHttpOpt = False,
    insecure: InsecureOpt = False,
    tls_ca: TlsCaOpt = None,
    authfile: AuthFileOpt = None,
) -> None:
    """Verify an image's cosign signatures (tag scheme, referrers, sigstore bundles)."""
    from trustyard.cli import signatures as sigs

    conn = sigs.Connection(plain_http, insecure, tls_ca, authfile)
    digest, found = sigs.verify_cosign(ref, key, hash_override, conn)
    for kind, artifact, check in found:
        extra = "; ".join(x for x in [check.reason, *check.notes] if x)
        typer.echo(f"{check.status:<12} {kind:<16} {check.signer}  {artifact}  {extra}".rstrip())
    if not any(check.status == "verified" for _, _, check in found):
        raise VerificationError(
            f"{ref} ({digest}): no cosign signature verifies with the given key(s)"
            + ("" if found else " (no cosign signatures found)")
        )
    typer.echo(f"verified: {ref} ({digest})")
