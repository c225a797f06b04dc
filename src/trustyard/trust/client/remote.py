"""The registry's `notary` policy as a TUF client: fetch a collection, verify it, remember it.

Used for `server = URL` rules (a remote notary-server or another trustyard) and for the local
trust store alike. A remote server is read like any other untrusted one: every file is streamed
under a size cap and a deadline (`remote/bounded.py`), delegation files are fetched only under
valid role names and at most `MAX_DELEGATIONS` of them, and the collection is verified by
`verify_collection` (timestamp and snapshot required, hashes and lengths, thresholds by public
key, delegation paths along the chain). The last verified copy of every role is kept in memory
per GUN (`TrustedCopies`, per worker process), so a server that later answers older metadata
(rollback) or a changed file at the same version is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from typing import Any, Protocol

from trustyard.trust import model as m
from trustyard.trust.client.pinning import TrustPinning
from trustyard.trust.client.verify import Collection, VerifyError, verify_collection

MAX_METADATA = 16 * 1024 * 1024
MAX_DELEGATIONS = 256
MAX_ROOT_ROTATIONS = 256
FETCH_DEADLINE = 30.0  # seconds for one collection, every file included


class TrustServerUnreachable(Exception):
    """The Notary server of a policy rule did not answer (or answered an error or too much)."""


class FileSource(Protocol):
    async def get(self, gun: str, role: str) -> bytes | None:
        """The current metadata file of `role` in `gun`, or None."""


class RemoteFiles:
    """Metadata from a Notary server URL, each file read under `MAX_METADATA` bytes.

    httpx is imported on first use: only policies with a remote `server` need it, and every
    worker process would otherwise carry it.
    """

    def __init__(self, url: str, ca_file: str | None = None, *, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.verify: Any = ca_file or True
        self.timeout = timeout

    async def get(self, gun: str, role: str) -> bytes | None:
        return await self._get(gun, f"{role}.json", f"{role} of {gun}")

    async def get_root_version(self, gun: str, version: int) -> bytes | None:
        return await self._get(gun, f"{version}.root.json", f"root version {version} of {gun}")

    async def _get(self, gun: str, name: str, what: str) -> bytes | None:
        import httpx

        from trustyard.remote.bounded import ERROR_BODY, BodyError, aread_body

        url = f"{self.url}/v2/{gun}/_trust/tuf/{name}"
        try:
            async with (
                httpx.AsyncClient(verify=self.verify, timeout=self.timeout) as client,
                client.stream("GET", url) as r,
            ):
                if r.status_code == 404:
                    return None
                if r.status_code != 200:
                    body = await aread_body(r, ERROR_BODY, what, truncate=True)
                    detail = body[:200].decode("utf-8", "replace")
                    raise TrustServerUnreachable(
                        f"{what}: the server answered HTTP {r.status_code} ({detail})"
                    )
                return await aread_body(r, MAX_METADATA, what, deadline=FETCH_DEADLINE)
        except httpx.HTTPError as exc:
            raise TrustServerUnreachable(f"{what}: {exc.__class__.__name__} {exc}") from None
        except BodyError as exc:
            raise TrustServerUnreachable(str(exc)) from None


async def collection_files(source: FileSource, gun: str) -> dict[str, bytes]:
    """root, timestamp, snapshot, targets and the delegations the snapshot names."""
    files: dict[str, bytes] = {}
    for role in (m.ROOT, m.TIMESTAMP, m.SNAPSHOT, m.TARGETS):
        data = await source.get(gun, role)
        if data is not None:
            files[role] = data
    if m.SNAPSHOT in files:
        try:
            named = m.parse_meta_map(m.SNAPSHOT, files[m.SNAPSHOT]).meta
        except m.MetadataError:
            named = {}  # verify_collection says what is wrong with it
        names = sorted(r for r in named if m.is_delegation(r))
        if len(names) > MAX_DELEGATIONS:
            raise VerifyError(f"{gun} names more than {MAX_DELEGATIONS} delegations")
        for name in names:
            data = await source.get(gun, name)
            if data is not None:
                files[name] = data
    return files


class TrustedCopies:
    """The last verified files of each GUN (role → bytes), for the most recent `size` GUNs."""

    def __init__(self, size: int = 1024) -> None:
        self.size = size
        self._by_gun: OrderedDict[str, dict[str, bytes]] = OrderedDict()

    def get(self, gun: str) -> dict[str, bytes]:
        found = self._by_gun.get(gun)
        if found is None:
            return {}
        self._by_gun.move_to_end(gun)
        return dict(found)

    def put(self, gun: str, files: dict[str, bytes]) -> None:
        self._by_gun[gun] = files
        self._by_gun.move_to_end(gun)
        while len(self._by_gun) > self.size:
            self._by_gun.popitem(last=False)


async def _root_chain(
    source: FileSource, gun: str, trusted: bytes | None, current: bytes | None
) -> list[bytes]:
    getter = getattr(source, "get_root_version", None)
    if trusted is None or current is None or getter is None:
        return []
    try:
        have = m.parse_signed(m.ROOT, trusted).version
        want = m.parse_signed(m.ROOT, current).version
    except m.MetadataError:
        return []
    if want - have <= 1:
        return []
    if want - have > MAX_ROOT_ROTATIONS:
        raise VerifyError(f"the root of {gun} moved by more than {MAX_ROOT_ROTATIONS} versions")
    chain = []
    for version in range(have + 1, want):
        data = await getter(gun, version)
        if data is None:
            raise VerifyError(f"root version {version} of {gun} is missing on the trust server")
        chain.append(data)
    return chain


async def fetch_verified(
    source: FileSource,
    gun: str,
    pinning: TrustPinning,
    memory: TrustedCopies | None = None,
) -> Collection:
    """Fetch and verify `gun` within `FETCH_DEADLINE` seconds; remember what verified.

    Raises `VerifyError` (the collection does not verify) or `TrustServerUnreachable`.
    """
    start = time.monotonic()
    try:
        async with asyncio.timeout(FETCH_DEADLINE):
            files = await collection_files(source, gun)
            trusted = memory.get(gun) if memory is not None else {}
            chain = await _root_chain(source, gun, trusted.get(m.ROOT), files.get(m.ROOT))
    except TimeoutError:
        raise TrustServerUnreachable(
            f"fetching the trust data of {gun} took over {time.monotonic() - start:.0f} s"
        ) from None
    coll = verify_collection(gun, files, pinning, trusted=trusted, root_chain=chain)
    if memory is not None:
        memory.put(gun, coll.verified())
    return coll
