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

from trustyard.signing import archive, chain, image, keys
from trustyard.signing.errors import ArchiveError, KeyFormatError, SigningError, VerificationError
from trustyard.signing.fileio import write_atomic

app = typer.Typer(help="Sign and verify images (ir-sign compatible).", no_args_is_help=True)

P = ParamSpec("P")
T = TypeVar("T")

RegistryOpt = Annotated[
    Path, typer.Option("-r", "--registry", help="Registry directory holding one layout per app.")
]
AppOpt = Annotated[str, typer.Option("-a", "--app", help="App name: REGISTRY_DIR/APP_NAME.")]
RefOpt = Annotated[str, typer.Option("-d", "--reference", help="Manifest tag or digest.")]
VendorOpt = Annotated[str, typer.Option("-v", "--vendor-key", help="Vendor private key (DER).")]
VendorSigOpt = Annotated[
    Path | None,
    typer.Option("-s", "--vendor-pub-sig", help="Root CA signature over vendor.pub (realistic)."),
]
CaPubOpt = Annotated[
    Path | None, typer.Option("-c", "--ca-pub", help="Root CA public key (realistic).")
]
CaPrvOpt = Annotated[
    str | None, typer.Option("-x", "--ca-key", help="Root CA private key (simplified).")
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
        return chain.vendor_endorsement(vendor, root=keys.open_signer(ca_key))
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
    input: Annotated[Path, typer.Option("-i", "--input", help="Private key (DER or PEM).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Public key file to write.")],
) -> None:
    """Write the SPKI DER public key (= openssl ec -pubout -outform DER)."""
    key = keys.load_private_key(_read(input), str(input))
    _write_output(output, keys.public_key_to_der(key.public_key()))


@app.command("sign")
@_user_errors
def sign(
    key: Annotated[str, typer.Option("-k", "--key", help="Private key (DER or PEM).")],
    file: Annotated[Path, typer.Option("-f", "--file", help="File to sign.")],
    signature: Annotated[Path, typer.Option("-s", "--signature", help="Signature to write.")],
) -> None:
    """ECDSA-SHA384 DER signature of FILE (= openssl dgst -sha384 -sign KEY -keyform DER)."""
    signer = keys.open_signer(key)
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
    registry: RegistryOpt,
    app_name: AppOpt,
    reference: RefOpt,
    vendor_key: VendorOpt,
    vendor_pub_sig: VendorSigOpt = None,
    ca_pub: CaPubOpt = None,
    ca_key: CaPrvOpt = None,
    add: AddOpt = False,
) -> None:
    """Sign an image's config with the vendor key; annotate and rehash its manifest."""
    vendor = keys.open_signer(vendor_key)
    endorsement = _endorsement(vendor, vendor_pub_sig, ca_pub, ca_key)
    archive.check_app_name(app_name)
    result = image.sign_image(registry / app_name, reference, vendor, endorsement, additional=add)
    _report_signed(result)


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
    vendor = keys.open_signer(vendor_key)
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
    registry: RegistryOpt,
    app_name: AppOpt,
    reference: RefOpt,
    ca_pub: Annotated[Path, typer.Option("-c", "--ca-pub", help="Root CA public key.")],
) -> None:
    """Verify config digest, vendor key endorsement and config signature(s) with the root CA."""
    root = keys.load_public_key(_read(ca_pub), str(ca_pub))
    archive.check_app_name(app_name)
    report = image.verify_image(registry / app_name, reference, root)
    for check in report.checks:
        typer.echo(f"{check.status:<4} {check.text}")
    if not report.ok:
        failed = next((c.text for c in report.checks if c.status == image.FAIL), "not verified")
        raise VerificationError(f"image {reference} does not verify: {failed}")
    typer.echo(
        f"verified: {reference} ({report.manifest_digest}) signed by {len(report.verified)} "
        "vendor key(s) endorsed by the root CA"
    )
