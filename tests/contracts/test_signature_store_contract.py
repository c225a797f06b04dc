"""The simple-signature store on every metadata backend: the admission callback runs inside the
write transaction and can refuse, and DELETE removes exactly the named rows of one manifest."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.contracts.test_metadata_contract import link_image_blobs, manifest_bytes
from trustyard.metadata.signatures_base import ManifestMissing, StoredSignature
from trustyard.metadata.signatures_sql import SqlSignatureStore
from trustyard.metadata.sql import SqlMetadataStore
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import parse_manifest
from trustyard.wiring import open_database


@pytest.fixture
async def meta(target: Path | str) -> AsyncIterator[SqlMetadataStore]:
    store = (await open_database(target, create=True)).metadata
    assert isinstance(store, SqlMetadataStore)
    yield store
    await store.close()


class Full(Exception):
    pass


async def test_admission_and_delete(meta: SqlMetadataStore) -> None:
    sigs = SqlSignatureStore(meta.reader, meta.writer)
    digests = []
    for repo, seed in (("team/app", "a"), ("team/app", "b"), ("other/app", "a")):
        await link_image_blobs(meta, repo)
        raw = manifest_bytes(seed)
        manifest = parse_manifest(raw, None)
        await meta.put_manifest(repo, manifest, raw, [])
        digests.append(manifest.digest)
    a, b, _ = digests
    seen: list[list[str]] = []

    def admit_up_to(n: int) -> Callable[[list[StoredSignature]], None]:
        def admit(existing: list[StoredSignature]) -> None:
            seen.append(sorted(s.name for s in existing))
            if len(existing) >= n:
                raise Full(len(existing))

        return admit

    for i in range(3):
        assert await sigs.add_signature("team/app", a, f"{a}@{i}", b"sig%d" % i, admit_up_to(3))
    with pytest.raises(Full):
        await sigs.add_signature("team/app", a, f"{a}@3", b"sig3", admit_up_to(3))
    assert seen[-1] == [f"{a}@0", f"{a}@1", f"{a}@2"]
    # duplicates are answered before admission (idempotent PUT), other manifests are separate
    assert not await sigs.add_signature("team/app", a, f"{a}@9", b"sig1", admit_up_to(0))
    assert await sigs.add_signature("team/app", b, f"{b}@0", b"sig0", admit_up_to(1))
    assert await sigs.add_signature("other/app", a, f"{a}@0", b"sig0", admit_up_to(1))
    with pytest.raises(ManifestMissing):
        await sigs.add_signature("team/app", Digest.of(b"x"), "n", b"s", admit_up_to(9))

    assert await sigs.delete_signatures("team/app", a, [f"{a}@1", f"{a}@7"]) == 1
    assert await sigs.delete_signatures("team/app", a, []) == 0
    assert [s.name for s in await sigs.list_signatures("team/app", a)] == [f"{a}@0", f"{a}@2"]
    assert len(await sigs.list_signatures("other/app", a)) == 1  # other repository untouched
    assert len(await sigs.list_signatures("team/app", b)) == 1  # other manifest untouched
    assert await sigs.delete_signatures("no/repo", a, [f"{a}@0"]) == 0
