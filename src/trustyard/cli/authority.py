"""`trustyard authority grant|revoke|fetch|show|roots`: the namespace authority (issue 20 part 2).

`grant` and `revoke` issue statements (authority/statements.py) with a key file or a PKCS#11 key
and store them in a registry (`--registry`) and/or a file (`--out`); `fetch` copies every
statement a registry holds into a directory for offline use; `show` evaluates statement files
against the roots directory the client chose (authority/roots.py) and prints the grants and
every refusal with its reason. See docs/authority.md.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trustyard.authority import roots as roots_dir
from trustyard.authority import statements
from trustyard.authority.model import Graph
from trustyard.crypto.pkcs11 import Pkcs11Signer
from trustyard.signing.authority_client import AuthorityClient, split_registry
from trustyard.signing.errors import SigningError

app = typer.Typer(
    help="The namespace authority: statements linking keys to users and users to namespaces.",
    no_args_is_help=True,
)
roots_app = typer.Typer(help="The roots directory: which authorities this client trusts.")
app.add_typer(roots_app, name="roots")

DEFAULT_HOME = Path("~/.trustyard/authority")
DEFAULT_STATEMENTS = DEFAULT_HOME / "statements"
DEFAULT_ROOTS = DEFAULT_HOME / "roots"

AuthorityKeyOpt = Annotated[
    str,
    typer.Option(
        "--authority-key",
        help="The authority's EC private key (PEM/DER file) or a pkcs11: URI (RFC 7512).",
    ),
]
AuthorityCertOpt = Annotated[
    Path,
    typer.Option(
        "--authority-cert",
        help="The authority's certificate (PEM; may hold the chain after it, leaf first).",
    ),
]
AuthorityChainOpt = Annotated[
    Path | None,
    typer.Option("--authority-chain", help="Intermediate certificates (PEM), leaf's issuer first."),
]
RegistryOpt = Annotated[
    str | None,
    typer.Option("--registry", help="Registry to store the statement in: http(s)://HOST[:PORT]."),
]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="Also write the statement to this file.")
]
InsecureOpt = Annotated[bool, typer.Option("--insecure", help="Do not verify TLS.")]
TlsCaOpt = Annotated[Path | None, typer.Option("--tls-ca", help="CA bundle for the registry.")]
AuthfileOpt = Annotated[
    Path | None, typer.Option("--authfile", help="Docker config.json with credentials.")
]
RootsOpt = Annotated[
    Path,
    typer.Option(
        "--authority-roots",
        help="Roots directory: NAME.pem enabled, NAME.pem.disabled disabled.",
    ),
]


class CliError(Exception):
    """A usage or input problem, printed as one line."""


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


# -- inputs ---------------------------------------------------------------------------------
def _read(path: Path, what: str) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def open_authority_signer(spec: str) -> statements.DigestSigner:
    """A pkcs11: URI (P-256/P-384 token key) or an unencrypted EC private key file."""
    if spec.startswith("pkcs11:"):
        return Pkcs11Signer.from_uri(spec)
    data = _read(Path(spec), "authority key")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key: object = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError:
        raise CliError(f"{spec}: the key is password-protected; decrypt it first") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CliError(f"{spec}: not a PEM or DER private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CliError(f"{spec}: the authority key must be EC (P-256 or P-384)")
    return statements.KeySigner(key)


def load_chain(cert: Path, chain: Path | None) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for path, what in ((cert, "authority certificate"), (chain, "authority chain")):
        if path is None:
            continue
        try:
            certs += x509.load_pem_x509_certificates(_read(path, what))
        except ValueError:
            raise CliError(f"{path}: no PEM certificate in the {what}") from None
    return certs


_RELATIVE = re.compile(r"^(\d{1,6})([dhm])$")


def parse_expires(text: str | None, now: datetime) -> datetime | None:
    """`30d`, `12h`, `90m`, a date (`2027-01-01`, midnight UTC) or an RFC 3339 time."""
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
        return now + timedelta(**{unit: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CliError(
            f"--expires {text!r}: use a duration (30d, 12h, 90m), a date (2027-01-01) or an "
            "RFC 3339 time"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _client(registry: str, insecure: bool, tls_ca: Path | None, authfile: Path | None) -> Any:
    host, plain = split_registry(registry)
    return AuthorityClient(
        host, plain_http=plain, insecure=insecure, ca_file=tls_ca, auth_file=authfile
    )


def _publish(
    statement: bytes,
    registry: str | None,
    out: Path | None,
    insecure: bool,
    tls_ca: Path | None,
    authfile: Path | None,
) -> None:
    parsed = statements.parse(statement)
    if out is not None:
        out.expanduser().write_bytes(statement + b"\n")
        typer.echo(f"wrote {parsed.type} {parsed.id} to {out}", err=True)
    if registry is not None:
        with _client(registry, insecure, tls_ca, authfile) as client:
            answer = client.post_statement(statement)
        state = "stored" if answer.get("created") else "already stored"
        typer.echo(f"{state} {parsed.type} {parsed.id} in {registry}", err=True)
    if out is None and registry is None:
        typer.echo(statement.decode())
    else:
        typer.echo(parsed.id)


# -- grant / revoke ---------------------------------------------------------------------------
@app.command()
def grant(
    authority_key: AuthorityKeyOpt,
    authority_cert: AuthorityCertOpt,
    key: Annotated[
        Path,
        typer.Option(
            "--key", help="The granted public key: PEM/DER key or certificate, or an OpenPGP key."
        ),
    ],
    user: Annotated[str, typer.Option("--user", help="Who holds the key.")],
    namespace: Annotated[
        list[str], typer.Option("--namespace", help="Repository glob the user may sign for.")
    ],
    authority_chain: AuthorityChainOpt = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help="30d, 12h, 2027-01-01 or an RFC 3339 time.")
    ] = None,
    registry: RegistryOpt = None,
    out: OutOpt = None,
    insecure: InsecureOpt = False,
    tls_ca: TlsCaOpt = None,
    authfile: AuthfileOpt = None,
) -> None:
    """Issue a grant: KEY belongs to USER, and USER may sign for the namespaces."""
    try:
        now = datetime.now(UTC)
        statement = statements.issue_grant(
            open_authority_signer(authority_key),
            load_chain(authority_cert, authority_chain),
            _read(key, "key"),
            user,
            namespace,
            expires=parse_expires(expires, now),
            now=now,
        )
        _publish(statement, registry, out, insecure, tls_ca, authfile)
    except (CliError, statements.StatementError, SigningError) as exc:
        raise _fail(exc) from None


@app.command()
def revoke(
    authority_key: AuthorityKeyOpt,
    authority_cert: AuthorityCertOpt,
    reason: Annotated[str, typer.Option("--reason", help="Why (shown with every refusal).")],
    statement: Annotated[
        str | None, typer.Option("--statement", help="Id of the statement to revoke.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Revoke every earlier grant of a key: a key file or key id."),
    ] = None,
    authority_chain: AuthorityChainOpt = None,
    registry: RegistryOpt = None,
    out: OutOpt = None,
    insecure: InsecureOpt = False,
    tls_ca: TlsCaOpt = None,
    authfile: AuthfileOpt = None,
) -> None:
    """Issue a revocation of one statement (--statement) or of a key (--key)."""
    try:
        if (statement is None) == (key is None):
            raise CliError("give exactly one of --statement ID and --key PUB|KEYID")
        key_id = None
        if key is not None:
            path = Path(key).expanduser()
            key_id = statements.describe_key(path.read_bytes())[1] if path.is_file() else key
            if re.fullmatch(r"[0-9a-fA-F]{40}", key_id):  # OpenPGP fingerprints are upper-case
                key_id = key_id.upper()
        revocation = statements.issue_revocation(
            open_authority_signer(authority_key),
            load_chain(authority_cert, authority_chain),
            statement_id=statement,
            key_id=key_id,
            reason=reason,
        )
        _publish(revocation, registry, out, insecure, tls_ca, authfile)
    except (CliError, statements.StatementError, SigningError) as exc:
        raise _fail(exc) from None


# -- fetch / show ---------------------------------------------------------------------------
@app.command()
def fetch(
    registry: Annotated[str, typer.Option("--registry", help="http(s)://HOST[:PORT]")],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the statements (one ID.jws each).")
    ] = DEFAULT_STATEMENTS,
    insecure: InsecureOpt = False,
    tls_ca: TlsCaOpt = None,
    authfile: AuthfileOpt = None,
) -> None:
    """Copy every statement a registry holds into a directory, for `show` and offline checks."""
    try:
        with _client(registry, insecure, tls_ca, authfile) as client:
            fetched = client.fetch_statements()
        target = out.expanduser()
        target.mkdir(parents=True, exist_ok=True)
        new = 0
        for raw in fetched:
            try:
                name = statements.parse(raw).id
            except statements.StatementError:
                name = statements.label(raw).replace(":", "-")
            path = target / f"{name}.jws"
            if not path.exists():
                new += 1
            tmp = path.with_suffix(".jws.tmp")
            tmp.write_bytes(raw + b"\n")
            tmp.replace(path)
    except (CliError, SigningError, OSError) as exc:
        raise _fail(exc) from None
    typer.echo(f"fetched {len(fetched)} statement(s) from {registry} into {target} ({new} new)")


def read_statements(paths: list[Path]) -> list[bytes]:
    """Statements from files (one per line) and directories (their *.jws files)."""
    found: list[bytes] = []
    for path in paths:
        path = path.expanduser()
        files = sorted(path.glob("*.jws")) if path.is_dir() else [path]
        for file in files:
            found += [line for line in _read(file, "statements").splitlines() if line.strip()]
    return found


def graph_json(graph: Graph) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")

    return {
        "grants": [
            {
                "key_id": g.key_id,
                "key_type": g.key_type,
                "user": g.user,
                "namespaces": list(g.namespaces),
                "statement": g.statement,
                "authority": g.authority,
                "expires": when(g.expires),
            }
            for g in graph.grants
        ],
        "refused": [
            {"statement": r.statement, "reason": r.reason, "key_id": r.key_id}
            for r in graph.refused
        ],
        "revocations": [
            {
                "statement": r.statement,
                "revokes_statement": r.revokes_statement,
                "revokes_key": r.revokes_key,
                "reason": r.reason,
                "issued": when(r.issued),
                "authority": r.authority,
            }
            for r in graph.revocations
        ],
    }


@app.command()
def show(
    sources: Annotated[
        list[Path] | None,
        typer.Argument(help="Statement files or directories (default: where fetch puts them)."),
    ] = None,
    authority_roots: RootsOpt = DEFAULT_ROOTS,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Evaluate statements against the roots: the grants, and every refusal with its reason."""
    try:
        roots = roots_dir.load_roots(authority_roots.expanduser())
        graph = statements.evaluate(
            read_statements(sources or [DEFAULT_STATEMENTS]), roots, datetime.now(UTC)
        )
    except (CliError, roots_dir.RootsError) as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps(graph_json(graph), indent=2))
        return
    enabled = sum(r.enabled for r in roots)
    typer.echo(f"roots: {enabled} enabled, {len(roots) - enabled} disabled ({authority_roots})")
    typer.echo(f"{len(graph.grants)} grant(s)")
    for g in graph.grants:
        until = g.expires.strftime("%Y-%m-%d") if g.expires else "never"
        typer.echo(
            f"  {g.user:<16} {', '.join(g.namespaces):<24} {g.key_type:<7} {g.key_id}  "
            f"(statement {g.statement}, by {g.authority}, expires {until})"
        )
    typer.echo(f"{len(graph.refused)} refused")
    for r in graph.refused:
        typer.echo(f"  {r.statement}: {r.reason}")


# -- roots ----------------------------------------------------------------------------------
def _roots_action(action: Any) -> None:
    try:
        typer.echo(action())
    except (roots_dir.RootsError, OSError) as exc:
        raise _fail(exc) from None


@roots_app.command("add")
def roots_add(
    pem: Annotated[Path, typer.Argument(help="A root CA certificate (PEM).")],
    authority_roots: RootsOpt = DEFAULT_ROOTS,
    name: Annotated[str | None, typer.Option("--name", help="File name in the dir.")] = None,
) -> None:
    """Trust a root: copy it into the roots directory (enabled)."""
    _roots_action(lambda: f"added {roots_dir.add_root(authority_roots.expanduser(), pem, name)}")


@roots_app.command("disable")
def roots_disable(name: str, authority_roots: RootsOpt = DEFAULT_ROOTS) -> None:
    """Stop trusting a root, keeping it (statements under it are refused by name)."""
    directory = authority_roots.expanduser()
    _roots_action(lambda: f"disabled {roots_dir.set_enabled(directory, name, False)}")


@roots_app.command("enable")
def roots_enable(name: str, authority_roots: RootsOpt = DEFAULT_ROOTS) -> None:
    """Trust a disabled root again."""
    directory = authority_roots.expanduser()
    _roots_action(lambda: f"enabled {roots_dir.set_enabled(directory, name, True)}")


@roots_app.command("remove")
def roots_remove(name: str, authority_roots: RootsOpt = DEFAULT_ROOTS) -> None:
    """Delete a root from the directory."""
    directory = authority_roots.expanduser()
    _roots_action(lambda: f"removed {roots_dir.remove_root(directory, name)}")


@roots_app.command("list")
def roots_list(authority_roots: RootsOpt = DEFAULT_ROOTS) -> None:
    """The roots and whether each is enabled."""
    try:
        roots = roots_dir.load_roots(authority_roots.expanduser())
    except roots_dir.RootsError as exc:
        raise _fail(exc) from None
    for root in roots:
        state = "enabled " if root.enabled else "disabled"
        typer.echo(f"{state} {root.name}  {root.certificate.subject.rfc4514_string()[:100]}")
