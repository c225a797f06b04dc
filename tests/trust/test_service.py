"""Publish validation with hand-made metadata: each bad update is refused with Notary's error,
and a refused or interrupted publish stores nothing."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.trust.helpers import GUN, NOW, Repo, close_service, open_service, signed_file
from trustyard.crypto.notary_keys import PrivateKey, PublicKey
from trustyard.trust import model as m
from trustyard.trust.server.service import InvalidRequest, TrustService
from trustyard.trust.server.validation import ValidationFailure


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[TrustService]:
    service = await open_service(tmp_path)
    yield service
    await close_service(service)


async def initialise(service: TrustService, repo: Repo) -> dict[str, bytes]:
    ts = await service.get_key(GUN, "timestamp", "alice")
    root = repo.root(ts.to_json())
    targets = repo.targets({"v1": b"one"})
    snapshot = repo.snapshot({"root": root, "targets": targets})
    files = {"root": root, "targets": targets, "snapshot": snapshot}
    await service.publish(GUN, files, "alice")
    return files


async def versions(service: TrustService) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for role in ("root", "targets", "snapshot", "timestamp", "targets/releases"):
        f = await service.store.get_file(GUN, role)
        out[role] = f.version if f else None
    return out


async def refused(service: TrustService, files: dict[str, bytes]) -> ValidationFailure:
    before = await versions(service)
    changes = len(await service.changes(GUN, None, 100, False))
    with pytest.raises(ValidationFailure) as info:
        await service.publish(GUN, files, "mallory")
    assert await versions(service) == before  # nothing stored
    assert len(await service.changes(GUN, None, 100, False)) == changes
    return info.value


def verify_signed_by(data: bytes, key: PublicKey, role: str = "timestamp") -> m.Signed:
    signed = m.parse_signed(role, data)
    assert signed.meets(m.RoleKeys((key.key_id,), 1), {key.key_id: key})
    return signed


async def test_publish_keeps_exact_bytes_and_signs_a_timestamp(service: TrustService) -> None:
    repo = Repo()
    files = await initialise(service, repo)
    for role, data in files.items():
        assert (await service.get_metadata(GUN, role)).data == data
        assert (
            await service.get_metadata(GUN, role, sha256=hashlib.sha256(data).hexdigest())
        ).data == data
        assert (await service.get_metadata(GUN, role, version=1)).data == data
    ts = await service.get_metadata(GUN, "timestamp")
    ts_key = await service.get_key(GUN, "timestamp", "alice")
    parsed = verify_signed_by(ts.data, ts_key)
    meta = m.parse_meta_map("timestamp", ts.data).meta["snapshot"]
    assert meta.mismatch(files["snapshot"]) is None
    assert parsed.version == 1
    # Exact bytes: the uploads were indented, not canonical.
    assert files["root"].startswith(b'{\n "signed"')


async def test_tampered_signature_is_refused(service: TrustService) -> None:
    repo = Repo()
    files = await initialise(service, repo)
    doc = json.loads(repo.targets({"v1": b"one", "v2": b"two"}, version=2))
    doc["signed"]["targets"]["v2"]["length"] = 999  # changed after signing
    targets = json.dumps(doc).encode()
    err = await refused(
        service,
        {
            "targets": targets,
            "snapshot": repo.snapshot({"root": files["root"], "targets": targets}, version=2),
        },
    )
    assert err.kind == "ErrBadTargets"
    assert "not signed by the threshold" in err.msg


async def test_below_threshold_root_is_refused(service: TrustService) -> None:
    repo = Repo(
        root_keys=[PrivateKey.generate("ecdsa"), PrivateKey.generate("ecdsa")], root_threshold=2
    )
    ts = await service.get_key(GUN, "timestamp", "alice")
    root = repo.root(ts.to_json(), sign_with=repo.root_keys[:1])
    targets = repo.targets({})
    err = await refused(
        service,
        {
            "root": root,
            "targets": targets,
            "snapshot": repo.snapshot({"root": root, "targets": targets}),
        },
    )
    assert err.kind == "ErrBadRoot"
    assert err.to_detail() == {"Name": "ErrBadRoot", "Error": {"Msg": err.msg}}
    # Both signatures: accepted.
    root = repo.root(ts.to_json())
    await service.publish(
        GUN,
        {
            "root": root,
            "targets": targets,
            "snapshot": repo.snapshot({"root": root, "targets": targets}),
        },
        "alice",
    )
    assert (await versions(service))["root"] == 1


async def test_rollback_and_replay_are_refused_with_version_error(service: TrustService) -> None:
    repo = Repo()
    files = await initialise(service, repo)
    t2 = repo.targets({"v2": b"two"}, version=2)
    await service.publish(
        GUN,
        {
            "targets": t2,
            "snapshot": repo.snapshot({"root": files["root"], "targets": t2}, version=2),
        },
        "alice",
    )
    before = await versions(service)
    for version in (1, 2):  # older, and a replay of the current version
        t = repo.targets({"evil": b"x"}, version=version)
        with pytest.raises(InvalidRequest) as info:
            await service.publish(
                GUN,
                {
                    "targets": t,
                    "snapshot": repo.snapshot({"root": files["root"], "targets": t}, version=3),
                },
                "mallory",
            )
        assert info.value.code == "VERSION"
    assert await versions(service) == before


async def test_snapshot_with_wrong_targets_hash_is_refused(service: TrustService) -> None:
    repo = Repo()
    files = await initialise(service, repo)
    t2 = repo.targets({"v2": b"two"}, version=2)
    other = repo.targets({"v3": b"three"}, version=2)
    err = await refused(
        service,
        {
            "targets": t2,
            "snapshot": repo.snapshot({"root": files["root"], "targets": other}, version=2),
        },
    )
    assert err.kind == "ErrBadSnapshot"
    assert "targets" in err.msg


async def test_root_rotation_needs_old_and_new_root_signatures(service: TrustService) -> None:
    repo = Repo()
    await initialise(service, repo)
    ts = await service.get_key(GUN, "timestamp", "alice")
    old_keys = repo.root_keys
    repo.root_keys = [PrivateKey.generate("ecdsa")]
    only_new = repo.root(ts.to_json(), version=2)
    err = await refused(service, {"root": only_new})
    assert err.kind == "ErrBadRoot"
    assert "previous root" in err.msg
    both = repo.root(ts.to_json(), version=2, sign_with=[*repo.root_keys, *old_keys])
    t = (await service.get_metadata(GUN, "targets")).data
    await service.publish(
        GUN,
        {"root": both, "snapshot": repo.snapshot({"root": both, "targets": t}, version=2)},
        "alice",
    )
    assert (await versions(service))["root"] == 2
    # Skipping a version is refused too.
    err = await refused(service, {"root": repo.root(ts.to_json(), version=4)})
    assert "must increment" in err.msg


async def server_snapshot(service: TrustService, repo: Repo, root_version: int = 2) -> None:
    """Rotate the snapshot key to the server (notary key rotate GUN snapshot -r)."""
    key = await service.rotate_key(GUN, "snapshot", "alice")
    ts = await service.get_key(GUN, "timestamp", "alice")
    root = repo.root(ts.to_json(), version=root_version, snapshot_key=key.to_json())
    await service.publish(GUN, {"root": root}, "alice")


async def test_server_generates_snapshot_when_it_holds_the_key(service: TrustService) -> None:
    repo = Repo()
    await initialise(service, repo)
    await server_snapshot(service, repo)
    snap_key = await service.get_key(GUN, "snapshot", "alice")
    snap = await service.get_metadata(GUN, "snapshot")
    parsed = verify_signed_by(snap.data, snap_key, "snapshot")
    assert parsed.version == 2
    t2 = repo.targets({"v2": b"two"}, version=2)
    await service.publish(GUN, {"targets": t2}, "alice")
    snap = await service.get_metadata(GUN, "snapshot")
    meta = m.parse_meta_map("snapshot", snap.data).meta
    assert meta["targets"].mismatch(t2) is None
    assert meta["root"].mismatch((await service.get_metadata(GUN, "root")).data) is None
    assert m.parse_signed("snapshot", snap.data).version == 3


async def test_no_snapshot_without_server_snapshot_key_is_a_hierarchy_error(
    service: TrustService,
) -> None:
    repo = Repo()
    await initialise(service, repo)
    err = await refused(service, {"targets": repo.targets({"v2": b"two"}, version=2)})
    assert err.kind == "ErrBadHierarchy"
    assert err.to_detail()["Error"]["Missing"] == "snapshot"


async def test_delegation_must_stay_within_paths_and_use_delegated_keys(
    service: TrustService,
) -> None:
    repo = Repo()
    await initialise(service, repo)
    await server_snapshot(service, repo)
    releaser, stranger = PrivateKey.generate("ecdsa"), PrivateKey.generate("ecdsa")
    t2 = repo.targets(
        {"v1": b"one"}, version=2, delegations=[("targets/releases", releaser, ["releases/"])]
    )
    await service.publish(GUN, {"targets": t2}, "alice")
    outside = repo.targets({"latest": b"x"}, role="targets/releases", key=releaser)
    err = await refused(service, {"targets/releases": outside})
    assert err.kind == "ErrBadTargets" and "outside its delegated paths" in err.msg
    wrong_key = repo.targets({"releases/1": b"x"}, role="targets/releases", key=stranger)
    err = await refused(service, {"targets/releases": wrong_key})
    assert err.kind == "ErrBadTargets" and "delegated to it" in err.msg
    undelegated = repo.targets({"x": b"x"}, role="targets/other", key=releaser)
    err = await refused(service, {"targets/other": undelegated})
    assert "is not delegated" in err.msg
    good = repo.targets({"releases/1": b"x"}, role="targets/releases", key=releaser)
    await service.publish(GUN, {"targets/releases": good}, "bob")
    assert (await service.get_metadata(GUN, "targets/releases")).data == good
    meta = m.parse_meta_map("snapshot", (await service.get_metadata(GUN, "snapshot")).data).meta
    assert meta["targets/releases"].mismatch(good) is None


async def test_expired_metadata_is_refused(service: TrustService) -> None:
    repo = Repo()
    files = await initialise(service, repo)
    past = NOW - dt.timedelta(seconds=5)
    t = repo.targets({"v2": b"two"}, version=2, expires=past)
    err = await refused(
        service,
        {"targets": t, "snapshot": repo.snapshot({"root": files["root"], "targets": t}, version=2)},
    )
    assert err.kind == "ErrBadTargets" and "expired" in err.msg
    ts = await service.get_key(GUN, "timestamp", "alice")
    err = await refused(service, {"root": repo.root(ts.to_json(), version=2, expires=past)})
    assert err.kind == "ErrBadRoot" and "expired" in err.msg


async def test_wrong_type_and_garbage_are_refused(service: TrustService) -> None:
    repo = Repo()
    files = await initialise(service, repo)
    err = await refused(service, {"targets": files["snapshot"]})
    assert err.kind == "ErrBadTargets" and "_type" in err.msg
    body: dict[str, Any] = {"_type": "Targets", "expires": "tomorrow", "version": 2}
    err = await refused(service, {"targets": signed_file(body, [repo.targets_key])})
    assert "RFC 3339" in err.msg


async def test_interrupted_publish_changes_nothing(
    service: TrustService, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = Repo()
    files = await initialise(service, repo)
    before = await versions(service)

    async def crash(*args: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(service.store, "_audit", crash)  # fails after the files were inserted
    t2 = repo.targets({"v2": b"two"}, version=2)
    with pytest.raises(RuntimeError):
        await service.publish(
            GUN,
            {
                "targets": t2,
                "snapshot": repo.snapshot({"root": files["root"], "targets": t2}, version=2),
            },
            "alice",
        )
    assert await versions(service) == before


async def test_timestamp_is_resigned_when_about_to_expire(service: TrustService) -> None:
    repo = Repo()
    await initialise(service, repo)
    first = await service.get_metadata(GUN, "timestamp")
    assert (await service.get_metadata(GUN, "timestamp")).data == first.data  # fresh: unchanged
    service._clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=13, hours=1)
    refreshed = await service.get_metadata(GUN, "timestamp")
    assert m.parse_signed("timestamp", refreshed.data).version == 2
    verify_signed_by(refreshed.data, await service.get_key(GUN, "timestamp", "x"))
    changes = await service.changes(GUN, None, 10, False)
    assert [c.version for c in changes] == [1, 2]


async def test_keys_changefeed_and_audit(service: TrustService) -> None:
    first = await service.get_key(GUN, "timestamp", "alice")
    assert await service.get_key(GUN, "timestamp", "alice") == first  # get-or-create is stable
    repo = Repo()
    await initialise(service, repo)
    rotated = await service.rotate_key(GUN, "timestamp", "alice")
    assert rotated != first
    assert await service.get_key(GUN, "timestamp", "alice") == first  # root still names the old one
    await service.delete(GUN, "alice")
    assert await service.store.get_file(GUN, "root") is None
    changes = await service.changes(GUN, None, 10, False)
    assert [c.category for c in changes] == ["update", "deletion"]
    newest = await service.changes(None, None, 1, True)
    assert newest[0].category == "deletion"
    events = [e for _, e in await service.store.audit_events(GUN)]
    assert [e.action for e in events] == ["publish", "rotate_key", "delete"]
    assert events[0].actor == "alice"
    assert events[0].detail["versions"]["root"] == {"old": None, "new": 1}
