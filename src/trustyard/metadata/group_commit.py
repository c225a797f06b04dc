"""Group commit for the SQLite writer: concurrent small write transactions share one COMMIT.

SQLite has one writer at a time. Each `writer.begin()` used to check out the one writer
connection, take the cross-process lock and BEGIN IMMEDIATE, run a few statements, COMMIT and
hand the lock back; 50 concurrent pushes spent most of their time queued on that hand-over
(docs/benchmarks.md, second round). Here the writer engine keeps its transaction open while
more units of work are waiting in this process: each `begin()` block runs inside its own
SAVEPOINT of the shared transaction (its failure rolls back only its own statements; the
first unit of a batch needs none), and the last unit of a batch (nobody else waiting, or
`MAX_UNITS` reached) COMMITs for all of them.
A block still leaves `async with` only after its batch committed, so callers keep the meaning
of a transaction: it is durable (as durable as `synchronous=NORMAL` makes it) when the block
returns, and it is all or nothing with the rows written beside it (outbox, audit, tag history).
If the COMMIT fails, every unit of that batch raises the error.

The push path's writes no longer come here: they are units of work on the writer thread
(metadata/units.py), which batches the same way without a hand-off per statement. What stays on
this engine are the async transactions of the other stores (trust, auth, signatures, outbox
delivery, GC); the two writers of a process take turns on the cross-process writer lock.

PostgreSQL keeps its pool of concurrent writers (metadata/postgres.py); this is SQLite only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from trustyard.metadata.errors import MetadataUnavailable
from trustyard.metadata.units import MAX_UNITS, ThreadUnits

# How long a unit waits for its turn on the writer connection (the pool's timeout did this).
TURN_TIMEOUT_SECONDS = 60.0


class _Batch:
    """One open transaction on the writer connection and the units that wrote in it."""

    def __init__(self, conn: AsyncConnection, transaction: AsyncTransaction) -> None:
        self.conn = conn
        self.transaction = transaction
        self.units = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class _State:
    """Per event loop: the turn on the writer connection and the batch being filled."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.turn = asyncio.Lock()
        self.waiting = 0
        self.batch: _Batch | None = None
        self.flushes: set[asyncio.Task[None]] = set()


class GroupCommitEngine(AsyncEngine):
    """The SQLite writer engine whose `begin()` joins the current batch (see the module doc).

    Everything else (`connect`, `dialect`, events) is the plain engine's; `dispose` also stops
    the units-of-work thread.
    """

    __slots__ = ("_state", "units")

    def __init__(self, engine: AsyncEngine, units: ThreadUnits) -> None:
        super().__init__(engine.sync_engine)
        self._state: _State | None = None
        # The same database's units of work (metadata/units.py), on their own thread.
        self.units = units

    async def dispose(self, close: bool = True) -> None:
        await self.units.close()
        await super().dispose(close)

    def _current(self) -> _State:
        state = self._state
        if state is None or state.loop is not asyncio.get_running_loop():
            state = self._state = _State()
        return state

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        state = self._current()
        state.waiting += 1
        try:
            async with asyncio.timeout(TURN_TIMEOUT_SECONDS):
                await state.turn.acquire()
        except BaseException as exc:
            state.waiting -= 1
            self._flush_later(state)
            if isinstance(exc, TimeoutError):
                raise MetadataUnavailable(
                    f"no turn on the database writer within {TURN_TIMEOUT_SECONDS:.0f} s"
                ) from None
            raise
        state.waiting -= 1
        try:
            batch = state.batch
            if batch is None:
                batch = state.batch = await self._open()
            batch.units += 1
            # The first unit of a batch needs no SAVEPOINT (two round trips to the driver's
            # thread): if it fails, rolling the whole transaction back undoes only its work.
            savepoint = await batch.conn.begin_nested() if batch.units > 1 else None
        except BaseException:
            # The batch could not start (lock timeout, outage) or take this unit: whatever it
            # holds (earlier units' work included) is rolled back and they are told.
            await _shielded(self._end(state, commit=False))
            raise
        try:
            yield batch.conn
        except BaseException:
            await _shielded(self._release(state, batch, savepoint, ok=False))
            raise
        await _shielded(self._release(state, batch, savepoint, ok=True))
        await asyncio.shield(batch.done)

    def _flush_later(self, state: _State) -> None:
        """A unit gave up waiting (cancelled, timed out): the unit before it may have handed
        it the turn instead of committing, so commit for them unless someone else goes on."""
        if state.batch is None:
            return
        task = asyncio.ensure_future(self._flush(state))
        state.flushes.add(task)
        task.add_done_callback(state.flushes.discard)

    async def _flush(self, state: _State) -> None:
        await state.turn.acquire()
        if state.batch is not None and state.waiting == 0:
            await self._end(state, commit=True)  # releases the turn
        else:
            state.turn.release()  # a waiting unit takes the batch on, and commits it

    async def _open(self) -> _Batch:
        conn = await self.connect()
        try:
            transaction = await conn.begin()  # the cross-process lock, BEGIN IMMEDIATE
        except BaseException:
            await conn.close()
            raise
        return _Batch(conn, transaction)

    async def _release(
        self, state: _State, batch: _Batch, savepoint: AsyncTransaction | None, *, ok: bool
    ) -> None:
        """End one unit (RELEASE or ROLLBACK TO its savepoint), then commit the batch if no
        one else is waiting for the connection; hands the turn on either way."""
        if savepoint is None and not ok:
            await self._end(state, commit=False)  # the batch's first unit: nothing else in it
            return
        try:
            if savepoint is not None and savepoint.is_active:
                await (savepoint.commit() if ok else savepoint.rollback())
        except BaseException:
            await self._end(state, commit=False)
            if ok:
                raise
            return
        if state.waiting == 0 or batch.units >= MAX_UNITS:
            await self._end(state, commit=True)
            return
        state.turn.release()

    async def _end(self, state: _State, *, commit: bool) -> None:
        """Commit (or roll back) the open batch, tell its units, release the turn."""
        batch, state.batch = state.batch, None
        try:
            if batch is None:
                return
            error: BaseException | None = None
            try:
                if commit and batch.transaction.is_active:
                    await batch.transaction.commit()
                elif batch.transaction.is_active:
                    await batch.transaction.rollback()
                    error = MetadataUnavailable("a write in the same batch failed the transaction")
                else:
                    error = MetadataUnavailable("the database transaction was lost")
            except Exception as exc:
                error = exc
                # SQLite may keep the transaction open after a refused COMMIT (a deferred
                # constraint): drop the connection, closing it rolls back, the pool opens anew.
                with contextlib.suppress(Exception):
                    await batch.conn.invalidate()
            finally:
                with contextlib.suppress(Exception):
                    await batch.conn.close()
            if error is None:
                batch.done.set_result(None)
            else:
                batch.done.set_exception(error)
                batch.done.exception()  # retrieved: a batch whose units all failed is no warning
        finally:
            state.turn.release()


async def _shielded(work: Any) -> None:
    """Run `work` to its end even if the caller is cancelled meanwhile (the turn and the
    transaction must not be left half-handed-over); the caller still sees its cancellation."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await task
        raise
