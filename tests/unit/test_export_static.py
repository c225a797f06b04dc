"""The static export's pure parts: the plan over a small in-memory store, applying it
incrementally (links, streams, removals, foreign files), and the generated server configs."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trustyard.metadata.base import ManifestRecord
from trustyard.metadata.signatures_base import StoredSignature
from trustyard.oci.digest import Digest
from trustyard.oci.manifest import Descriptor
from trustyard.registry.export import Entry, ExportError, ExportPlan, ExportSources, plan_export
from trustyard.registry.export_apply import apply_export, check_target
from trustyard.registry.export_servers import caddyfile, nginx_conf
from trustyard.storage.base import BlobStat

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class Blobs:
    """Blob files under a directory; `local` False behaves like an object store (streamed)."""

    def __init__(self, root: Path, local: bool = True) -> None:
        self.root, self.local = root, local
        root.mkdir(parents=True, exist_ok=True)

    def add(self, data: bytes) -> Digest:
        digest = Digest.of(data)
        (self.root / digest.hex).write_bytes(data)
        return digest

    async def stat(self, digest: Digest) -> BlobStat | None:
        path = self.root / digest.hex
        return BlobStat(path.stat().st_size, 0.0) if path.exists() else None

    def local_path(self, digest: Digest) -> Path | None:
        return self.root / digest.hex if self.local else None

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        yield (self.root / digest.hex).read_bytes()


class Store:
    """The metadata calls the export makes, over dicts."""

    def __init__(self) -> None:
        self.manifests: dict[str, dict[str, ManifestRecord]] = {}
        self.tags: dict[str, dict[str, str]] = {}

    def put(
        self, repo: str, content: bytes, tag: str | None, subject: Digest | None = None
    ) -> Digest:
        digest = Digest.of(content)
        record = ManifestRecord(repo, digest, OCI_MANIFEST, len(content), content, subject)
        self.manifests.setdefault(repo, {})[str(digest)] = record
        if tag:
            self.tags.setdefault(repo, {})[tag] = str(digest)
        return digest

    async def list_repositories(self, limit: int, last: str | None) -> list[str]:
        return sorted(self.manifests)

    async def list_manifests(self, repo: str, limit: int, last: str | None) -> list[str]:
        return sorted(self.manifests.get(repo, {}))

    async def list_tags(self, repo: str, limit: int, last: str | None) -> list[str]:
        return sorted(self.tags.get(repo, {}))

    async def get_manifest(self, repo: str, ref: str | Digest) -> ManifestRecord | None:
        key = str(ref) if isinstance(ref, Digest) else self.tags.get(repo, {}).get(ref, "")
        return self.manifests.get(repo, {}).get(key)

    async def referrers(
        self, repo: str, subject: Digest, artifact_type: str | None
    ) -> list[Descriptor]:
        return [
            Descriptor(r.media_type, r.digest, r.size, "application/x.sbom")
            for r in self.manifests.get(repo, {}).values()
            if r.subject == subject
        ]


class Signatures:
    async def list_signatures(self, repo: str, digest: Digest) -> list[StoredSignature]:
        return [StoredSignature("a", b"sig-one", 0.0), StoredSignature("b", b"sig-two", 0.0)]


def manifest(blobs: Blobs, seed: str, subject: Digest | None = None) -> bytes:
    config = blobs.add(f"config {seed}".encode())
    layer = blobs.add(f"layer {seed}".encode())
    body: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": str(config), "size": len(f"config {seed}")},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": str(layer), "size": len(f"layer {seed}")}],
    }  # fmt: skip
    if subject is not None:
        body["subject"] = {"mediaType": OCI_MANIFEST, "digest": str(subject), "size": 1}
    return json.dumps(body).encode()


def export(store: Store, blobs: Blobs, dest: Path, patterns: list[str] | None = None,
           **kw: object) -> tuple[ExportPlan, dict[str, int]]:  # fmt: skip
    async def go() -> tuple[ExportPlan, dict[str, int]]:
        sources = ExportSources(store, blobs, **kw)  # type: ignore[arg-type]
        plan = await plan_export(sources, patterns or [], signatures=bool(kw))
        summary = await apply_export(plan, dest, blobs, [])  # type: ignore[arg-type]
        return plan, vars(summary)

    return asyncio.run(go())


def test_plan_has_every_registry_path_and_the_tag_schema_referrers(tmp_path: Path) -> None:
    blobs, store = Blobs(tmp_path / "store"), Store()
    image = store.put("team/app", manifest(blobs, "a"), "v1")
    sbom = store.put("team/app", manifest(blobs, "sbom", subject=image), None, image)
    plan, summary = export(store, blobs, tmp_path / "out")
    paths = set(plan.entries)
    tag = f"sha256-{image.hex}"
    assert {
        "v2/index.json",
        "v2/_catalog",
        "v2/team/app/tags/list",
        "v2/team/app/manifests/v1",
        f"v2/team/app/manifests/{image}",
        f"v2/team/app/manifests/{sbom}",
        f"v2/team/app/manifests/{tag}",
        f"v2/team/app/referrers/{image}",
    } <= paths
    assert summary["linked"] == 4 and summary["copied"] == 0
    tags = json.loads((tmp_path / "out/v2/team/app/tags/list").read_bytes())
    assert tags == {"name": "team/app", "tags": [tag, "v1"]}
    index = json.loads((tmp_path / "out/v2/team/app/manifests" / tag).read_bytes())
    assert [m["digest"] for m in index["manifests"]] == [str(sbom)]


def test_reexport_changes_only_what_changed_and_spares_foreign_files(tmp_path: Path) -> None:
    blobs, store, out = Blobs(tmp_path / "store"), Store(), tmp_path / "out"
    store.put("a", manifest(blobs, "a"), "v1")
    store.put("b", manifest(blobs, "b"), "v1")
    (out / "v2" / "a").mkdir(parents=True)
    (out / "v2" / "a" / "notes.txt").write_text("mine")
    _, first = export(store, blobs, out)
    _, second = export(store, blobs, out)
    assert second["written"] == second["linked"] == second["removed"] == 0
    assert second["unchanged"] == first["written"] + first["linked"]
    # `b` leaves the selection: its files go, directories it emptied go, ours stay.
    _, third = export(store, blobs, out, ["a"])
    assert third["removed"] == 5 and not (out / "v2" / "b").exists()
    assert (out / "v2" / "a" / "notes.txt").read_text() == "mine"
    # A replaced file is rewritten even though the record says it was written.
    tags = out / "v2/a/tags/list"
    tags.write_text("tampered")
    _, fourth = export(store, blobs, out, ["a"])
    assert fourth["written"] == 1 and fourth["linked"] == fourth["removed"] == 0
    assert json.loads(tags.read_bytes())["tags"] == ["v1"]


def test_blobs_from_an_object_store_are_streamed_and_checked(tmp_path: Path) -> None:
    blobs, store, out = Blobs(tmp_path / "store", local=False), Store(), tmp_path / "out"
    image = store.put("s3/app", manifest(blobs, "s3"), "v1")
    _, summary = export(store, blobs, out)
    assert summary["copied"] == 2 and summary["linked"] == 0
    assert (out / "v2/s3/app/manifests" / str(image)).exists()
    _, again = export(store, blobs, out)
    assert again["copied"] == 0
    # A corrupt object is refused, and nothing half-written is left beside the good files.
    layer = next(p for p in (tmp_path / "store").iterdir() if p.read_bytes().startswith(b"layer"))
    layer.write_bytes(b"rot")
    (out / "v2/s3/app/blobs" / f"sha256:{layer.name}").unlink()
    with pytest.raises(ExportError, match="does not match its digest"):
        export(store, blobs, out)
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]


def test_a_missing_blob_fails_the_export_before_anything_is_written(tmp_path: Path) -> None:
    blobs, store, out = Blobs(tmp_path / "store"), Store(), tmp_path / "out"
    store.put("a", manifest(blobs, "a"), "v1")
    os.remove(next(p for p in (tmp_path / "store").iterdir()))  # collected meanwhile
    with pytest.raises(ExportError, match="missing from the store"):
        export(store, blobs, out)
    assert not out.exists()


class Failing(Blobs):
    """Streams `budget` blobs, then the connection breaks."""

    budget = 1

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        if self.budget == 0:
            raise OSError("connection reset")
        self.budget -= 1
        yield (self.root / digest.hex).read_bytes()


def test_an_interrupted_export_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    blobs, store, out = Failing(tmp_path / "store", local=False), Store(), tmp_path / "out"
    store.put("gone", manifest(blobs, "gone"), "v1")
    with pytest.raises(OSError, match="connection reset"):
        export(store, blobs, out)
    written = [p for p in (out / "v2").rglob("*") if p.is_file()]
    assert len(written) == 1 and "blobs" in str(written[0])  # no manifest names it yet
    del store.manifests["gone"], store.tags["gone"]
    blobs.budget = 10
    _, summary = export(store, blobs, out)
    assert summary["removed"] == 1 and not (out / "v2" / "gone").exists()


def test_signatures_lookaside_layout_and_statements(tmp_path: Path) -> None:
    blobs, store, out = Blobs(tmp_path / "store"), Store(), tmp_path / "out"
    image = store.put("team/app", manifest(blobs, "a"), "v1")

    async def statements() -> bytes:
        return b'{"statements":[]}'

    export(store, blobs, out, signatures=Signatures(), statements=statements)
    base = out / f"sigstore/team/app@sha256={image.hex}"
    assert (base / "signature-1").read_bytes() == b"sig-one"
    assert (base / "signature-2").read_bytes() == b"sig-two"
    assert (out / "extensions/v2/_authority/statements").read_bytes() == b'{"statements":[]}'


def test_clashing_paths_are_left_out_with_a_warning(tmp_path: Path) -> None:
    blobs, store = Blobs(tmp_path / "store"), Store()
    store.put("a", manifest(blobs, "a"), "x")
    store.put("a/manifests/x", manifest(blobs, "b"), "v1")
    plan, _ = export(store, blobs, tmp_path / "out")
    assert "v2/a/manifests/x" not in plan.entries
    assert any("needs it as a directory" in w for w in plan.warnings)


def test_targets_in_or_around_the_data_dir_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for bad in (data, data / "www", tmp_path):
        with pytest.raises(ExportError):
            check_target(bad, data)
    check_target(tmp_path / "www", data)


def test_a_path_cannot_leave_the_export(tmp_path: Path) -> None:
    plan = ExportPlan()
    plan.add(Entry.of("v2/../../etc/x", b"x", "text/plain"))
    with pytest.raises(ExportError, match="would leave"):
        asyncio.run(apply_export(plan, tmp_path / "out", Blobs(tmp_path / "s"), []))  # type: ignore[arg-type]
    assert not (tmp_path / "etc").exists()


def test_server_configs_give_each_manifest_its_type_and_digest(tmp_path: Path) -> None:
    blobs, store = Blobs(tmp_path / "store"), Store()
    image = store.put("team/app", manifest(blobs, "a"), "v1")
    plan, _ = export(store, blobs, tmp_path / "out")
    conf = nginx_conf(plan, tmp_path / "out", "127.0.0.1:8080")
    rule = (
        f"location = /v2/team/app/manifests/v1 {{ default_type {OCI_MANIFEST}; "
        f"add_header Docker-Content-Digest {image};"
    )
    assert rule in conf and conf == nginx_conf(plan, tmp_path / "out", "127.0.0.1:8080")
    caddy = caddyfile(plan, tmp_path / "out", "127.0.0.1:8080")
    assert f"header @m1 Docker-Content-Digest {image}" in caddy
    bad = ExportPlan()
    bad.add(Entry.of("v2/a/manifests/v1", b"{}", "text/html; x=1", "sha256:" + "0" * 64))
    with pytest.raises(ExportError):
        nginx_conf(bad, tmp_path, "80")


def test_options_written_into_configs_are_checked(tmp_path: Path) -> None:
    from trustyard.cli.export import check_base_url
    from trustyard.registry.export_servers import check_options

    check_options(tmp_path / "www", "127.0.0.1:8080")
    check_base_url("http://mirror.example.com:8080/base")
    for root, listen in [(tmp_path, "80; include /etc/x"), (Path("/srv/a b"), "80"),
                         (Path('/srv/a";'), "80")]:  # fmt: skip
        with pytest.raises(ExportError):
            check_options(root, listen)
    for url in ("ftp://x", "http://a b", "http://x/\n  lookaside: evil", "http://x?q=1"):
        with pytest.raises(ExportError):
            check_base_url(url)


def test_an_edited_record_cannot_make_the_export_delete_elsewhere(tmp_path: Path) -> None:
    from trustyard.registry.export_apply import read_state

    victim = tmp_path / "victim"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    for record in ('{"format": 1, "files": {"../victim": "x"}}', "[1]", '{"format": 9}'):
        (out / ".trustyard-export.json").write_text(record)
        with pytest.raises(ExportError):
            read_state(out)
    assert victim.read_text() == "keep"
