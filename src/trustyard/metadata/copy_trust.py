"""Merge trust data (per GUN) and auth data (accounts, groups, ACL rules) by natural keys.

Trust: a GUN's files are keyed by (role, version) and must agree byte for byte (sha256). A GUN
the target already has is merged only when the target's history is a prefix of the source's
(same files at the same versions, e.g. an interrupted earlier run) and its server keys are a
subset of the source's; anything else would splice two signing histories, so it is a conflict
and the migration refuses (there is no override: pick one side's trust data by hand). Changefeed
and audit rows are appended when missing, one transaction per GUN.
Auth: an account name present on both sides keeps the target's account (reported); group
memberships and ACL rules are merged without duplicates.
"""

from __future__ import annotations

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trustyard.metadata.auth_sql import accounts, acl_rules, group_members
from trustyard.metadata.copy_base import CopyResult
from trustyard.metadata.trust_sql import trust_audit, tuf_changes, tuf_files, tuf_server_keys

_CHANGE_KEY = ("version", "sha256", "category")
_AUDIT_KEY = ("created_at", "action", "actor", "detail")


async def _guns(conn: AsyncConnection) -> list[str]:
    found: set[str] = set()
    for table in (tuf_files, tuf_server_keys, tuf_changes, trust_audit):
        found.update((await conn.execute(select(table.c.gun).distinct())).scalars())
    return sorted(found)


async def _files(conn: AsyncConnection, gun: str) -> dict[tuple[str, int], str]:
    f = tuf_files
    rows = await conn.execute(select(f.c.role, f.c.version, f.c.sha256).where(f.c.gun == gun))
    return {(row.role, row.version): row.sha256 for row in rows}


async def _keys(conn: AsyncConnection, gun: str) -> set[tuple[str, str]]:
    k = tuf_server_keys
    rows = await conn.execute(select(k.c.role, k.c.key_id).where(k.c.gun == gun))
    return {(row.role, row.key_id) for row in rows}


async def trust_conflicts(source: AsyncEngine, target: AsyncEngine) -> list[str]:
    """GUNs whose trust history on the target is not a prefix of the source's."""
    out: list[str] = []
    async with source.connect() as src, target.connect() as dst:
        for gun in await _guns(src):
            mine, theirs = await _files(src, gun), await _files(dst, gun)
            for key in sorted(theirs):
                role, version = key
                if key not in mine:
                    out.append(f"trust {gun}: the target has its own {role} version {version}")
                elif mine[key] != theirs[key]:
                    out.append(f"trust {gun}: {role} version {version} differs on the two sides")
            for role, key_id in sorted(await _keys(dst, gun) - await _keys(src, gun)):
                out.append(f"trust {gun}: the target has its own {role} server key {key_id}")
    return out


async def _append_missing(
    src: AsyncConnection,
    dst: AsyncConnection,
    table: Table,
    gun: str,
    key: tuple[str, ...],
) -> tuple[int, int]:
    """Rows of `table` for `gun` the target lacks (by `key`), in source order; (copied, present)."""
    columns = [table.c[name] for name in key]
    there = {tuple(row) for row in await dst.execute(select(*columns).where(table.c.gun == gun))}
    rows = await src.execute(select(table).where(table.c.gun == gun).order_by(table.c.id))
    copied = present = 0
    for row in rows:
        values = {k: v for k, v in row._mapping.items() if k != "id"}
        if tuple(values[name] for name in key) in there:
            present += 1
            continue
        await dst.execute(table.insert().values(values))
        copied += 1
    return copied, present


async def _copy_gun(
    src: AsyncConnection, dst: AsyncConnection, gun: str, result: CopyResult
) -> None:
    files, theirs = result.tally("trust_files"), await _files(dst, gun)
    rows = await src.execute(
        select(tuf_files).where(tuf_files.c.gun == gun).order_by(tuf_files.c.id)
    )
    for row in rows:
        if (row.role, row.version) in theirs:
            files.present += 1
            continue
        await dst.execute(
            tuf_files.insert().values({k: v for k, v in row._mapping.items() if k != "id"})
        )
        files.copied += 1
    keys, have = result.tally("trust_server_keys"), await _keys(dst, gun)
    for row in await src.execute(select(tuf_server_keys).where(tuf_server_keys.c.gun == gun)):
        if (row.role, row.key_id) in have:
            keys.present += 1
            continue
        await dst.execute(tuf_server_keys.insert().values(dict(row._mapping)))
        keys.copied += 1
    for table, key, kind in (
        (tuf_changes, _CHANGE_KEY, "trust_changes"),
        (trust_audit, _AUDIT_KEY, "trust_audit"),
    ):
        copied, present = await _append_missing(src, dst, table, gun, key)
        result.tally(kind).copied += copied
        result.tally(kind).present += present


async def copy_trust(source: AsyncEngine, target: AsyncEngine, result: CopyResult) -> None:
    """Each GUN in one target transaction (conflicts were refused before this runs)."""
    async with source.connect() as src:
        guns = await _guns(src)
    for gun in guns:
        async with source.connect() as src, target.begin() as dst:
            await _copy_gun(src, dst, gun, result)


async def copy_auth(source: AsyncEngine, target: AsyncEngine, result: CopyResult) -> None:
    """Accounts by name (the target's wins), memberships and ACL rules deduplicated."""
    async with source.connect() as src, target.begin() as dst:
        have = {row.name: row for row in await dst.execute(select(accounts))}
        tally = result.tally("accounts")
        for row in await src.execute(select(accounts).order_by(accounts.c.name)):
            mine = dict(row._mapping)
            if row.name not in have:
                await dst.execute(accounts.insert().values(mine))
                tally.copied += 1
                continue
            tally.present += 1
            if dict(have[row.name]._mapping) != mine:
                result.notes.append(f"account {row.name} exists on the target: kept the target's")
        members = {tuple(r) for r in await dst.execute(select(group_members))}
        tally = result.tally("group_members")
        for row in await src.execute(select(group_members)):
            if tuple(row) in members:
                tally.present += 1
            else:
                await dst.execute(group_members.insert().values(dict(row._mapping)))
                tally.copied += 1
        rule_key = (acl_rules.c.account, acl_rules.c.repository, acl_rules.c.actions)
        rules = {tuple(r) for r in await dst.execute(select(*rule_key))}
        tally = result.tally("acl_rules")
        for row in await src.execute(select(*rule_key).order_by(acl_rules.c.id)):
            if tuple(row) in rules:
                tally.present += 1
                continue
            rules.add(tuple(row))
            await dst.execute(acl_rules.insert().values(dict(row._mapping)))
            tally.copied += 1


async def verify_trust(source: AsyncEngine, target: AsyncEngine) -> list[str]:
    """Every source trust file is on the target with the same bytes (sha256)."""
    out: list[str] = []
    async with source.connect() as src, target.connect() as dst:
        for gun in await _guns(src):
            theirs = await _files(dst, gun)
            for (role, version), sha in sorted((await _files(src, gun)).items()):
                if theirs.get((role, version)) != sha:
                    out.append(f"trust {gun}: {role} version {version} is missing from the target")
    return out
