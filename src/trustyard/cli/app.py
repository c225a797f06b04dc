"""Top-level typer application: global options and command-group registration."""

from typing import Annotated

import typer

from trustyard import __version__
from trustyard.cli import (
    admin,
    authority,
    db,
    events,
    export,
    gc,
    keyid,
    migrate,
    quota,
    retention,
    serve,
    sign,
    signatures,
    tag,
    trust,
    verify,
)
from trustyard.cli import mirror as mirror_commands
from trustyard.cli.audit import audit as audit_command
from trustyard.cli.backup import backup as backup_command
from trustyard.cli.backup import restore as restore_command
from trustyard.cli.scrub import scrub as scrub_command

app = typer.Typer(
    help="trustyard: a container registry with trust built in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.serve)
app.command("gc")(gc.gc)
app.command("scrub")(scrub_command)
app.command("audit")(audit_command)
app.command("backup")(backup_command)
app.command("restore")(restore_command)
app.command("migrate-storage")(migrate.migrate_storage)
app.command("keyid")(keyid.keyid)
app.command("signatures")(signatures.signatures)
app.command("verify")(verify.verify)
app.add_typer(admin.app, name="admin")
app.add_typer(authority.app, name="authority")
app.add_typer(db.app, name="db")
app.add_typer(events.app, name="events")
app.add_typer(export.app, name="export")
app.add_typer(sign.app, name="sign")
app.add_typer(trust.app, name="trust")
app.add_typer(tag.app, name="tag")
app.add_typer(retention.app, name="retention")
app.add_typer(quota.app, name="quota")
app.add_typer(mirror_commands.app, name="mirror")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trustyard {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """trustyard: a container registry with trust built in."""
