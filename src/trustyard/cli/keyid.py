"""`trustyard keyid FILE`: the libtrust KeyID (and RFC 7638 thumbprint) of a key or certificate.

Seed 000 in one command: Distribution 2.x looks a token's `kid` up by the libtrust KeyID of each
certificate's *public key*; hashing the whole certificate gives a different, useless value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trustyard.crypto.keyid import KeyFileError, certificate_der_kid, load_key_material


def keyid(
    file: Annotated[Path, typer.Argument(help="PEM/DER certificate, public or private key.")],
    all_forms: Annotated[
        bool, typer.Option("--all", help="Also print the RFC 7638 thumbprint (Distribution 3.x).")
    ] = False,
    expect: Annotated[
        str | None,
        typer.Option("--expect", help="A kid to check (e.g. from a token header or an error)."),
    ] = None,
) -> None:
    """Print the libtrust KeyID of FILE's public key (what Distribution 2.x expects as `kid`)."""
    try:
        loaded = load_key_material(file.read_bytes())
    except FileNotFoundError:
        typer.echo(f"error: {file} does not exist", err=True)
        raise typer.Exit(2) from None
    except KeyFileError as exc:
        typer.echo(f"error: {file}: {exc}", err=True)
        raise typer.Exit(2) from None
    kids = loaded.kids()
    if all_forms:
        typer.echo(f"libtrust:  {kids['libtrust']}")
        typer.echo(f"rfc7638:   {kids['rfc7638']}")
        if loaded.certificate is not None:
            typer.echo(
                f"(not a kid: libtrust form over the certificate DER, seed 000's mistake: "
                f"{certificate_der_kid(loaded.certificate)})"
            )
    else:
        typer.echo(kids["libtrust"])
    if expect is None:
        return
    if expect in kids.values():
        form = "libtrust KeyID" if expect == kids["libtrust"] else "RFC 7638 thumbprint"
        typer.echo(f"ok: {expect} is the {form} of this {loaded.kind}", err=True)
        return
    if loaded.certificate is not None and expect == certificate_der_kid(loaded.certificate):
        typer.echo(
            f"error: {expect} was computed over the whole certificate (DER), not its public "
            f"key. The libtrust KeyID hashes the DER SubjectPublicKeyInfo: use "
            f"{kids['libtrust']} (Distribution 2.x, notary) or {kids['rfc7638']} "
            "(Distribution 3.x).",
            err=True,
        )
    else:
        typer.echo(
            f"error: {expect} is not a key ID of this {loaded.kind}; its libtrust KeyID is "
            f"{kids['libtrust']} and its RFC 7638 thumbprint is {kids['rfc7638']}. The token "
            "was signed by a different key, or its kid was computed wrongly.",
            err=True,
        )
    raise typer.Exit(1)
