"""`trustyard tag history|restore|delete`: the tag history, and administrators' tag changes.

`restore` and `delete` are the explicit override of immutable-tag rules (`--force`); the HTTP
API offers none, so only someone holding the store's settings can move an immutable tag.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from sqlalchemy.exc import SQLAlchemyError

from trustyard.cli.common import ConfigOption, DataDirOption, open_store_or_exit, settings_or_exit
from trustyard.config import Settings
from trustyard.metadata.errors import MetadataError
from trustyard.metadata.lifecycle_base import TagMove
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.registry import Registry
from trustyard.storage.errors import StorageError
from trustyard.wiring import open_services

app = typer.Typer(help="Tag history, restore, and administrators' overrides.", no_args_is_help=True)

RefArgument = Annotated[str, typer.Argument(metavar="REPO:TAG", help="e.g. team/app:v1")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Override immutable-tag rules (administrators).")
]
ACTOR = "cli"  # recorded in the tag history for changes made here

T = TypeVar("T")


def split_ref(ref: str) -> tuple[str, str]:
    """`repo:tag` -> (repo, tag); the tag is after the last colon that follows the last slash."""
    repository, sep, tag = ref.rpartition(":")
    if not sep or not repository or not tag or "/" in tag:
        typer.echo(f"error: {ref!r} is not REPO:TAG (for example team/app:v1)", err=True)
        raise typer.Exit(2)
    return repository, tag


def _run(settings: Settings, command: str, work: Callable[[Registry], Awaitable[T]]) -> T:
    """Open the store, run `work` on its registry; errors become one line and exit 1."""
    open_store_or_exit(settings, command)

    async def go() -> T:
        async with await open_services(settings) as services:
            assert services.registry is not None
            return await work(services.registry)

    try:
        return asyncio.run(go())
    except RegistryError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except (OSError, SQLAlchemyError, MetadataError, StorageError) as exc:
        typer.echo(f"error: cannot open the store: {exc}", err=True)
        raise typer.Exit(1) from None


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="seconds")


def _move_json(move: TagMove) -> dict[str, object]:
    return {**move._asdict(), "at": _when(move.at)}


@app.command("history")
def history(
    ref: RefArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many moves.")] = 1000,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Every move of a tag, newest first: when, from which digest to which, by whom."""
    repository, tag = split_ref(ref)
    settings = settings_or_exit(config, data_dir=data_dir)

    async def work(registry: Registry) -> list[TagMove]:
        assert registry.lifecycle is not None
        return await registry.lifecycle.tag_history(repository, tag, limit)

    moves = _run(settings, "tag history", work)
    if as_json:
        typer.echo(json.dumps([_move_json(m) for m in moves], indent=2))
        return
    if not moves:
        typer.echo(f"no recorded moves of {repository}:{tag}", err=True)
    for m in moves:
        typer.echo(
            f"{_when(m.at)}  {m.old_digest or '(new)'} -> {m.new_digest or '(deleted)'}"
            f"  by {m.actor or 'unknown'}"
        )


@app.command("restore")
def restore(
    ref: RefArgument,
    digest: Annotated[str, typer.Argument(help="The manifest digest to put the tag back to.")],
    force: ForceOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Point REPO:TAG at an earlier manifest that the repository still holds."""
    repository, tag = split_ref(ref)
    try:
        target = Digest.parse(digest)
    except RegistryError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    settings = settings_or_exit(config, data_dir=data_dir)

    async def work(registry: Registry) -> None:
        await registry.restore_tag(repository, tag, target, force=force, actor=ACTOR)

    _run(settings, "tag restore", work)
    typer.echo(f"{repository}:{tag} -> {target}")


@app.command("delete")
def delete(
    ref: RefArgument,
    force: ForceOption = False,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
) -> None:
    """Delete a tag (its manifest stays until GC); `--force` also deletes an immutable one."""
    repository, tag = split_ref(ref)
    settings = settings_or_exit(config, data_dir=data_dir)

    async def work(registry: Registry) -> None:
        await registry.delete_manifest(repository, tag, force=force, actor=ACTOR)

    _run(settings, "tag delete", work)
    typer.echo(f"deleted {repository}:{tag}")
