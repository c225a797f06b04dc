"""Units of work: a write transaction's statements as one synchronous function.

A store's hot writes (a blob linked, a manifest put, an upload row, an audit row) are written
as `unit(conn) -> result` over a synchronous SQLAlchemy `Connection` and handed to a
`UnitWriter`, which runs the whole unit in one transaction:

- `EngineUnits` (PostgreSQL, and any async engine): `engine.begin()` + `run_sync`, so the unit
  runs in the request's task as before (asyncpg under SQLAlchemy's greenlet adapter).
- `ThreadUnits` (SQLite): one thread owning one connection of the synchronous `sqlite3`
  driver. The event loop hands it a unit once and is woken once when its batch committed,
  where each statement on aiosqlite cost ~4 hand-offs between the loop and the driver's thread
  and a write held SQLite's one writer turn across all of them while the loop served other
  requests (docs/benchmarks.md, second round: 16 clients writing tags kept the loop 69 % busy
  at 157 tags/s). The thread also does the group commit: the units queued while a batch runs
  form the next batch, each in its own SAVEPOINT (a unit alone needs none), one COMMIT for all;
  a unit's result is delivered only after its batch committed, so the durability and the
  all-or-nothing meaning of a transaction are the caller's as before. A unit whose caller was
  cancelled before it started is skipped; once started it runs to its COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from trustyard.metadata.errors import MetadataUnavailable
from trustyard.metadata.outages import Classifier, outage_reason

T = TypeVar("T")
# At most this many units share one COMMIT, so the other worker processes get the writer
# lock between batches under a steady stream of writes (group_commit.py's batches too).
MAX_UNITS = 64


class UnitWriter(Protocol):
    async def run(self, unit: Callable[[Connection], T]) -> T: ...

    async def close(self) -> None: ...


class EngineUnits:
    """Each unit in its own transaction on an async engine (its pool, its write lock)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run(self, unit: Callable[[Connection], T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(unit)

    async def close(self) -> None:
        return None


@dataclass
class _Job:
    unit: Callable[[Connection], Any]
    context: contextvars.Context  # the caller's, as asyncio.to_thread passes it on
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = field(default=None)


class ThreadUnits:
    """Units of work on one thread with one synchronous connection (see the module doc).

    The thread starts on the first unit, in the process that runs it (Granian forks workers
    from a process that may have opened the database already).
    """

    def __init__(self, engine: Engine, classify: Classifier) -> None:
        self.engine = engine
        self.classify = classify
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start = threading.Lock()

    async def run(self, unit: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        job = _Job(unit, contextvars.copy_context(), loop, loop.create_future())
        self._ensure_thread()
        self._jobs.put(job)
        result: T = await job.future
        return result

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._start:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            if self._pid != os.getpid():
                # Forked: the parent's thread and connections are not ours.
                self._jobs = queue.SimpleQueue()
                self.engine.dispose(close=False)
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._serve, name="trustyard-sqlite-writer", daemon=True
            )
            self._thread.start()

    async def close(self) -> None:
        thread, ours = self._thread, self._pid == os.getpid()
        if thread is not None and ours:
            self._jobs.put(None)
            await asyncio.to_thread(thread.join)
        self._thread = None
        self.engine.dispose(close=ours or self._pid == 0)

    # -- the writer thread ---------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                self._refuse_queued()
                return
            batch = [first]
            while len(batch) < MAX_UNITS:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._jobs.put(None)  # stop after this batch
                    break
                batch.append(job)
            batch = [j for j in batch if not j.future.cancelled()]
            if batch:
                self._run_batch(batch)

    def _refuse_queued(self) -> None:
        """Closing: units queued behind the stop are told so rather than left waiting."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.error = MetadataUnavailable("the database writer is shutting down")
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(_deliver, job)

    def _run_batch(self, batch: list[_Job]) -> None:
        try:
            with self.engine.connect() as conn:
                transaction = conn.begin()  # the cross-process writer lock, BEGIN IMMEDIATE
                alone = len(batch) == 1
                for job in batch:
                    savepoint = None if alone else conn.begin_nested()
                    try:
                        job.result = job.context.run(job.unit, conn)
                    except BaseException as exc:  # the thread must outlive any unit's failure
                        job.error = exc
                        if savepoint is None:
                            transaction.rollback()
                            break
                        savepoint.rollback()
                    else:
                        if savepoint is not None:
                            savepoint.commit()
                if transaction.is_active:
                    try:
                        transaction.commit()
                    except Exception:
                        # SQLite may keep the transaction open after a refused COMMIT (a
                        # deferred constraint): drop the connection, the pool opens anew.
                        with contextlib.suppress(Exception):
                            conn.invalidate()
                        raise
        except BaseException as exc:
            error = self._unavailable(exc)
            for job in batch:
                if job.error is None:
                    job.error = error
        for job in batch:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                job.loop.call_soon_threadsafe(_deliver, job)

    def _unavailable(self, exc: BaseException) -> BaseException:
        """A failure of the batch itself (lock, BEGIN, COMMIT): an outage when it is one."""
        if isinstance(exc, MetadataUnavailable):
            return exc
        reason = outage_reason(exc, self.classify)
        if reason is None:
            return exc
        unavailable = MetadataUnavailable(reason)
        unavailable.__cause__ = exc
        return unavailable


def _deliver(job: _Job) -> None:
    if job.future.cancelled():
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.result)


def unit_writer(writer: AsyncEngine) -> UnitWriter:
    """The units-of-work runner for a store's writer engine: SQLite's thread when the engine
    has one (metadata/sqlite.py), else a transaction per unit on the engine itself."""
    units = getattr(writer, "units", None)
    if isinstance(units, ThreadUnits):
        return units
    return EngineUnits(writer)
