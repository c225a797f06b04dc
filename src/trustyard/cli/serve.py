"""`trustyard serve`: run the registry on Granian (ASGI, sendfile, several workers)."""

from __future__ import annotations

import asyncio
import atexit
import gc
import ipaddress
import os
import shlex
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import structlog
import typer

from trustyard.cli.common import ConfigOption, DataDirOption, LogLevelOption, settings_or_exit
from trustyard.config import (
    PRIVATE_DIR_MODE,
    SECRET_FILE_MODE,
    Settings,
    create_data_dir,
    export_for_workers,
)
from trustyard.http.app import create_app
from trustyard.logs import configure_logging
from trustyard.supervisor import command, one_malloc_arena, run
from trustyard.wiring import SchemaMismatch, open_database

log = structlog.get_logger("trustyard")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_one_malloc_arena = one_malloc_arena  # before the schema check's thread gets an arena


def _secret_paths(settings: Settings) -> list[tuple[Path, int]]:
    """What holds secrets in a data dir, with the mode it should have at most."""
    data = settings.data_dir
    paths = [(data, PRIVATE_DIR_MODE)]
    if isinstance(settings.metadata_target, Path):
        db = settings.metadata_target
        paths += [(db.with_name(db.name + s), SECRET_FILE_MODE) for s in ("", "-wal", "-shm")]
    paths += [
        (data / "trust", PRIVATE_DIR_MODE),
        (data / "trust" / "passphrase", SECRET_FILE_MODE),
        (data / "auth" / "token-signing", PRIVATE_DIR_MODE),
        (data / "auth" / "token-signing" / "key.pem", SECRET_FILE_MODE),
    ]
    # Private keys the operator configured: ours to use, so ours to warn about.
    configured = (settings.tls_key, settings.auth.token.signing_key)
    paths += [(path, SECRET_FILE_MODE) for path in configured if path is not None]
    return paths


def warn_open_permissions(settings: Settings) -> int:
    """Log one warning per secret-bearing path that group or others may read; returns how many.

    A store made by an older version (data dir 0755, metadata.db 0644 under umask 022) keeps
    its modes: we do not chmod behind the operator's back, we say what to run.
    """
    found = 0
    for path, wanted in _secret_paths(settings):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o077:
            found += 1
            fix = f"chmod {wanted:o} {shlex.quote(str(path))}"
            log.warning(
                "secrets_readable_by_others",
                path=str(path),
                mode=f"{mode:04o}",
                wanted=f"{wanted:04o}",
                fix=fix,
                hint=f"{path} holds secrets but is mode {mode:04o} (group/others may read it); "
                f"run: {fix}",
            )
    return found


async def _prepare(target: Path | str) -> None:
    """Create or upgrade the embedded database once, before the workers (which then find it
    current); check a PostgreSQL schema."""
    database = await open_database(target, create=True)
    await database.close()


async def _preflight(settings: Settings) -> None:
    """Open and close once what every worker opens at start (stores, storage, auth keys, trust).

    A bad setting (a missing key file, a certificate that cannot sign, an unreachable bucket)
    then stops `serve` with one clear line before any worker starts, instead of a traceback in
    each worker followed by Granian's "Unexpected exit from worker".
    """
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass


def _reason(exc: BaseException) -> str:
    """What went wrong, without a traceback: the exception's own message, and its cause's."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.strerror or exc}: {exc.filename}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 5000).")] = None,
    data_dir: DataDirOption = None,
    config: ConfigOption = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain for HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key for HTTPS.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (use one per core).")
    ] = None,
    log_level: LogLevelOption = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Serve only these route groups: registry, trust, token (repeatable or "
            "comma-separated). `--only token` runs the token issuer alone (/auth/token, "
            "/auth/jwks.json) and implies auth.mode = token.",
        ),
    ] = None,
) -> None:
    """Run the registry (embedded default: filesystem blobs + SQLite, nothing else to start)."""
    settings = settings_or_exit(
        config,
        host=host,
        port=port,
        data_dir=data_dir,
        tls_cert=tls_cert,
        tls_key=tls_key,
        workers=workers,
        log_level=log_level,
        only=",".join(only) if only else None,
    )
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    configure_logging(settings.log_level)
    cleanup = _metrics_dir() if settings.metrics else None
    _check_before_start(settings)
    export_for_workers(settings)
    log.info(
        "starting",
        address=f"{'https' if settings.tls_cert else 'http'}://{settings.host}:{settings.port}",
        data_dir=str(settings.data_dir),
        workers=settings.workers,
        routes=sorted(settings.route_groups),
    )
    _run_granian(settings, cleanup)


def _check_before_start(settings: Settings) -> None:
    """Warnings, the data dir, the schema and a preflight lifespan; exits 2 on a failure."""
    if not _is_loopback(settings.host) and settings.auth.mode == "none":
        log.warning(
            "listening_beyond_loopback",
            host=settings.host,
            hint="authentication is off: anyone who can reach this address can push and delete",
        )
    warn_open_permissions(settings)
    create_data_dir(settings.data_dir)
    _one_malloc_arena()  # before any thread gets an arena (the SQLite schema check starts one)
    try:
        asyncio.run(_prepare(settings.metadata_target))
    except SchemaMismatch as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        asyncio.run(_preflight(settings))
    except Exception as exc:  # the CLI's edge: any start-up failure becomes one clear line
        typer.echo(f"error: cannot start: {_reason(exc)}", err=True)
        raise typer.Exit(2) from None


def _metrics_dir() -> str | None:
    """A fresh directory for prometheus-client's multiprocess mode, made before any worker
    starts (the library reads the variable at import) and removed when the server stops (by
    the supervisor, returned here). An operator's own `PROMETHEUS_MULTIPROC_DIR` is used as it
    is (they wipe it between runs)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    path = tempfile.mkdtemp(prefix="trustyard-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    atexit.register(shutil.rmtree, path, True)  # if serve stops before Granian runs
    return path


def _run_granian(settings: Settings, cleanup: str | None) -> None:
    """Serve on Granian. One worker: exec the lean supervisor (trustyard/supervisor.py), as
    this process's imports are not needed past the checks and would otherwise stay beside the
    worker all along (idle tree 100 -> 79 MiB PSS). Several workers: run Granian here, so the
    workers fork from this process and share its imported pages among themselves (exec'ing
    cost ~15-20 MiB more with 2 workers, each importing on its own; docs/benchmarks.md)."""
    granian = {
        "address": settings.host,
        "port": settings.port,
        "workers": settings.workers,
        "ssl_cert": str(settings.tls_cert) if settings.tls_cert else None,
        "ssl_key": str(settings.tls_key) if settings.tls_key else None,
        "log_level": settings.log_level,
    }
    if settings.workers > 1:
        # Keep the imported objects out of the workers' garbage collections: a full
        # collection writes to every tracked object's header, copying every shared page into
        # each worker (tree PSS after 200 concurrent pushes, 2 workers: 228 -> 178 MiB).
        gc.collect()
        gc.freeze()
        run({"granian": granian, "cleanup": cleanup})
        return
    argv = command(granian, cleanup)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 (our own interpreter and module, no shell)
