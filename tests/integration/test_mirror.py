"""The pull-through mirror against real upstreams: Debian's `docker-registry` (with its access
log, to count upstream requests) and a second trustyard with token auth; skopeo and podman pull
through it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.auth.integration import add_user, bearer, token, token_server
from tests.images import OCI_MANIFEST, Image, sha256
from tests.integration.clienttools import ALL_MANIFESTS, run
from tests.integration.conftest import require
from tests.integration.images import make_image, make_index, push_image
from tests.integration.server import ServerProcess, free_port

pytestmark = [pytest.mark.needs_skopeo]

UPSTREAM_CONFIG = """\
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@dataclass
class Upstream:
    """A `docker-registry` whose access log counts what the mirror asked of it."""

    root: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.root / "access.log"

    def start(self) -> Upstream:
        config = self.root / "registry.yml"
        config.write_text(UPSTREAM_CONFIG.format(root=self.root / "data", port=self.port))
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.proc = subprocess.Popen(
            [require("docker-registry"), "serve", str(config)],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"docker-registry did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def requests(self, method: str, path: str) -> int:
        """Access-log lines for `method path` (the Combined Log Format request line)."""
        pattern = re.compile(rf'"{method} {re.escape(path)} HTTP/')
        return len(pattern.findall(self.log.read_text(errors="replace")))


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    root = tmp_path / "upstream"
    root.mkdir()
    server = Upstream(root, free_port()).start()
    yield server
    server.stop()


def push_blob_two_step(client: httpx.Client, repo: str, data: bytes) -> None:
    """POST then PUT ?digest= (docker-registry does not take a monolithic POST)."""
    r = client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    location = r.headers["Location"]
    sep = "&" if "?" in location else "?"
    r = client.put(
        f"{location}{sep}digest={sha256(data)}",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text


def push_upstream(client: httpx.Client, repo: str, image: Image, ref: str | None = None) -> None:
    for blob in image.blobs:
        push_blob_two_step(client, repo, blob)
    r = client.put(
        f"/v2/{repo}/manifests/{ref or image.digest}",
        content=image.manifest,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert r.status_code == 201, r.text


def mirror_env(mirrors: list[dict[str, object]]) -> dict[str, str]:
    return {"TRUSTYARD_MIRRORS": json.dumps(mirrors)}


@pytest.fixture
def mirror(tmp_path: Path, upstream: Upstream) -> Iterator[ServerProcess]:
    env = mirror_env(
        [
            {
                "prefix": "hub",
                "upstream": upstream.url,
                "upstream_prefix": "library",
                "ttl_seconds": 2,
            }
        ]
    )
    server = ServerProcess(tmp_path / "mirror", extra_env=env).start()
    yield server
    server.stop()


def get(server: ServerProcess, path: str, method: str = "GET") -> httpx.Response:
    return httpx.request(
        method, f"{server.url}{path}", headers={"Accept": ALL_MANIFESTS}, timeout=60
    )


def skopeo_copy(src: str, dest: Path) -> None:
    run(require("skopeo"), "copy", "--src-tls-verify=false", src, f"oci:{dest}:x")


def test_pull_through_by_tag_and_digest_head_first(
    upstream: Upstream, mirror: ServerProcess, tmp_path: Path
) -> None:
    image = make_image(3, seed="mirror-tag", layer_size=200_000)
    with httpx.Client(base_url=upstream.url, timeout=30) as up:
        push_upstream(up, "library/app", image, "v1")

    skopeo_copy(f"docker://{mirror.host}/hub/app:v1", tmp_path / "a")
    r = get(mirror, "/v2/hub/app/manifests/v1")
    assert r.status_code == 200 and r.content == image.manifest
    assert r.headers["X-Trustyard-Cache"] == "hit"  # checked less than the TTL ago
    # Blobs and the manifest are stored: stop the upstream and pull again, by digest too.
    assert upstream.requests("GET", "/v2/library/app/manifests/v1") == 1
    for blob in image.blobs:
        assert upstream.requests("GET", f"/v2/library/app/blobs/{sha256(blob)}") == 1

    time.sleep(2.2)  # past the TTL: HEAD upstream, same digest, no GET
    r = get(mirror, "/v2/hub/app/manifests/v1")
    assert r.headers["X-Trustyard-Cache"] == "hit"
    assert upstream.requests("HEAD", "/v2/library/app/manifests/v1") == 2
    assert upstream.requests("GET", "/v2/library/app/manifests/v1") == 1

    upstream.stop()
    time.sleep(2.2)
    r = get(mirror, "/v2/hub/app/manifests/v1")
    assert r.status_code == 200 and r.headers["X-Trustyard-Cache"] == "stale"
    assert "mirror_stale" in mirror.log()
    skopeo_copy(f"docker://{mirror.host}/hub/app@{image.digest}", tmp_path / "b")
    r = get(mirror, "/v2/hub/other/manifests/v1")
    assert r.status_code == 503, r.text
    assert r.json()["errors"][0]["code"] == "UNAVAILABLE"


def test_tag_moved_upstream_is_seen_after_ttl(upstream: Upstream, mirror: ServerProcess) -> None:
    one, two = make_image(1, seed="moved-1"), make_image(1, seed="moved-2")
    with httpx.Client(base_url=upstream.url, timeout=30) as up:
        push_upstream(up, "library/moving", one, "latest")
        assert get(mirror, "/v2/hub/moving/manifests/latest").headers["X-Trustyard-Cache"] == "miss"
        push_upstream(up, "library/moving", two, "latest")
    r = get(mirror, "/v2/hub/moving/manifests/latest")
    assert r.content == one.manifest and r.headers["X-Trustyard-Cache"] == "hit"
    time.sleep(2.2)
    r = get(mirror, "/v2/hub/moving/manifests/latest")
    assert r.content == two.manifest and r.headers["X-Trustyard-Cache"] == "miss"


def test_multi_arch_index_children_on_demand(
    upstream: Upstream, mirror: ServerProcess, tmp_path: Path
) -> None:
    amd, arm = make_image(1, seed="idx-amd"), make_image(1, seed="idx-arm", arch="arm64")
    index = make_index([(amd, "amd64"), (arm, "arm64")])
    with httpx.Client(base_url=upstream.url, timeout=30) as up:
        push_upstream(up, "library/multi", amd)
        push_upstream(up, "library/multi", arm)
        r = up.put(
            "/v2/library/multi/manifests/v1",
            content=index,
            headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        )
        assert r.status_code == 201, r.text
    run(
        require("skopeo"),
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        "arm64",
        f"docker://{mirror.host}/hub/multi:v1",
        f"oci:{tmp_path / 'arm'}:x",
    )
    assert get(mirror, "/v2/hub/multi/manifests/v1").content == index
    # Only the arm64 child was fetched; the amd64 child is fetched when asked for.
    assert upstream.requests("GET", f"/v2/library/multi/manifests/{arm.digest}") == 1
    assert upstream.requests("GET", f"/v2/library/multi/manifests/{amd.digest}") == 0
    # A client that cannot read indexes gets the linux/amd64 image, fetched for it.
    r = httpx.get(
        f"{mirror.url}/v2/hub/multi/manifests/v1", headers={"Accept": OCI_MANIFEST}, timeout=60
    )
    assert r.status_code == 200, r.text
    assert r.content == amd.manifest
    assert upstream.requests("GET", f"/v2/library/multi/manifests/{amd.digest}") == 1
    r = get(mirror, f"/v2/hub/multi/manifests/{amd.digest}")
    assert r.status_code == 200 and r.headers["X-Trustyard-Cache"] == "hit"


def test_pushes_into_a_mirror_are_refused(upstream: Upstream, mirror: ServerProcess) -> None:
    image = make_image(1, seed="push")
    with httpx.Client(base_url=mirror.url, timeout=30) as client:
        r = client.post("/v2/hub/app/blobs/uploads/")
        assert r.status_code == 403
        error = r.json()["errors"][0]
        assert error["code"] == "DENIED"
        assert error["message"] == (
            f"repository hub/app is a mirror of {upstream.url}; pushes are refused"
        )
        r = client.put(
            "/v2/hub/app/manifests/v1",
            content=image.manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert r.status_code == 403
        assert client.delete(f"/v2/hub/app/manifests/{image.digest}").status_code == 403
        # Outside the prefix, pushes work as always.
        push_image(client, "local/app", image, "v1")


def test_bad_mirror_config_is_a_clear_error(tmp_path: Path) -> None:
    env = mirror_env(
        [
            {"prefix": "hub", "upstream": "http://127.0.0.1:1"},
            {"prefix": "hub/library", "upstream": "http://127.0.0.1:2"},
        ]
    )
    proc = run(
        "python",
        "-m",
        "trustyard",
        "serve",
        "--data-dir",
        tmp_path / "d",
        env={k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")} | env,
        check=False,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "mirror prefixes 'hub' and 'hub/library' overlap" in proc.stderr + proc.stdout
    env = mirror_env(
        [{"prefix": "hub", "upstream": "http://127.0.0.1:1", "username": "u", "password_env": "NO"}]
    )
    proc = trustyard_cli("serve", "--data-dir", tmp_path / "d", env=env)
    assert proc.returncode == 2
    assert "mirror 'hub': password_env names NO, which is not set" in proc.stderr


@pytest.mark.needs_podman
@pytest.mark.slow
def test_podman_pulls_through_a_registries_conf_mirror(
    upstream: Upstream, mirror: ServerProcess, tmp_path: Path
) -> None:
    """podman asks the mirror first ([[registry.mirror]]), for an image named by the upstream."""
    exe = require("podman")
    image = make_image(2, seed="podman-mirror")
    with httpx.Client(base_url=upstream.url, timeout=30) as up:
        push_upstream(up, "library/pm", image, "v1")
    conf = tmp_path / "registries.conf"
    # upstream.example/library/x -> mirror/hub/x: podman rewrites the prefix to the location.
    conf.write_text(
        "unqualified-search-registries = []\n\n[[registry]]\n"
        'prefix = "upstream.example/library"\n'
        f'location = "{upstream.url.removeprefix("http://")}/library"\n'
        f'[[registry.mirror]]\nlocation = "{mirror.host}/hub"\ninsecure = true\n'
    )
    runroot = Path(tempfile.mkdtemp(prefix="ty-pm-"))
    try:
        run(
            exe,
            "--root",
            tmp_path / "root",
            "--runroot",
            runroot,
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "pull",
            "upstream.example/library/pm:v1",
            env={"CONTAINERS_REGISTRIES_CONF": str(conf), "TMPDIR": str(tmp_path)},
        )
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
    r = get(mirror, "/v2/hub/pm/manifests/v1")
    assert r.status_code == 200 and r.headers["X-Trustyard-Cache"] == "hit"


def stream_get(server: ServerProcess, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=60)


def test_blob_streamed_once_for_concurrent_clients_and_kept_after_hang_up(
    upstream: Upstream, mirror: ServerProcess
) -> None:
    big, other = os.urandom(24 * 1024 * 1024), os.urandom(8 * 1024 * 1024)
    with httpx.Client(base_url=upstream.url, timeout=60) as up:
        push_blob_two_step(up, "library/big", big)
        push_blob_two_step(up, "library/big", other)
    path = f"/v2/hub/big/blobs/{sha256(big)}"
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: stream_get(mirror, path), range(4)))
    assert all(r.status_code == 200 and r.content == big for r in answers)
    assert {r.headers["X-Trustyard-Cache"] for r in answers} <= {"miss"}
    assert upstream.requests("GET", f"/v2/library/big/blobs/{sha256(big)}") == 1
    assert stream_get(mirror, path).headers["X-Trustyard-Cache"] == "hit"

    # A client that hangs up after the first bytes does not stop the fill.
    path = f"/v2/hub/big/blobs/{sha256(other)}"
    with httpx.stream("GET", f"{mirror.url}{path}", timeout=60) as r:
        assert r.status_code == 200 and r.headers["X-Trustyard-Cache"] == "miss"
        next(r.iter_raw(65536))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = httpx.head(f"{mirror.url}{path}", timeout=30)
        if r.headers.get("X-Trustyard-Cache") == "hit":
            break
        time.sleep(0.2)
    r = stream_get(mirror, path)
    assert r.headers["X-Trustyard-Cache"] == "hit" and r.content == other
    assert upstream.requests("GET", f"/v2/library/big/blobs/{sha256(other)}") == 1


def wait_cached(server: ServerProcess, path: str, seconds: float = 10) -> None:
    """Poll until the blob is cached: well within `STALL_SECONDS` (30), so a fill stalled on
    the hung-up client's full queue fails this."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = httpx.head(f"{server.url}{path}", timeout=deadline - time.monotonic() + 0.1)
        if r.headers.get("X-Trustyard-Cache") == "hit":
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} was not cached within {seconds} s:\n{server.log()[-3000:]}")


def test_cold_pull_streams_each_blob_once_and_caches_it(
    upstream: Upstream, mirror: ServerProcess, tmp_path: Path
) -> None:
    """The manifest miss answers without fetching blobs; the client's blob GETs stream from
    the upstream (once each) while they are stored, also for a client that hangs up."""
    image = make_image(3, seed="cold-stream", layer_size=3_000_000)
    with httpx.Client(base_url=upstream.url, timeout=30) as up:
        push_upstream(up, "library/cold", image, "v1")
    blob_paths = [f"/v2/library/cold/blobs/{sha256(b)}" for b in image.blobs]

    r = get(mirror, "/v2/hub/cold/manifests/v1")
    assert r.status_code == 200 and r.headers["X-Trustyard-Cache"] == "miss"
    assert r.content == image.manifest
    # Not waited for: no blob was asked of the upstream yet.
    assert [upstream.requests("GET", p) for p in blob_paths] == [0] * len(blob_paths)

    # A client that hangs up after the first bytes of a layer: the fill goes on.
    layer = image.blobs[-1]
    with httpx.stream("GET", f"{mirror.url}/v2/hub/cold/blobs/{sha256(layer)}", timeout=60) as r:
        assert r.status_code == 200 and r.headers["X-Trustyard-Cache"] == "miss"
        next(r.iter_raw(65536))
    wait_cached(mirror, f"/v2/hub/cold/blobs/{sha256(layer)}")

    skopeo_copy(f"docker://{mirror.host}/hub/cold:v1", tmp_path / "a")
    assert [upstream.requests("GET", p) for p in blob_paths] == [1] * len(blob_paths)
    # Everything is cached once the client's pull returned: served with the upstream gone.
    upstream.stop()
    for blob in image.blobs:
        r = stream_get(mirror, f"/v2/hub/cold/blobs/{sha256(blob)}")
        assert r.status_code == 200 and r.headers["X-Trustyard-Cache"] == "hit"
        assert r.content == blob
    skopeo_copy(f"docker://{mirror.host}/hub/cold@{image.digest}", tmp_path / "b")


def test_upstream_killed_mid_pull_stores_nothing_partial(
    upstream: Upstream, mirror: ServerProcess
) -> None:
    big = os.urandom(64 * 1024 * 1024)
    with httpx.Client(base_url=upstream.url, timeout=60) as up:
        push_blob_two_step(up, "library/killed", big)
    path = f"/v2/hub/killed/blobs/{sha256(big)}"
    received = 0
    with httpx.stream("GET", f"{mirror.url}{path}", timeout=60) as r:
        assert r.status_code == 200
        chunks = r.iter_raw(65536)
        received += len(next(chunks))
        upstream.stop()  # the fill runs at this client's pace: most bytes are still upstream
        with pytest.raises(httpx.HTTPError):
            for chunk in chunks:
                received += len(chunk)
    assert received < len(big)
    r = stream_get(mirror, path)
    assert r.status_code == 503, r.text
    assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
    upstream.start()
    r = stream_get(mirror, path)
    assert r.status_code == 200 and r.content == big


def test_token_auth_upstream_with_credentials(tmp_path: Path) -> None:
    data = tmp_path / "secure"
    add_user(data, "alice", "alice-pw", admin=True)
    secure = token_server(data).start()
    mirror = None
    try:
        image = make_image(2, seed="token-upstream")
        tok = token(secure, "repository:team/app:pull,push", auth=("alice", "alice-pw"))
        with httpx.Client(base_url=secure.url, timeout=30, headers=bearer(tok)) as up:
            push_image(up, "team/app", image, "v1")
        env = mirror_env(
            [
                {
                    "prefix": "sec",
                    "upstream": secure.url,
                    "upstream_prefix": "team",
                    "username": "alice",
                    "password_env": "UPSTREAM_PW",
                },
                {
                    "prefix": "wrong",
                    "upstream": secure.url,
                    "upstream_prefix": "team",
                    "username": "alice",
                    "password": "not-her-password",
                },
            ]
        )
        mirror = ServerProcess(tmp_path / "mirror", extra_env={**env, "UPSTREAM_PW": "alice-pw"})
        mirror.start()
        skopeo_copy(f"docker://{mirror.host}/sec/app:v1", tmp_path / "out")
        r = get(mirror, "/v2/sec/app/manifests/v1")
        assert r.content == image.manifest and r.headers["X-Trustyard-Cache"] == "hit"
        r = get(mirror, "/v2/wrong/app/manifests/v1")
        assert r.status_code == 403, r.text
        assert "refused the credentials" in r.json()["errors"][0]["message"]
        assert "not-her-password" not in mirror.log()
    finally:
        if mirror is not None:
            mirror.stop()
        secure.stop()


def trustyard_cli(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")}
    return run(sys.executable, "-m", "trustyard", *args, env=clean | env, check=False, timeout=120)


def test_cli_prefetch_then_status_then_offline_pull(upstream: Upstream, tmp_path: Path) -> None:
    amd, arm = make_image(2, seed="pre-amd"), make_image(2, seed="pre-arm", arch="arm64")
    index = make_index([(amd, "amd64"), (arm, "arm64")])
    with httpx.Client(base_url=upstream.url, timeout=30) as up:
        push_upstream(up, "library/pre", amd)
        push_upstream(up, "library/pre", arm)
        r = up.put(
            "/v2/library/pre/manifests/v1",
            content=index,
            headers={"Content-Type": "application/vnd.oci.image.index.v1+json"},
        )
        assert r.status_code == 201, r.text
    env = mirror_env([{"prefix": "hub", "upstream": upstream.url, "upstream_prefix": "library"}])
    data = tmp_path / "data"
    done = trustyard_cli("mirror", "prefetch", "--data-dir", data, "hub/pre:v1", env=env)
    assert done.returncode == 0, done.stderr
    assert "hub/pre:v1: cached 3 manifest(s)" in done.stdout
    bad = trustyard_cli("mirror", "prefetch", "--data-dir", data, "local/x:v1", env=env)
    assert bad.returncode == 1 and "under no configured mirror prefix" in bad.stderr

    shown = trustyard_cli("mirror", "status", "--json", "--data-dir", data, env=env)
    assert shown.returncode == 0, shown.stderr
    (status,) = json.loads(shown.stdout)["mirrors"]
    assert status["prefix"] == "hub" and status["repositories"] == 1
    assert status["manifests"] == 3
    blobs = sum(len(b) for image in (amd, arm) for b in image.blobs)
    assert status["bytes"] >= blobs
    assert status["upstreams"][0]["up"] is True and status["upstreams"][0]["latency_ms"] >= 0

    # GC treats cached content like pushed content: the tagged index keeps its children.
    collected = trustyard_cli("gc", "--grace-seconds", "0", "--data-dir", data, env=env)
    assert collected.returncode == 0, collected.stderr
    assert "0 manifests, 0 blobs" in collected.stdout

    upstream.stop()
    shown = trustyard_cli("mirror", "status", "--data-dir", data, env=env)
    assert f"DOWN {upstream.url}" in shown.stdout
    server = ServerProcess(data, extra_env=env).start()
    try:
        for image in (amd, arm):
            r = get(server, f"/v2/hub/pre/manifests/{image.digest}")
            assert r.status_code == 200 and r.headers["X-Trustyard-Cache"] == "hit"
            for blob in image.blobs:
                r = stream_get(server, f"/v2/hub/pre/blobs/{sha256(blob)}")
                assert r.content == blob and r.headers["X-Trustyard-Cache"] == "hit"
    finally:
        server.stop()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "up.crt", tmp_path / "up.key"
    run(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
        "-addext", "subjectAltName=IP:127.0.0.1",
    )  # fmt: skip
    return cert, key


def test_tls_upstream_ca_file_verify_off_and_fallbacks(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    secure = ServerProcess(tmp_path / "tls-up", tls=(cert, key)).start()
    mirror = None
    try:
        image = make_image(1, seed="tls-upstream")
        with httpx.Client(base_url=secure.url, timeout=30, verify=secure.verify) as up:
            push_image(up, "app", image, "v1")
        dead = f"http://127.0.0.1:{free_port()}"
        # A fallback shares its mirror's TLS settings: this one trusts the upstream's CA.
        env = mirror_env(
            [
                {"prefix": "pinned", "upstream": secure.url, "ca_file": str(cert)},
                {"prefix": "unverified", "upstream": secure.url, "tls_verify": False},
                {"prefix": "system", "upstream": secure.url},
                {
                    "prefix": "fallback",
                    "upstream": dead,
                    "fallbacks": [secure.url],
                    "ca_file": str(cert),
                },
            ]
        )
        mirror = ServerProcess(tmp_path / "mirror", extra_env=env).start()
        for prefix in ("pinned", "unverified", "fallback"):
            r = get(mirror, f"/v2/{prefix}/app/manifests/v1")
            assert r.status_code == 200, (prefix, r.text)
            assert r.content == image.manifest and r.headers["X-Trustyard-Cache"] == "miss"
        r = get(mirror, "/v2/system/app/manifests/v1")
        assert r.status_code == 503, r.text
        assert "CERTIFICATE_VERIFY_FAILED" in r.json()["errors"][0]["message"]
    finally:
        if mirror is not None:
            mirror.stop()
        secure.stop()
