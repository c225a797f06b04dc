"""Settings + open services -> what the web UI needs: its read model and its session key."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from trustyard.config import Settings
from trustyard.metadata.browse_sql import SqlBrowseStore
from trustyard.registry.browse import Browse
from trustyard.registry.gc import GcReport
from trustyard.registry.policy_sources import RegistrySources
from trustyard.wiring.auth import gun_prefixes_of
from trustyard.wiring.gc import run_gc
from trustyard.wiring.services import Services

KEY_BYTES = 32


def open_browse(settings: Settings, services: Services) -> Browse:
    registry = services.registry
    assert registry is not None
    db = services.database

    async def gc_preview() -> GcReport:
        # Metadata only (no walk of the blob store) and nothing removed.
        return await run_gc(settings, services, dry_run=True, sweep_orphans=False)

    return Browse(
        registry,
        SqlBrowseStore(db.reader),
        signatures=db.signatures,
        history=db.lifecycle,
        trust=db.trust if settings.trust.enabled else None,
        gun_prefixes=gun_prefixes_of(settings),
        accounts=db.auth,
        audit=db.audit,
        gc_preview=gc_preview,
        read_blob=RegistrySources(registry, db.signatures).read_blob,
    )


def session_key(data_dir: Path) -> bytes:
    """The key signing UI session cookies, shared by every worker: created once (0600, under
    the 0700 data dir) by whichever worker comes first, read by the others."""
    path = data_dir / "ui" / "session.key"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker may be writing it right now
            data = path.read_bytes()
            if len(data) >= KEY_BYTES:
                return data
            time.sleep(0.01)
        raise ValueError(
            f"{path} is shorter than {KEY_BYTES} bytes: remove it to make a new one"
        ) from None
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key
