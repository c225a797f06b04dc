"""Content discovery and management: tags, catalog, referrers, deletes."""

from __future__ import annotations

import json

import httpx

from tests.integration.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    make_image,
    push_blob,
    push_image,
    sha256,
)
from tests.integration.server import ServerProcess


def _push_tags(client: httpx.Client, repo: str, tags: list[str]) -> None:
    image = make_image(1)
    push_image(client, repo, image)
    for tag in tags:
        r = client.put(
            f"/v2/{repo}/manifests/{tag}",
            content=image.manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 201


def test_tags_list_pagination(client: httpx.Client) -> None:
    tags = ["b", "a", "c", "d2", "d10", "E"]
    _push_tags(client, "t", tags)
    r = client.get("/v2/t/tags/list")
    assert r.json() == {"name": "t", "tags": sorted(tags)}  # lexical (byte) order
    assert "Link" not in r.headers
    r = client.get("/v2/t/tags/list", params={"n": 2})
    assert r.json()["tags"] == ["E", "a"]
    assert r.headers["Link"] == '</v2/t/tags/list?n=2&last=a>; rel="next"'
    r = client.get("/v2/t/tags/list", params={"n": 2, "last": "a"})
    assert r.json()["tags"] == ["b", "c"]
    r = client.get("/v2/t/tags/list", params={"n": 10, "last": "c"})
    assert r.json()["tags"] == ["d10", "d2"] and "Link" not in r.headers
    r = client.get("/v2/t/tags/list", params={"n": 0})
    assert r.json()["tags"] == [] and "Link" not in r.headers


def test_tags_list_errors(client: httpx.Client) -> None:
    for params in ({}, {"n": 0}, {"n": 5, "last": "z"}):
        r = client.get("/v2/nothere/tags/list", params=params)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    r = client.get(f"/v2/nothere/referrers/{sha256(b'x')}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    # A known repository past its last tag: an empty page, not an error.
    _push_tags(client, "t2", ["x"])
    r = client.get("/v2/t2/tags/list", params={"n": 5, "last": "x"})
    assert r.status_code == 200 and r.json()["tags"] == []
    for bad in ("-1", "abc"):
        r = client.get("/v2/t2/tags/list", params={"n": bad})
        assert r.status_code == 400
        assert r.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


def test_catalog_pagination(client: httpx.Client) -> None:
    names = ["zeta", "alpha/one", "alpha/two", "mid"]
    for name in names:
        _push_tags(client, name, ["v"])
    # A repository that only has an upload in progress is not listed.
    client.post("/v2/emptyrepo/blobs/uploads/")
    assert client.get("/v2/_catalog").json() == {"repositories": sorted(names)}
    r = client.get("/v2/_catalog", params={"n": 3})
    assert r.json()["repositories"] == ["alpha/one", "alpha/two", "mid"]
    assert r.headers["Link"] == '</v2/_catalog?n=3&last=mid>; rel="next"'
    r = client.get("/v2/_catalog", params={"n": 3, "last": "mid"})
    assert r.json()["repositories"] == ["zeta"] and "Link" not in r.headers


def _referrer(subject, artifact_type: str, seed: str, annotations: dict[str, str] | None = None):
    extra = {
        "artifactType": artifact_type,
        "subject": {
            "mediaType": OCI_MANIFEST,
            "digest": subject.digest,
            "size": len(subject.manifest),
        },
    }
    if annotations:
        extra["annotations"] = annotations
    return make_image(1, seed=seed, extra=extra)


def test_referrers(client: httpx.Client) -> None:
    subject = make_image(seed="subject")
    sig = _referrer(subject, "application/vnd.example.sig", "sig", {"org.example": "yes"})
    sbom = _referrer(subject, "application/vnd.example.sbom", "sbom")
    # Referrers may be pushed before their subject; the registry answers with OCI-Subject.
    for blob in sig.blobs:
        push_blob(client, "ref", blob)
    r = client.put(
        f"/v2/ref/manifests/{sig.digest}",
        content=sig.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201
    assert r.headers["OCI-Subject"] == subject.digest
    push_image(client, "ref", subject, "v1")
    push_image(client, "ref", sbom)

    r = client.get(f"/v2/ref/referrers/{subject.digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    index = r.json()
    assert index["mediaType"] == OCI_INDEX and index["schemaVersion"] == 2
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert set(by_digest) == {sig.digest, sbom.digest}
    assert by_digest[sig.digest]["artifactType"] == "application/vnd.example.sig"
    assert by_digest[sig.digest]["annotations"] == {"org.example": "yes"}
    assert by_digest[sig.digest]["size"] == len(sig.manifest)
    assert by_digest[sig.digest]["mediaType"] == OCI_MANIFEST

    r = client.get(
        f"/v2/ref/referrers/{subject.digest}",
        params={"artifactType": "application/vnd.example.sbom"},
    )
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in r.json()["manifests"]] == [sbom.digest]

    r = client.get(f"/v2/ref/referrers/{sha256(b'nothing')}")
    assert r.status_code == 200 and r.json()["manifests"] == []
    assert (
        client.get(f"/v2/ref/referrers/{subject.digest}").headers.get("OCI-Filters-Applied") is None
    )
    assert client.get("/v2/ref/referrers/sha256:bad").status_code == 400


def test_referrers_fold_tag_schema(client: httpx.Client) -> None:
    """A pre-existing `sha256-<hex>` tag index is folded into the referrers answer (spec 1.1)."""
    subject = make_image(seed="old-subject")
    push_image(client, "legacy", subject, "v1")
    sig = make_image(1, seed="legacy-sig", extra={"artifactType": "application/vnd.legacy.sig"})
    push_image(client, "legacy", sig)
    fallback = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sig.digest,
                    "size": len(sig.manifest),
                    "artifactType": "application/vnd.legacy.sig",
                }
            ],
        }
    ).encode()
    tag = "sha256-" + subject.digest.split(":")[1]
    assert (
        client.put(
            f"/v2/legacy/manifests/{tag}", content=fallback, headers={"Content-Type": OCI_INDEX}
        ).status_code
        == 201
    )
    r = client.get(f"/v2/legacy/referrers/{subject.digest}")
    assert [m["digest"] for m in r.json()["manifests"]] == [sig.digest]
    r = client.get(f"/v2/legacy/referrers/{subject.digest}", params={"artifactType": "other"})
    assert r.json()["manifests"] == []


def test_delete_manifest_by_digest_and_tag(client: httpx.Client) -> None:
    image = make_image()
    push_image(client, "del", image, "keep")
    client.put(
        "/v2/del/manifests/gone", content=image.manifest, headers={"Content-Type": OCI_MANIFEST}
    )
    assert client.delete("/v2/del/manifests/gone").status_code == 202
    assert client.get("/v2/del/tags/list").json()["tags"] == ["keep"]
    assert client.get("/v2/del/manifests/gone").status_code == 404
    assert client.delete(f"/v2/del/manifests/{image.digest}").status_code == 202
    r = client.get(f"/v2/del/manifests/{image.digest}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert client.get("/v2/del/manifests/keep").status_code == 404  # tags go with the manifest
    assert client.delete(f"/v2/del/manifests/{image.digest}").status_code == 404


def test_delete_blob(client: httpx.Client) -> None:
    digest = push_blob(client, "db", b"some bytes")
    assert client.delete(f"/v2/db/blobs/{digest}").status_code == 202
    r = client.get(f"/v2/db/blobs/{digest}")
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
    assert client.delete(f"/v2/db/blobs/{digest}").status_code == 404


def test_deletes_can_be_disabled(tmp_path) -> None:
    srv = ServerProcess(tmp_path / "data", extra_env={"TRUSTYARD_DELETE_ENABLED": "false"}).start()
    try:
        with httpx.Client(base_url=srv.url) as c:
            image = make_image()
            push_image(c, "nodel", image, "v1")
            for path in (
                f"/v2/nodel/manifests/{image.digest}",
                "/v2/nodel/manifests/v1",
                f"/v2/nodel/blobs/{sha256(image.config)}",
            ):
                r = c.delete(path)
                assert r.status_code == 405
                assert r.json()["errors"][0]["code"] == "UNSUPPORTED"
            assert c.get("/v2/nodel/manifests/v1").status_code == 200
    finally:
        srv.stop()


def test_cancel_upload(client: httpx.Client) -> None:
    location = client.post("/v2/c/blobs/uploads/").headers["Location"]
    client.patch(location, content=b"abc")
    assert client.delete(location).status_code == 204
    r = client.get(location)
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
