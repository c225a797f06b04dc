"""`trustyard verify REF --authority-roots DIR`: which signatures of an image the namespace
authority authorizes (issue 20 part 2), judged with roots the user chose.

Every signature found (cosign, simple signing, JWS schema 1, ir-sign annotations, and the Notary
role keys with `--trust-server`) is printed with its kind, key ID, and the user and namespace grant that authorizes it, or why none does.
Exit status: 0 when at least one signature is authorized, 1 when none is, 2 when the check
could not be made (unreadable roots or statements, unreachable registry).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from trustyard.authority.roots import RootsError, load_roots
from trustyard.cli.authority import CliError, read_statements
from trustyard.cli.signatures import Connection, NotaryOptions, open_trust_client
from trustyard.registry.policy_authority import notary_verdicts
from trustyard.signing.authority_match import GrantedKeys, Verdict, summarize
from trustyard.signing.authority_verify import VerifyClient, granted_keys, judge_remote
from trustyard.signing.errors import SigningError
from trustyard.signing.registry_client import RemoteRef
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.repository import gun_of
from trustyard.trust.model import ROOT


def notary_verdicts_remote(
    ref: RemoteRef,
    digest: str,
    size: int,
    keys: GrantedKeys,
    opts: NotaryOptions,
    conn: Connection,
) -> list[Verdict]:
    """The Notary role keys that sign this manifest, judged; none without trust data."""
    algorithm, _, hex_ = digest.partition(":")
    gun = opts.gun or gun_of(ref.host, ref.repository)
    if algorithm != "sha256":
        return []
    try:
        with open_trust_client(ref, opts, conn) as client:
            if client.get_file(gun, ROOT) is None:
                return []
            coll = client.fetch(gun)
    except TrustError as exc:
        return [Verdict("notary", gun, None, False, f"notary trust data: {exc}")]
    return notary_verdicts(coll, gun, ref.repository, hex_, size, ref.tag, keys)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def verify(
    ref: Annotated[str, typer.Argument(help="HOST[:PORT]/REPO:TAG or …@DIGEST")],
    authority_roots: Annotated[
        Path,
        typer.Option(
            "--authority-roots",
            help="Directory of authority roots (NAME.pem; NAME.pem.disabled is switched off).",
        ),
    ],
    statements: Annotated[
        Path | None,
        typer.Option(
            "--statements",
            help="Statements saved by `trustyard authority fetch` (a directory of *.jws, or "
            "a file), for offline use, instead of the registry's.",
        ),
    ] = None,
    plain_http: Annotated[bool, typer.Option("--plain-http")] = False,
    insecure: Annotated[bool, typer.Option("--insecure")] = False,
    tls_ca: Annotated[Path | None, typer.Option("--tls-ca")] = None,
    authfile: Annotated[Path | None, typer.Option("--authfile")] = None,
    trust_server: Annotated[
        str | None,
        typer.Option("--trust-server", help="Also judge Notary role keys from this server."),
    ] = None,
    gun: Annotated[
        str | None, typer.Option("--gun", help="Notary GUN (default: HOST[:PORT]/REPO).")
    ] = None,
    trust_dir: Annotated[
        Path | None,
        typer.Option(
            "--trust-dir", help="Trust client dir: cached roots, pins (~/.trustyard/trust)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """Print every signature of an image and the authority grant that authorizes it (or why
    none does); exit non-zero when no signature is authorized."""
    conn = Connection(plain_http, insecure, tls_ca, authfile)
    notary = NotaryOptions(gun, trust_server, trust_dir, None, trust_server is not None)
    try:
        remote = RemoteRef.parse(ref)
        roots = load_roots(authority_roots)
        if not any(r.enabled for r in roots):
            raise RootsError(f"{authority_roots} holds no enabled root (NAME.pem)")
        with VerifyClient(
            remote.host,
            plain_http=conn.plain_http,
            insecure=conn.insecure,
            ca_file=conn.tls_ca,
            auth_file=conn.authfile,
        ) as client:
            if statements is not None:
                found = read_statements([statements])
            else:
                found = client.fetch_statements()
            keys = granted_keys(found, roots)
            digest, size, verdicts = judge_remote(client, remote, keys)
        if notary.enabled:
            verdicts += notary_verdicts_remote(remote, digest, size, keys, notary, conn)
    except (SigningError, RootsError, CliError, ValueError) as exc:
        raise _fail(str(exc), 2) from None
    ok, reason, _ = summarize(verdicts)
    if as_json:
        typer.echo(json.dumps([v.to_json() for v in verdicts], indent=2))
    else:
        authorized = sum(v.authorized for v in verdicts)
        typer.echo(
            f"{ref} ({digest}): {len(verdicts)} signature(s), {authorized} authorized "
            f"({len(keys.graph.grants)} grant(s) from {len(found)} statement(s))"
        )
        for v in verdicts:
            status = "authorized" if v.authorized else "not authorized"
            typer.echo(f"{v.kind:<15} {status:<15} {v.key_id or '-'}  {v.where}")
            typer.echo(f"    {v.reason}")
    if not ok:
        raise _fail(f"{ref}: {reason}", 1)
