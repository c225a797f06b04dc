"""One suite every metadata backend must pass (SQLite today; PostgreSQL joins when it lands)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.metadata.base import MetadataStore
from trustyard.metadata.errors import MissingReference
from trustyard.metadata.events_base import OutboxEntry
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import parse_manifest
from trustyard.registry.gc_mark import mark
from trustyard.wiring import open_database


@pytest.fixture
async def meta(target: Path | str) -> AsyncIterator[MetadataStore]:
    store = (await open_database(target, create=True)).metadata
    yield store
    await store.close()


CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"layer bytes"


def manifest_bytes(seed: str = "", **extra: object) -> bytes:
    body = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": str(Digest.of(CONFIG)),
            "size": len(CONFIG),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": str(Digest.of(LAYER)),
                "size": len(LAYER),
            }
        ],
        "annotations": {"seed": seed},
    }
    body.update(extra)
    return json.dumps(body).encode()


async def link_image_blobs(meta: MetadataStore, repo: str) -> None:
    await meta.link_blob(repo, Digest.of(CONFIG), len(CONFIG))
    await meta.link_blob(repo, Digest.of(LAYER), len(LAYER))


async def test_manifest_requires_linked_blobs(meta: MetadataStore) -> None:
    raw = manifest_bytes()
    m = parse_manifest(raw, None)
    with pytest.raises(MissingReference) as err:
        await meta.put_manifest("r", m, raw, ["v1"])
    assert err.value.kind == "blob"
    assert await meta.get_manifest("r", "v1") is None
    await link_image_blobs(meta, "r")
    await meta.put_manifest("r", m, raw, ["v1"])
    record = await meta.get_manifest("r", "v1")
    assert record is not None and record.content == raw and record.digest == m.digest
    assert (await meta.get_manifest("r", m.digest)) == record


async def test_index_children_must_exist_unless_optional(meta: MetadataStore) -> None:
    """A missing child is MANIFEST_BLOB_UNKNOWN; `optional_children` (indexes.platforms) may be."""
    await link_image_blobs(meta, "ix")
    raw = manifest_bytes("present")
    child = parse_manifest(raw, None)
    await meta.put_manifest("ix", child, raw, [])
    absent = Digest.of(manifest_bytes("absent"))
    entries = [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": str(d), "size": 1}
        for d in (child.digest, absent)
    ]
    index_raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }
    ).encode()
    index = parse_manifest(index_raw, None)
    with pytest.raises(MissingReference) as err:
        await meta.put_manifest("ix", index, index_raw, ["multi"])
    assert (err.value.kind, err.value.digest) == ("manifest", str(absent))
    with pytest.raises(MissingReference):
        await meta.put_manifest(
            "ix", index, index_raw, ["multi"], optional_children=frozenset({child.digest})
        )
    await meta.put_manifest(
        "ix", index, index_raw, ["multi"], optional_children=frozenset({absent})
    )
    record = await meta.get_manifest("ix", "multi")
    assert record is not None and record.content == index_raw


async def test_optional_blobs_may_be_missing_and_gc_keeps_them_once_linked(
    meta: MetadataStore,
) -> None:
    """A mirrored manifest is stored before its blobs (`optional_blobs`); only the blobs named
    optional may be missing, GC of the manifest still works, and a blob linked later is kept
    alive by the manifest like any pushed one."""
    raw = manifest_bytes("mirrored")
    m = parse_manifest(raw, None)
    config, layer = Digest.of(CONFIG), Digest.of(LAYER)
    with pytest.raises(MissingReference) as err:
        await meta.put_manifest("mr", m, raw, ["v1"], optional_blobs=frozenset({config}))
    assert (err.value.kind, err.value.digest) == ("blob", str(layer))
    assert await meta.get_manifest("mr", "v1") is None
    await meta.put_manifest("mr", m, raw, ["v1"], optional_blobs=frozenset({config, layer}))
    record = await meta.get_manifest("mr", "v1")
    assert record is not None and record.content == raw
    assert await meta.blob_size("mr", layer) is None

    async def sweeper(digest: Digest, cutoff: float) -> bool:
        return True

    future = time.time() + 10
    plan = await meta.collect(future, mark=mark, dry_run=False, on_blob_deleted=sweeper)
    assert plan.manifests == [] and plan.links == [] and plan.blobs == []
    await meta.link_blob("mr", layer, len(LAYER))  # fetched later, by a client's blob GET
    plan = await meta.collect(time.time() + 10, mark=mark, dry_run=False, on_blob_deleted=sweeper)
    assert plan.links == [] and plan.blobs == []
    assert await meta.blob_size("mr", layer) == len(LAYER)
    await meta.delete_tag("mr", "v1")
    plan = await meta.collect(time.time() + 10, mark=mark, dry_run=True, on_blob_deleted=sweeper)
    assert [d for _, d in plan.manifests] == [m.digest]
    assert plan.links == [("mr", layer)]


async def test_tags_are_paginated_lexically(meta: MetadataStore) -> None:
    await link_image_blobs(meta, "t")
    raw = manifest_bytes()
    await meta.put_manifest("t", parse_manifest(raw, None), raw, ["b", "a", "C", "a1"])
    assert await meta.list_tags("t", 10, None) == ["C", "a", "a1", "b"]
    assert await meta.list_tags("t", 2, "a") == ["a1", "b"]
    assert await meta.list_tags("nope", 10, None) == []


async def test_manifests_of_a_repository_are_listed_tagged_or_not(meta: MetadataStore) -> None:
    await link_image_blobs(meta, "m")
    await link_image_blobs(meta, "other")
    digests = []
    for seed, tags in (("one", ["v1"]), ("two", []), ("three", [])):
        raw = manifest_bytes(seed)
        m = parse_manifest(raw, None)
        await meta.put_manifest("m", m, raw, tags)
        digests.append(str(m.digest))
    raw = manifest_bytes("elsewhere")
    await meta.put_manifest("other", parse_manifest(raw, None), raw, [])
    ordered = sorted(digests)
    assert await meta.list_manifests("m", 10, None) == ordered
    assert await meta.list_manifests("m", 1, ordered[0]) == ordered[1:2]
    assert await meta.list_manifests("nope", 10, None) == []


async def test_catalog_lists_only_repositories_with_manifests(meta: MetadataStore) -> None:
    for repo in ("z", "a/b", "m"):
        await link_image_blobs(meta, repo)
        raw = manifest_bytes(repo)
        await meta.put_manifest(repo, parse_manifest(raw, None), raw, [])
    await meta.link_blob("blobs-only", Digest.of(LAYER), len(LAYER))
    assert await meta.list_repositories(10, None) == ["a/b", "m", "z"]
    assert await meta.list_repositories(1, "a/b") == ["m"]
    assert await meta.repository_exists("blobs-only")


async def test_referrers_and_filter(meta: MetadataStore) -> None:
    await link_image_blobs(meta, "s")
    subject = Digest.of(b"subject")
    for kind in ("sig", "sbom"):
        raw = manifest_bytes(
            kind,
            artifactType=f"application/{kind}",
            subject={
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": str(subject),
                "size": 1,
            },
        )
        await meta.put_manifest("s", parse_manifest(raw, None), raw, [])
    found = await meta.referrers("s", subject, None)
    assert sorted(d.artifact_type or "" for d in found) == ["application/sbom", "application/sig"]
    assert [d.annotations for d in await meta.referrers("s", subject, "application/sig")] == [
        {"seed": "sig"}
    ]


async def test_delete_manifest_takes_its_tags(meta: MetadataStore) -> None:
    await link_image_blobs(meta, "d")
    raw = manifest_bytes()
    m = parse_manifest(raw, None)
    await meta.put_manifest("d", m, raw, ["x", "y"])
    assert await meta.delete_tag("d", "x") is True
    assert await meta.delete_tag("d", "x") is False
    assert await meta.delete_manifest("d", m.digest) is True
    assert await meta.list_tags("d", 10, None) == []
    assert await meta.delete_manifest("d", m.digest) is False


async def test_mount(meta: MetadataStore) -> None:
    await meta.link_blob("src", Digest.of(LAYER), len(LAYER))
    assert await meta.mount_blob("dst", Digest.of(LAYER), "src") == len(LAYER)
    assert await meta.mount_blob("dst2", Digest.of(LAYER), "elsewhere") is None
    assert await meta.mount_blob("dst3", Digest.of(LAYER), None) == len(LAYER)
    assert await meta.blob_size("dst", Digest.of(LAYER)) == len(LAYER)
    assert await meta.blob_size("dst2", Digest.of(LAYER)) is None


async def test_uploads(meta: MetadataStore) -> None:
    await meta.create_upload("1" * 32, "u")
    record = await meta.get_upload("1" * 32)
    assert record is not None and record.repository == "u"
    assert [r.upload_id for r in await meta.list_uploads()] == ["1" * 32]
    await meta.delete_upload("1" * 32)
    assert await meta.get_upload("1" * 32) is None


async def test_gc_plan_and_sweep(meta: MetadataStore) -> None:
    await link_image_blobs(meta, "g")
    tagged, untagged = manifest_bytes("tagged"), manifest_bytes("untagged")
    await meta.put_manifest("g", parse_manifest(tagged, None), tagged, ["v1"])
    await meta.put_manifest("g", parse_manifest(untagged, None), untagged, [])
    stray = Digest.of(b"stray")
    await meta.link_blob("g", stray, 5)
    deleted: list[Digest] = []

    async def sweeper(digest: Digest, cutoff: float) -> bool:
        deleted.append(digest)
        return True

    # Everything is younger than the cutoff: nothing to collect.
    plan = await meta.collect(time.time() - 3600, mark=mark, dry_run=False, on_blob_deleted=sweeper)
    assert plan.manifests == [] and plan.blobs == [] and deleted == []
    future = time.time() + 10
    plan = await meta.collect(future, mark=mark, dry_run=True, on_blob_deleted=sweeper)
    assert [str(d) for _, d in plan.manifests] == [str(parse_manifest(untagged, None).digest)]
    assert [d for d, _ in plan.blobs] == [stray] and deleted == []
    plan = await meta.collect(future, mark=mark, dry_run=False, on_blob_deleted=sweeper)
    assert deleted == [stray]
    assert await meta.get_manifest("g", "v1") is not None
    assert await meta.get_manifest("g", parse_manifest(untagged, None).digest) is None
    assert await meta.blob_size("g", Digest.of(LAYER)) == len(LAYER)
    assert str(stray) not in await meta.blob_digests()


async def test_repush_refreshes_the_grace_period(meta: MetadataStore) -> None:
    """A manifest PUT again (and a blob linked again) counts as new: a GC whose cutoff falls
    between the two pushes keeps it (issue 19: a CI loop re-pushing children by digest)."""
    await link_image_blobs(meta, "re")
    raw = manifest_bytes("again")
    manifest = parse_manifest(raw, None)
    await meta.put_manifest("re", manifest, raw, [])
    stray = Digest.of(b"relinked")
    await meta.link_blob("re", stray, 8)
    time.sleep(0.01)
    between = time.time()
    time.sleep(0.01)
    await meta.put_manifest("re", manifest, raw, [])
    await meta.link_blob("re", stray, 8)
    deleted: list[Digest] = []

    async def sweeper(digest: Digest, cutoff: float) -> bool:
        deleted.append(digest)
        return True

    plan = await meta.collect(between, mark=mark, dry_run=False, on_blob_deleted=sweeper)
    assert plan.manifests == [] and plan.links == [] and plan.blobs == [] and deleted == []
    assert await meta.get_manifest("re", manifest.digest) is not None
    # not vacuous: once the cutoff passes the second push, both go
    plan = await meta.collect(time.time() + 1, mark=mark, dry_run=True, on_blob_deleted=sweeper)
    assert [d for _, d in plan.manifests] == [manifest.digest]
    assert stray in [d for d, _ in plan.blobs]


async def test_put_manifest_says_where_its_tags_pointed_before(meta: MetadataStore) -> None:
    """The previous targets come from the write's own transaction (audit `tag_move`, events
    `tag-moved`), and a function given as `events` is called with them there."""
    await link_image_blobs(meta, "moves")
    first_raw, second_raw = manifest_bytes("first"), manifest_bytes("second")
    first, second = parse_manifest(first_raw, None), parse_manifest(second_raw, None)
    assert await meta.put_manifest("moves", first, first_raw, ["a", "b"]) == {}
    seen: list[dict[str, str]] = []

    def events(before: dict[str, str]) -> list[OutboxEntry]:
        seen.append(dict(before))
        return []

    before = await meta.put_manifest("moves", second, second_raw, ["b", "c"], events=events)
    assert before == {"b": str(first.digest)}  # "c" did not exist, "a" was not asked
    assert seen == [before]
    # A refused write commits nothing: the tags stay where they were.
    missing_raw = manifest_bytes(
        "missing", layers=[{"mediaType": "x", "digest": str(Digest.of(b"?")), "size": 1}]
    )
    missing = parse_manifest(missing_raw, None)
    with pytest.raises(MissingReference):
        await meta.put_manifest("moves", missing, missing_raw, ["a"])
    record = await meta.get_manifest("moves", "a")
    assert record is not None and record.digest == first.digest
    record = await meta.get_manifest("moves", "b")
    assert record is not None and record.digest == second.digest
