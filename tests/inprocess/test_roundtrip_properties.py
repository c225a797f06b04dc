"""Properties over random blobs: any size, any chunking, any byte range comes back intact."""

from __future__ import annotations

import hashlib
import itertools

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.inprocess.helpers import code, push_blob, sha256

# One app serves every example of a test (each example is its own blob or upload session).
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[int], bool]:
    """A blob, the sizes of the PATCHes it is sent in, and whether the PUT carries the rest."""
    size = draw(st.integers(0, 300_000))
    data = draw(st.binary(min_size=min(size, 64), max_size=64)) * (size // 64 + 1)
    data = data[:size] if data else bytes(size)
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=6)))
    last_in_put = draw(st.booleans())
    return data, cuts, last_in_put


@SETTINGS
@given(case=chunked(), with_range=st.booleans())
async def test_any_chunking_round_trips(
    client: httpx.AsyncClient, case: tuple[bytes, list[int], bool], with_range: bool
) -> None:
    data, cuts, last_in_put = case
    location = (await client.post("/v2/prop/blobs/uploads/")).headers["Location"]
    bounds = [0, *cuts, len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    tail = pieces.pop() if last_in_put else b""
    sent = 0
    for piece in pieces:
        headers = (
            {"Content-Range": f"{sent}-{sent + len(piece) - 1}"} if with_range and piece else {}
        )
        r = await client.patch(location, content=piece, headers=headers)
        assert r.status_code == 202, r.text
        sent += len(piece)
        assert r.headers["Range"] == f"0-{max(sent - 1, 0)}"
    r = await client.put(location, params={"digest": sha256(data)}, content=tail)
    assert r.status_code == 201, r.text
    got = await client.get(f"/v2/prop/blobs/{sha256(data)}")
    assert got.status_code == 200
    assert hashlib.sha256(got.content).hexdigest() == sha256(data).split(":")[1]
    assert got.headers["Content-Length"] == str(len(data))


@SETTINGS
@given(data=st.binary(min_size=1, max_size=2048), a=st.integers(0, 3000), b=st.integers(0, 3000))
async def test_any_range_is_the_slice_or_416(
    client: httpx.AsyncClient, data: bytes, a: int, b: int
) -> None:
    digest = await push_blob(client, "ranges", data)
    r = await client.get(f"/v2/ranges/blobs/{digest}", headers={"Range": f"bytes={a}-{b}"})
    if a <= b and a < len(data):
        end = min(b, len(data) - 1)
        assert r.status_code == 206
        assert r.content == data[a : end + 1]
        assert r.headers["Content-Range"] == f"bytes {a}-{end}/{len(data)}"
    else:
        assert r.status_code == 416 and code(r) == "BLOB_UPLOAD_INVALID"
    r = await client.get(f"/v2/ranges/blobs/{digest}", headers={"Range": f"bytes=-{b}"})
    if b > 0:
        assert r.status_code == 206 and r.content == data[-b:]
    else:
        assert r.status_code == 416


@SETTINGS
@given(data=st.binary(max_size=4096), flip=st.integers(0, 63))
async def test_wrong_digest_never_stores(client: httpx.AsyncClient, data: bytes, flip: int) -> None:
    right = sha256(data)
    wrong = right[: 7 + flip] + ("0" if right[7 + flip] != "0" else "1") + right[8 + flip :]
    r = await client.post("/v2/wrong/blobs/uploads/", params={"digest": wrong}, content=data)
    assert r.status_code == 400 and code(r) == "DIGEST_INVALID"
    assert (await client.head(f"/v2/wrong/blobs/{wrong}")).status_code == 404
