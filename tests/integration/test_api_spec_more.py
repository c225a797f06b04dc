"""MUSTs and SHOULDs of the distribution spec (shared/reference/oci-distribution.md) that the
other test_api_* files did not check yet."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.images import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    make_image,
    push_blob,
    push_image,
    sha256,
)
from tests.integration.server import ServerProcess


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    srv = ServerProcess(tmp_path_factory.mktemp("spec") / "data").start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            yield c
    finally:
        srv.stop()


def _subject(digest: str, size: int) -> dict[str, object]:
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": size}


def test_referrer_artifact_type_falls_back_to_config_media_type(client: httpx.Client) -> None:
    """MUST: artifactType from the manifest, else its config.mediaType; an index without one
    has it omitted."""
    subject = make_image(seed="fallback-subject")
    push_image(client, "fallback", subject, "v1")
    about = _subject(subject.digest, len(subject.manifest))
    custom_config = b'{"kind":"sbom"}'
    plain = make_image(1, seed="plain", extra={"subject": about})
    typed = make_image(
        1,
        seed="typed",
        extra={
            "subject": about,
            "config": {
                "mediaType": "application/vnd.example.sbom.config+json",
                "digest": sha256(custom_config),
                "size": len(custom_config),
            },
        },
    )
    push_image(client, "fallback", plain)
    push_blob(client, "fallback", custom_config)
    push_image(client, "fallback", typed)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "subject": about,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": plain.digest, "size": len(plain.manifest)}
            ],
        }
    ).encode()
    r = client.put(
        f"/v2/fallback/manifests/{sha256(index)}",
        content=index,
        headers={"Content-Type": OCI_INDEX},
    )
    assert r.status_code == 201 and r.headers["OCI-Subject"] == subject.digest
    got = client.get(f"/v2/fallback/referrers/{subject.digest}")
    assert got.status_code == 200
    by_digest = {m["digest"]: m for m in got.json()["manifests"]}
    assert by_digest[plain.digest]["artifactType"] == OCI_CONFIG
    assert by_digest[typed.digest]["artifactType"] == "application/vnd.example.sbom.config+json"
    assert "artifactType" not in by_digest[sha256(index)]
    assert by_digest[sha256(index)]["mediaType"] == OCI_INDEX
    filtered = client.get(
        f"/v2/fallback/referrers/{subject.digest}", params={"artifactType": OCI_CONFIG}
    )
    assert [m["digest"] for m in filtered.json()["manifests"]] == [plain.digest]
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"


def test_docker_content_digest_on_every_get_and_head(client: httpx.Client) -> None:
    """Required on manifest and blob GET/HEAD (spec main, after 1.1.1)."""
    image = make_image(seed="dcd")
    push_image(client, "dcd", image, "v1")
    for ref in ("v1", image.digest):
        for method in ("GET", "HEAD"):
            r = client.request(method, f"/v2/dcd/manifests/{ref}")
            assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image.digest
    for blob in image.blobs:
        for method in ("GET", "HEAD"):
            r = client.request(method, f"/v2/dcd/blobs/{sha256(blob)}")
            assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == sha256(blob)
            assert int(r.headers["Content-Length"]) == len(blob)


def test_a_4_mb_manifest_is_accepted(client: httpx.Client) -> None:
    """SHOULD accept manifests of at least 4 MB (the default limit is 4 MiB)."""
    image = make_image(1, seed="four-mb")
    body = json.loads(image.manifest)
    body["annotations"] = {"pad": ""}
    size = len(json.dumps(body).encode())
    body["annotations"]["pad"] = "x" * (4_000_000 - size)
    raw = json.dumps(body).encode()
    assert len(raw) == 4_000_000
    for blob in image.blobs:
        push_blob(client, "fourmb", blob)
    r = client.put("/v2/fourmb/manifests/v1", content=raw, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text[:300]
    got = client.get("/v2/fourmb/manifests/v1")
    assert got.content == raw and got.headers["Docker-Content-Digest"] == sha256(raw)
