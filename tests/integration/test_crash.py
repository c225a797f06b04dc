"""kill -9 in the middle of pushes: after a restart the registry is consistent."""

from __future__ import annotations

import os
import threading
import time

import httpx

from tests.integration.images import make_image, push_image, sha256
from tests.integration.server import ServerProcess


def _verify_everything(url: str) -> int:
    """Every tagged manifest resolves and every blob it names is there with the right digest."""
    checked = 0
    with httpx.Client(base_url=url, timeout=60) as c:
        for repo in c.get("/v2/_catalog").json()["repositories"]:
            tags = c.get(f"/v2/{repo}/tags/list").json()["tags"]
            for tag in tags:
                m = c.get(f"/v2/{repo}/manifests/{tag}")
                assert m.status_code == 200, (repo, tag, m.text)
                assert sha256(m.content) == m.headers["Docker-Content-Digest"]
                body = m.json()
                for desc in [body["config"], *body["layers"]]:
                    blob = c.get(f"/v2/{repo}/blobs/{desc['digest']}")
                    assert blob.status_code == 200, (repo, desc)
                    assert sha256(blob.content) == desc["digest"]
                    checked += 1
    return checked


def test_kill_9_mid_push_then_restart(tmp_path) -> None:
    server = ServerProcess(tmp_path / "data", extra_args=["--workers", "2"]).start()
    try:
        committed = make_image(3, seed="committed", layer_size=50_000)
        with httpx.Client(base_url=server.url) as c:
            push_image(c, "stable", committed, "v1")
            # A chunked upload left half done, and one that is mid-request at the kill.
            half = os.urandom(300_000)
            half_location = c.post("/v2/half/blobs/uploads/").headers["Location"]
            assert (
                c.patch(
                    half_location, content=half[:150_000], headers={"Content-Range": "0-149999"}
                ).status_code
                == 202
            )

        stop = threading.Event()

        def pusher(n: int) -> None:
            i = 0
            while not stop.is_set():
                try:
                    with httpx.Client(base_url=server.url, timeout=5) as c:
                        push_image(
                            c,
                            f"churn{n}",
                            make_image(2, seed=f"{n}-{i}", layer_size=200_000),
                            f"t{i}",
                        )
                except (httpx.HTTPError, AssertionError):
                    return
                i += 1

        big = os.urandom(8 << 20)

        def slow_upload() -> None:
            def body():
                for i in range(0, len(big), 65536):
                    time.sleep(0.03)
                    yield big[i : i + 65536]

            try:
                httpx.post(
                    f"{server.url}/v2/slow/blobs/uploads/",
                    params={"digest": sha256(big)},
                    content=body(),
                    timeout=30,
                )
            except httpx.HTTPError:
                pass

        threads = [threading.Thread(target=pusher, args=(n,)) for n in range(3)] + [
            threading.Thread(target=slow_upload)
        ]
        for t in threads:
            t.start()
        time.sleep(1.5)
        server.kill()
        stop.set()
        for t in threads:
            t.join()

        server.start()
        assert _verify_everything(server.url) >= 4
        with httpx.Client(base_url=server.url) as c:
            # The interrupted monolithic blob is not visible.
            assert c.head(f"/v2/slow/blobs/{sha256(big)}").status_code == 404
            # The half-done upload can be resumed after the restart.
            assert c.get(half_location).headers["Range"] == "0-149999"
            r = c.patch(
                half_location, content=half[150_000:], headers={"Content-Range": "150000-299999"}
            )
            assert r.status_code == 202
            assert c.put(half_location, params={"digest": sha256(half)}).status_code == 201
            # Pushing again works, and the committed image still verifies.
            push_image(c, "after", make_image(seed="after"), "v1")
            assert c.get("/v2/stable/manifests/v1").content == committed.manifest
        assert (tmp_path / "data" / "metadata.db").exists()
    finally:
        server.stop()
