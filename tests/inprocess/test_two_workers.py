"""Two apps on one data dir, as two Granian workers (or a restart) share it.

Upload sessions live in the metadata and the files, so any worker continues them; the manifest
lookup cache of one worker must never serve what another worker has since changed.
"""

from __future__ import annotations

from tests.inprocess.conftest import serve
from tests.inprocess.helpers import OCI_MANIFEST, code, make_image, push_image, put_manifest, sha256
from trustyard.config import Settings


async def test_upload_continues_on_the_other_worker(settings: Settings) -> None:
    data = b"first half|second half"
    async with serve(settings) as one, serve(settings) as two:
        location = (await one.post("/v2/w/blobs/uploads/")).headers["Location"]
        r = await one.patch(location, content=data[:11], headers={"Content-Range": "0-10"})
        assert r.status_code == 202
        assert (await two.get(location)).headers["Range"] == "0-10"
        r = await two.patch(
            location, content=data[11:], headers={"Content-Range": f"11-{len(data) - 1}"}
        )
        assert r.status_code == 202
        r = await one.put(location, params={"digest": sha256(data)})
        assert r.status_code == 201
        assert (await two.get(f"/v2/w/blobs/{sha256(data)}")).content == data
        r = await two.patch(location, content=b"late")
        assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"


async def test_upload_survives_a_restart(settings: Settings) -> None:
    async with serve(settings) as before:
        location = (await before.post("/v2/r/blobs/uploads/")).headers["Location"]
        await before.patch(location, content=b"kept", headers={"Content-Range": "0-3"})
    async with serve(settings) as after:
        assert (await after.get(location)).headers["Range"] == "0-3"
        r = await after.put(location, params={"digest": sha256(b"kept!")}, content=b"!")
        assert r.status_code == 201


async def test_cancel_on_one_worker_is_seen_by_the_other(settings: Settings) -> None:
    async with serve(settings) as one, serve(settings) as two:
        location = (await one.post("/v2/c/blobs/uploads/")).headers["Location"]
        assert (await two.get(location)).status_code == 204  # the other worker knows it now
        assert (await one.delete(location)).status_code == 204
        r = await two.patch(location, content=b"x")
        assert r.status_code == 404 and code(r) == "BLOB_UPLOAD_UNKNOWN"


async def test_tag_moved_on_one_worker_is_seen_by_the_other(settings: Settings) -> None:
    old, new = make_image("old"), make_image("new")
    async with serve(settings) as one, serve(settings) as two:
        await push_image(one, "t", old, "v1")
        for _ in range(2):  # the second read is the one a lookup cache would answer
            r = await two.get("/v2/t/manifests/v1")
            assert r.headers["Docker-Content-Digest"] == old.digest
        await push_image(one, "t", new, "v1")
        r = await two.get("/v2/t/manifests/v1")
        assert r.headers["Docker-Content-Digest"] == new.digest and r.content == new.manifest
        assert (await one.delete("/v2/t/manifests/v1")).status_code == 202
        r = await two.get("/v2/t/manifests/v1")
        assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN"
        r = await two.head(f"/v2/t/manifests/{new.digest}")
        assert r.status_code == 200  # deleting the tag left the manifest


async def test_manifest_deleted_on_one_worker_is_gone_on_the_other(settings: Settings) -> None:
    image = make_image("gone")
    async with serve(settings) as one, serve(settings) as two:
        await push_image(one, "g", image, "v1")
        assert (await two.get(f"/v2/g/manifests/{image.digest}")).status_code == 200
        assert (await two.get("/v2/g/manifests/v1")).status_code == 200
        assert (await one.delete(f"/v2/g/manifests/{image.digest}")).status_code == 202
        for ref in (image.digest, "v1"):
            r = await two.get(f"/v2/g/manifests/{ref}")
            assert r.status_code == 404 and code(r) == "MANIFEST_UNKNOWN", ref
        # Pushed again through the other worker: both see it again.
        assert (await put_manifest(two, "g", "v1", image.manifest, OCI_MANIFEST)).status_code == 201
        assert (await one.get("/v2/g/manifests/v1")).content == image.manifest
