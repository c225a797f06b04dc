"""`trustyard trust …`: a Notary-compatible trust client with pinning, delegations and audit.

Every failure is one line on stderr and exit code 1; private keys and passphrases are never
printed.
"""

from __future__ import annotations

import functools
import getpass
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from trustyard.signing.errors import SigningError
from trustyard.signing.registry_client import RegistryClient, RemoteRef
from trustyard.trust.client import audit as audit_mod
from trustyard.trust.client.config import import_root_pin, load_config
from trustyard.trust.client.delegations import generate_delegate_key, load_delegation_key
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.keys import KeyStore, KeyStoreError
from trustyard.trust.client.pinning import canonical_key_id
from trustyard.trust.client.repository import TrustClient, gun_of

app = typer.Typer(help="Sign tags in a Notary-compatible trust server.", no_args_is_help=True)
delegation_app = typer.Typer(help="Delegate signing to other keys.", no_args_is_help=True)
key_app = typer.Typer(
    help="Generate delegate keys; pin known-good root keys.", no_args_is_help=True
)
app.add_typer(delegation_app, name="delegation")
app.add_typer(key_app, name="key")

P = ParamSpec("P")
T = TypeVar("T")


@dataclass
class Options:
    config: Path | None
    trust_dir: Path | None
    server: str | None
    plain_http: bool
    tls_ca: Path | None
    auth_file: Path | None = None


def _prompt(what: str, creating: bool) -> str | None:
    if not sys.stdin.isatty():
        return None
    value = getpass.getpass(f"passphrase for the {what}: ")
    if creating and getpass.getpass("repeat it: ") != value:
        raise KeyStoreError("the passphrases do not match")
    return value


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


def errors(func: Callable[P, T]) -> Callable[P, T]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except (TrustError, KeyStoreError, SigningError) as exc:
            raise _fail(str(exc)) from None

    return wrapper


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("-c", "--config", help="Notary-style config.json.")
    ] = None,
    trust_dir: Annotated[
        Path | None, typer.Option("-d", "--trust-dir", help="Default ~/.trustyard/trust.")
    ] = None,
    server: Annotated[
        str | None, typer.Option("-s", "--server", help="Trust server URL (default: config).")
    ] = None,
    plain_http: Annotated[
        bool, typer.Option("--plain-http", help="Read tags from the registry over plain HTTP.")
    ] = False,
    tls_ca: Annotated[
        Path | None, typer.Option("--tls-ca", help="CA certificate of the registry's TLS.")
    ] = None,
    auth_file: Annotated[
        Path | None,
        typer.Option(
            "--auth-file",
            help="Docker config.json with `auths` for the registry and trust server "
            "(default: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG, ~/.docker); $NOTARY_AUTH wins "
            "for the trust server.",
        ),
    ] = None,
) -> None:
    """Sign tags in a Notary-compatible trust server."""
    ctx.obj = Options(config, trust_dir, server, plain_http, tls_ca, auth_file)


def _client(ctx: typer.Context) -> TrustClient:
    o: Options = ctx.obj
    cfg = load_config(o.config, o.trust_dir, o.server)
    return TrustClient(cfg, KeyStore(cfg.trust_dir, _prompt), auth_file=o.auth_file)


def _keys(ctx: typer.Context) -> KeyStore:
    o: Options = ctx.obj
    cfg = load_config(o.config, o.trust_dir, o.server)
    return KeyStore(cfg.trust_dir, _prompt)


def _registry_target(ctx: typer.Context, ref: str) -> tuple[RemoteRef, str, int]:
    o: Options = ctx.obj
    parsed = RemoteRef.parse(ref)
    if parsed.tag is None:
        raise TrustError(f"{ref}: give a tag (HOST/REPO:TAG); trust data signs tags")
    with RegistryClient(
        parsed.host, plain_http=o.plain_http, ca_file=o.tls_ca, auth_file=o.auth_file
    ) as reg:
        fetched = reg.get_manifest(parsed.repository, parsed.digest or parsed.tag)
    algorithm, _, hex_ = fetched.digest.partition(":")
    if algorithm != "sha256":
        raise TrustError(f"{ref} has a {algorithm} digest; Notary targets need sha256")
    return parsed, hex_, len(fetched.data)


@app.command()
@errors
def init(
    ctx: typer.Context,
    gun: str,
    root_key: Annotated[
        str | None, typer.Option("--root-key", help="Private key file or pkcs11: URI.")
    ] = None,
    root_cert: Annotated[
        Path | None, typer.Option("--root-cert", help="Root certificate (CN = GUN), PEM.")
    ] = None,
    server_managed_snapshot: Annotated[
        bool, typer.Option("--server-managed-snapshot", help="The server signs snapshots.")
    ] = False,
    targets_key: Annotated[
        str | None,
        typer.Option("--targets-key", help="Targets key file or pkcs11: URI (default: new key)."),
    ] = None,
) -> None:
    """Create a collection: root (X.509, CN = GUN), targets and snapshot keys; publish."""
    with _client(ctx) as client:
        ids = client.init(
            gun,
            root_key=root_key,
            root_cert=root_cert,
            server_managed_snapshot=server_managed_snapshot,
            targets_key=targets_key,
        )
    typer.echo(f"initialized {gun}")
    for role, keyid in ids.items():
        typer.echo(f"  {role:<15} {keyid}")


RoleOpt = Annotated[
    list[str] | None,
    typer.Option("--role", help="Role to sign in (default: what you hold keys for)."),
]
GunOpt = Annotated[str | None, typer.Option("--gun", help="GUN (default: HOST/REPO).")]


@app.command()
@errors
def sign(
    ctx: typer.Context,
    ref: str,
    role: RoleOpt = None,
    gun: GunOpt = None,
    digest: Annotated[
        str | None, typer.Option("--digest", help="sha256:… to sign instead of reading the tag.")
    ] = None,
    size: Annotated[int | None, typer.Option("--size", help="Manifest size with --digest.")] = None,
) -> None:
    """Sign the digest and size the registry serves for REF's tag (or --digest/--size)."""
    if digest is not None:
        parsed = RemoteRef.parse(ref)
        if size is None or not digest.startswith("sha256:") or len(digest) != 71:
            raise TrustError("--digest needs sha256:<64 hex> and --size BYTES")
        hex_ = digest.split(":", 1)[1]
    else:
        parsed, hex_, size = _registry_target(ctx, ref)
    assert parsed.tag is not None and size is not None
    g = gun or gun_of(parsed.host, parsed.repository)
    with _client(ctx) as client:
        roles = client.add_target(g, parsed.tag, hex_, size, role)
    typer.echo(f"signed {parsed.tag} = sha256:{hex_} ({size} bytes) in {', '.join(roles)} of {g}")


@app.command()
@errors
def unsign(ctx: typer.Context, ref: str, role: RoleOpt = None, gun: GunOpt = None) -> None:
    """Remove REF's tag from the roles this client can sign."""
    parsed = RemoteRef.parse(ref)
    if parsed.tag is None:
        raise TrustError("give a tag")
    g = gun or gun_of(parsed.host, parsed.repository)
    with _client(ctx) as client:
        roles = client.remove_target(g, parsed.tag, role)
    typer.echo(f"removed {parsed.tag} from {', '.join(roles)} of {g}")


def _inspect(ctx: typer.Context, ref: str, gun: str | None) -> dict[str, Any]:
    parsed, hex_, size = _registry_target(ctx, ref)
    assert parsed.tag is not None
    g = gun or gun_of(parsed.host, parsed.repository)
    with _client(ctx) as client:
        coll, hits = client.lookup(g, parsed.tag)
    signed = []
    for hit in hits:
        keys = coll.keys.get(hit.role, {})
        signed.append(
            {
                "role": hit.role,
                "digest": f"sha256:{hit.sha256}",
                "size": hit.meta.length,
                "matches_registry": hit.sha256 == hex_ and hit.meta.length == size,
                "signed_by": [
                    {"key_id": k, "canonical_key_id": canonical_key_id(keys[k])}
                    for k in hit.signers
                    if k in keys
                ],
            }
        )
    effective = signed[0] if signed else None
    return {
        "gun": g,
        "tag": parsed.tag,
        "registry_digest": f"sha256:{hex_}",
        "registry_size": size,
        "root_trusted_by": coll.trust.how,
        "signatures": signed,
        "verified": bool(effective and effective["matches_registry"]),
        "warnings": coll.warnings,
    }


@app.command()
@errors
def inspect(
    ctx: typer.Context,
    ref: str,
    gun: GunOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show which roles and keys sign REF's tag and whether the registry still serves it."""
    report = _inspect(ctx, ref, gun)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    _print_report(report)


def _print_report(report: dict[str, Any]) -> None:
    typer.echo(f"{report['gun']}:{report['tag']}  registry {report['registry_digest']}")
    typer.echo(f"  root trusted by: {report['root_trusted_by']}")
    for s in report["signatures"]:
        state = "matches" if s["matches_registry"] else "DOES NOT MATCH the registry"
        keys = ", ".join(k["canonical_key_id"][:16] for k in s["signed_by"])
        typer.echo(f"  {s['role']}: {s['digest']} ({s['size']} bytes) {state}; keys {keys}")
    for w in report["warnings"]:
        typer.echo(f"  warning: {w}")


@app.command()
@errors
def verify(ctx: typer.Context, ref: str, gun: GunOpt = None) -> None:
    """Exit 0 only when the tag's signed digest is what the registry serves now."""
    report = _inspect(ctx, ref, gun)
    if not report["signatures"]:
        raise TrustError(f"{report['gun']}:{report['tag']} is not signed")
    first = report["signatures"][0]
    if not report["verified"]:
        raise TrustError(
            f"{report['gun']}:{report['tag']}: the registry serves {report['registry_digest']} "
            f"but {first['role']} signed {first['digest']} (the tag moved after signing)"
        )
    keys = ", ".join(k["canonical_key_id"][:16] for k in first["signed_by"])
    typer.echo(
        f"verified {report['gun']}:{report['tag']} = {report['registry_digest']}, signed in "
        f"{first['role']} by key {keys}"
    )


@delegation_app.command("add")
@errors
def delegation_add(
    ctx: typer.Context,
    gun: str,
    name: str,
    key: Annotated[list[Path], typer.Option("--key", help="Delegate's certificate or public key.")],
    paths: Annotated[
        list[str] | None, typer.Option("--paths", help="Allowed target prefixes.")
    ] = None,
    all_paths: Annotated[bool, typer.Option("--all-paths", help="Allow every target.")] = False,
    threshold: Annotated[int, typer.Option("--threshold")] = 1,
) -> None:
    """Delegate targets/NAME to the given keys (one per pushing workstation)."""
    if not paths and not all_paths:
        raise TrustError("give --paths PREFIX (repeatable) or --all-paths")
    keys = [load_delegation_key(p) for p in key]
    with _client(ctx) as client:
        role = client.add_delegation(
            gun, name, keys, [""] if all_paths else list(paths or []), threshold
        )
    typer.echo(f"delegated {role} of {gun} to {', '.join(canonical_key_id(k) for k in keys)}")


@delegation_app.command("remove")
@errors
def delegation_remove(
    ctx: typer.Context,
    gun: str,
    name: str,
    key_id: Annotated[
        list[str] | None, typer.Option("--key-id", help="Remove only this key (prefix).")
    ] = None,
) -> None:
    """Remove a delegation, or revoke only some of its keys."""
    with _client(ctx) as client:
        role = client.remove_delegation(gun, name, key_id)
    what = f"keys {', '.join(key_id)} of " if key_id else ""
    typer.echo(f"removed {what}{role} from {gun}")


@key_app.command("generate")
@errors
def key_generate(
    ctx: typer.Context,
    name: str,
    out: Annotated[Path, typer.Option("-o", "--output-dir")] = Path("."),
) -> None:
    """A delegate key (stored encrypted) and NAME.crt to hand to the collection's owner."""
    keyid, path = generate_delegate_key(_keys(ctx), name, out)
    typer.echo(f"generated key {keyid}; certificate {path}")


@key_app.command("rotate")
@errors
def key_rotate(
    ctx: typer.Context,
    gun: str,
    role: Annotated[str, typer.Argument(help="Only `root` is rotated by the client.")],
    root_key: Annotated[
        str | None, typer.Option("--root-key", help="New root key: file or pkcs11: URI.")
    ] = None,
    root_cert: Annotated[
        Path | None, typer.Option("--root-cert", help="Certificate (CN = GUN) for the new key.")
    ] = None,
    old_root_key: Annotated[
        str | None, typer.Option("--old-root-key", help="Current root key if not in the trust dir.")
    ] = None,
) -> None:
    """Rotate the root key (signed by the old and the new root)."""
    if role != "root":
        raise TrustError("only the root key is rotated here (timestamp/snapshot: the server)")
    with _client(ctx) as client:
        ids = client.rotate_root(
            gun, root_key=root_key, root_cert=root_cert, old_root_key=old_root_key
        )
    typer.echo(f"rotated the root of {gun} to {ids['root_canonical']}")


@key_app.command("import")
@errors
def key_import(
    ctx: typer.Context,
    file: Path,
    gun: Annotated[str, typer.Option("--gun", help="GUN or prefix* the root key is pinned for.")],
) -> None:
    """Pin a known-good root certificate or public key (no trust on first use for GUN)."""
    o: Options = ctx.obj
    cfg = load_config(o.config, o.trust_dir, o.server)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise TrustError(f"cannot read {file}: {exc.strerror}") from None
    keyid, what = import_root_pin(cfg, data, str(file), gun)
    typer.echo(f"pinned {what} {keyid} for {gun}")


@app.command()
@errors
def audit(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="Only GUNs starting with this.")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
    soon_days: Annotated[int, typer.Option("--soon-days", help="'Expiring soon' horizon.")] = 30,
) -> None:
    """Which keys can sign what: root key IDs, issuers, expiries, delegations, findings."""
    with _client(ctx) as client:
        report = audit_mod.audit(client, prefix, soon_days=soon_days)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    console = Console()
    table = Table("GUN", "root key (canonical)", "issuer / expires", "signers", "expiries")
    for c in report["collections"]:
        root = c.get("root") or {}
        signers = "\n".join(
            f"{r['role']}: {', '.join(k[:12] for k in r['keys'])} t={r['threshold']}"
            + (f" paths={r['paths']}" if "paths" in r else "")
            for r in c.get("signers", [])
        )
        expiries = "\n".join(f"{k}: {v}" for k, v in (c.get("expires") or {}).items())
        issuers = "\n".join(
            f"{k['issuer']} / {k['not_after']}" for k in root.get("keys", []) if k.get("issuer")
        )
        keys = "\n".join(k["canonical_key_id"][:16] for k in root.get("keys", []))
        table.add_row(c["gun"], keys, issuers, signers, expiries)
    console.print(table)
    for f in report["findings"]:
        console.print(f"[{f['severity']}] {f['gun']}: {f['finding']}", markup=False)
