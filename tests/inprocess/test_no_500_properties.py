"""Random hostile input never reaches an unhandled error: every answer is the spec's error shape.

The client raises the app's exceptions into the test (httpx's ASGI transport default), so an
input that would be a 500 with a traceback in the log fails here with that traceback.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from tests.inprocess.helpers import (
    OCI_INDEX,
    OCI_MANIFEST,
    make_image,
    push_blob,
    push_image,
    sha256,
)

# Few examples per run (seconds, not minutes); hypothesis's database keeps failures it found.
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SPEC_CODES = {
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNSUPPORTED",
    "PAGINATION_NUMBER_INVALID",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = [
    "schemaVersion",
    "mediaType",
    "config",
    "layers",
    "manifests",
    "subject",
    "artifactType",
    "annotations",
]
digests = st.sampled_from([sha256(b"{}"), sha256(b"x"), "sha256:short", "md5:00", ""])
random_descriptors = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": st.sampled_from([OCI_MANIFEST, "application/octet-stream", ""])
        | st.text(max_size=10),
        "digest": digests | st.text(max_size=10),
        "size": st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.booleans(),
        "artifactType": st.text(max_size=10) | st.integers(),
        "annotations": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "platform": json_values,
    },
)
# Descriptors of the blobs each example pushes, with random extras: manifests that get stored.
valid_descriptors = st.fixed_dictionaries(
    {
        "mediaType": st.text(min_size=1, max_size=20),
        "digest": st.sampled_from([sha256(b"{}"), sha256(b"x")]),
        "size": st.integers(0, 2**63 - 1),
    },
    optional={
        "artifactType": st.text(max_size=20),
        "annotations": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
        "platform": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "urls": json_values,
    },
)
descriptors = valid_descriptors | random_descriptors


@st.composite
def manifests(draw: st.DrawFn) -> tuple[bytes, str]:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": draw(st.sampled_from([OCI_MANIFEST, OCI_INDEX])),
        "config": draw(descriptors),
        "layers": draw(st.lists(descriptors, max_size=3)),
        "manifests": draw(st.lists(descriptors, max_size=3)),
    }
    if draw(st.booleans()):
        body["subject"] = draw(descriptors)
    for key in draw(st.lists(st.sampled_from(KEYS), max_size=2)):
        body[key] = draw(json_values)
    content_type = draw(
        st.sampled_from([OCI_MANIFEST, OCI_INDEX, "application/json", "", "text/plain;x=1"])
    )
    return json.dumps(body).encode(), content_type


def _assert_spec_answer(r: httpx.Response, allowed: set[int]) -> None:
    assert r.status_code in allowed, (r.status_code, r.text[:300])
    if r.status_code >= 400 and r.request.method != "HEAD":
        entry = r.json()["errors"][0]
        assert entry["code"] in SPEC_CODES and entry["message"], entry


@SETTINGS
@given(case=manifests(), reference=st.sampled_from(["v1", "by-digest"]))
async def test_random_manifests(
    client: httpx.AsyncClient, case: tuple[bytes, str], reference: str
) -> None:
    body, content_type = case
    for blob in (b"{}", b"x"):  # the strategy's valid digests name blobs that exist
        await push_blob(client, "fuzz", blob)
    if reference == "by-digest":
        reference = sha256(body)
    r = await client.put(
        f"/v2/fuzz/manifests/{reference}", content=body, headers={"Content-Type": content_type}
    )
    _assert_spec_answer(r, {201, 400})
    event(f"PUT {r.status_code}")
    if r.status_code == 201:
        for method in ("GET", "HEAD"):
            g = await client.request(method, f"/v2/fuzz/manifests/{reference}")
            assert g.status_code == 200
        subject = r.headers.get("OCI-Subject")
        if subject:
            g = await client.get(f"/v2/fuzz/referrers/{subject}")
            assert g.status_code == 200 and g.json()["mediaType"] == OCI_INDEX


latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=30)


@SETTINGS
@given(rng=latin1, accept=latin1, match=latin1, n=latin1, last=latin1, artifact=latin1)
async def test_random_headers_and_queries_on_reads(
    client: httpx.AsyncClient, rng: str, accept: str, match: str, n: str, last: str, artifact: str
) -> None:
    image = make_image("reads")
    await push_image(client, "reads", image, "v1")
    enc = "latin-1"
    r = await client.get(
        f"/v2/reads/blobs/{sha256(image.config)}",
        headers={b"Range": rng.encode(enc), b"If-None-Match": match.encode(enc)},
    )
    _assert_spec_answer(r, {200, 206, 304, 416})
    r = await client.get(
        "/v2/reads/manifests/v1",
        headers={b"Accept": accept.encode(enc), b"If-None-Match": match.encode(enc)},
    )
    _assert_spec_answer(r, {200, 304, 404})
    for path in ("/v2/reads/tags/list", "/v2/_catalog"):
        r = await client.get(path, params={"n": n, "last": last})
        _assert_spec_answer(r, {200, 400})
    r = await client.get(f"/v2/reads/referrers/{image.digest}", params={"artifactType": artifact})
    _assert_spec_answer(r, {200})


@SETTINGS
@given(
    content_range=latin1,
    length=st.none() | latin1,
    body=st.binary(max_size=64),
    digest=st.sampled_from([sha256(b"x"), "sha256:short", ""]) | latin1,
    mount=st.none() | st.sampled_from([sha256(b"x")]) | latin1,
    source=st.none() | latin1,
)
async def test_random_upload_input(
    client: httpx.AsyncClient,
    content_range: str,
    length: str | None,
    body: bytes,
    digest: str,
    mount: str | None,
    source: str | None,
) -> None:
    enc = "latin-1"
    params = {k: v for k, v in {"mount": mount, "from": source}.items() if v is not None}
    r = await client.post("/v2/up/blobs/uploads/", params=params)
    _assert_spec_answer(r, {201, 202})
    if r.status_code != 202:
        return
    location = r.headers["Location"]
    headers = {b"Content-Range": content_range.encode(enc)}
    if length is not None:
        headers[b"Content-Length"] = length.encode(enc)
    r = await client.patch(location, content=body, headers=headers)
    _assert_spec_answer(r, {202, 400, 416})
    r = await client.put(location, params={"digest": digest}, content=body, headers=headers)
    _assert_spec_answer(r, {201, 400, 404, 416})
    r = await client.post("/v2/up/blobs/uploads/", params={"digest": digest}, content=body)
    _assert_spec_answer(r, {201, 202, 400})  # an empty digest starts a plain upload (202)
