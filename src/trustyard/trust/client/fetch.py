"""Fetch a collection and verify it as a TUF client does, against the trusted copies and pins.

The root and its rotation chain (each intermediate root fetched, at most `MAX_ROOT_ROTATIONS`),
timestamp, snapshot, targets and every delegation the snapshot names or the delegation tree
reaches (valid role names only, at most `MAX_DELEGATIONS`), then `verify_collection`.
"""

from __future__ import annotations

from trustyard.trust import model as m
from trustyard.trust.client.errors import TrustError
from trustyard.trust.client.pinning import TrustPinning
from trustyard.trust.client.transport import TrustServer
from trustyard.trust.client.trusted import TrustedFiles
from trustyard.trust.client.verify import Collection, VerifyError, verify_collection

MAX_ROOT_ROTATIONS = 256  # intermediate roots fetched in one update (TUF's client caps them too)
MAX_DELEGATIONS = 1024  # delegation files fetched for one collection


def root_chain(server: TrustServer, gun: str, trusted: bytes | None, current: bytes) -> list[bytes]:
    """The intermediate roots between the trusted root and the current one, fetched so that
    each rotation is checked against the root before it (the TUF client's root update)."""
    if trusted is None:
        return []
    try:
        have = m.parse_signed(m.ROOT, trusted).version
        want = m.parse_signed(m.ROOT, current).version
    except m.MetadataError:
        return []  # verify_collection says what is wrong
    if want - have <= 1:
        return []
    if want - have > MAX_ROOT_ROTATIONS:
        raise TrustError(
            f"the root of {gun} moved from version {have} to {want}: more than "
            f"{MAX_ROOT_ROTATIONS} rotations to check at once"
        )
    chain = []
    for version in range(have + 1, want):
        data = server.get_root_version(gun, version)
        if data is None:
            raise TrustError(
                f"root version {version} of {gun} is missing on the trust server: cannot "
                f"check the rotation from version {have} to {want}"
            )
        chain.append(data)
    return chain


def _named_by_snapshot(files: dict[str, bytes]) -> set[str]:
    if m.SNAPSHOT not in files:
        return set()
    try:
        meta = m.parse_meta_map(m.SNAPSHOT, files[m.SNAPSHOT]).meta
    except m.MetadataError:
        return set()
    return {r for r in meta if m.is_delegation(r)}


def fetch_delegations(server: TrustServer, gun: str, files: dict[str, bytes]) -> None:
    """Add every delegation file the snapshot names or the delegation tree reaches (valid role
    names only, at most `MAX_DELEGATIONS`) to `files`."""
    names = _named_by_snapshot(files)
    fetched = 0

    def get(name: str) -> None:
        nonlocal fetched
        if name in files:
            return
        fetched += 1
        if fetched > MAX_DELEGATIONS:
            raise TrustError(f"{gun} has more than {MAX_DELEGATIONS} delegations")
        data = server.get_file(gun, name)
        if data is not None:
            files[name] = data

    pending = [m.TARGETS]
    while pending:
        role = pending.pop()
        if role not in files:
            continue
        try:
            parsed = m.parse_targets(role, files[role])
        except m.MetadataError:
            continue
        for child in parsed.delegations:
            names.add(child)
            get(child)
            pending.append(child)
    for name in sorted(names):
        get(name)


def top_files(server: TrustServer, gun: str) -> dict[str, bytes]:
    """root, timestamp, snapshot and targets of `gun`, those the server has."""
    files: dict[str, bytes] = {}
    for role in (m.ROOT, m.TIMESTAMP, m.SNAPSHOT, m.TARGETS):
        data = server.get_file(gun, role)
        if data is not None:
            files[role] = data
    return files


def fetch_verified(
    server: TrustServer,
    trusted_files: TrustedFiles,
    pinning: TrustPinning,
    gun: str,
    *,
    remember: bool = True,
) -> Collection:
    """Fetch and verify the collection as a TUF client does (root and its rotation chain,
    timestamp, snapshot, targets, delegations) against the trusted copies and the pins;
    with `remember`, the verified files become the new trusted copies."""
    files = top_files(server, gun)
    if m.ROOT not in files:
        raise TrustError(f"{gun} has no trust data on {server.server} (run init first)")
    trusted = trusted_files.read(gun)
    chain = root_chain(server, gun, trusted.get(m.ROOT), files[m.ROOT])
    fetch_delegations(server, gun, files)
    try:
        coll = verify_collection(gun, files, pinning, trusted=trusted, root_chain=chain)
    except VerifyError as exc:
        raise TrustError(str(exc)) from None
    if remember:
        trusted_files.remember(gun, coll.verified())
    return coll
