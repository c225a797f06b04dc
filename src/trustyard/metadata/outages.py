"""Where the SQL backends turn "the database cannot answer right now" into `MetadataUnavailable`.

Every statement, commit and connection of every SQL store (registry, trust, auth, signatures)
passes through the engines `sqlite.py` and `postgres.py` build, so the conversion sits there,
once, at the edge: a `handle_error` listener for failures on an open connection, and the pool's
`connect` for failures to get one at all (refused, starting up, pool exhausted), which SQLAlchemy
reports without that event. What counts as an outage is each backend's to say (`Classifier`);
everything else (an IntegrityError a store handles, a bug) passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from trustyard.metadata.errors import MetadataUnavailable

E = TypeVar("E", Engine, AsyncEngine)

# The reason (for the log) when `exc` alone says the database is unavailable, else None.
Classifier = Callable[[BaseException], str | None]


def common_outage(exc: BaseException) -> str | None:
    """What means an outage on any SQL backend: SQLAlchemy's own verdicts and socket errors."""
    if isinstance(exc, PoolTimeout):
        return "no free database connection within the pool timeout"
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return "the database connection was lost"
    if isinstance(exc, OperationalError):
        return "the database refused the operation"
    if isinstance(exc, ConnectionError | TimeoutError):
        return "the database connection failed"
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what it was raised from or during (drivers wrap each other's errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def outage_reason(exc: BaseException, classify: Classifier) -> str | None:
    """The backend's verdict (`classify`) on any link of `exc`'s chain, else the common one:
    the backend's names the driver's own error (SQLSTATE, SQLite's message) for the log."""
    links = list(_chain(exc))
    for link in links:
        if isinstance(link, MetadataUnavailable):
            return link.reason
    for verdict in (classify, common_outage):
        for link in links:
            reason = verdict(link)
            if reason is not None:
                return reason
    return None


class GuardedPool(AsyncAdaptedQueuePool):
    """The async queue pool, converting a failure to hand out a connection at the edge.

    Subclasses name their backend's outages in `classify`; `dispose` recreates the pool from the
    same class.
    """

    def classify(self, exc: BaseException) -> str | None:
        return None

    def connect(self) -> Any:
        try:
            return super().connect()
        except MetadataUnavailable:
            raise
        except Exception as exc:
            reason = outage_reason(exc, self.classify)
            if reason is None:
                raise
            raise MetadataUnavailable(reason) from exc


def guard(engine: E, classify: Classifier) -> E:
    """Convert outages raised by statements, commits and rollbacks on `engine` (async or not).

    SQLAlchemy still invalidates a disconnected connection before our exception is raised.
    """

    def on_error(ctx: ExceptionContext) -> BaseException | None:
        if not isinstance(ctx.original_exception, Exception):
            return None  # a cancelled request (SQLAlchemy counts it as a disconnect) stays one
        if ctx.is_disconnect:
            return MetadataUnavailable("the database connection was lost")
        for candidate in (ctx.original_exception, ctx.sqlalchemy_exception):
            reason = None if candidate is None else outage_reason(candidate, classify)
            if reason is not None:
                return MetadataUnavailable(reason)
        return None

    target = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    event.listen(target, "handle_error", on_error)
    return engine
