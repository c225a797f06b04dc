"""Notary trust data in the mirror's verified admission (issue 22), with real parts only.

A second trustyard is the upstream, serving Notary on its registry port; its trust data is
published with the real `notary` client (`init`, `addhash`, `publish`). The mirror enforces a
`notary` rule pinned to that root key on `hub/*`: a signed tag is admitted (skopeo and podman
through the mirror), an unsigned one and one whose upstream tag no longer matches its signed
target are refused and leave nothing, a signed repository under a root the rule does not pin
is refused (no TOFU), and with the upstream stopped the cached image still verifies from the
kept trust data.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.auth.integration import add_user, bearer, token, token_server
from tests.integration.clienttools import ALL_MANIFESTS, run
from tests.integration.conftest import require
from tests.integration.images import Image, make_image, push_image
from tests.integration.server import ServerProcess
from tests.integration.test_auth_notary import notary as auth_notary
from tests.integration.test_policy_pull import podman_pull, skopeo
from tests.integration.trusttools import notary
from trustyard.trust import model as m
from trustyard.trust.client.pinning import canonical_key_id

pytestmark = [pytest.mark.needs_notary, pytest.mark.needs_skopeo, pytest.mark.slow]
TTL = 2


@dataclass
class Setup:
    upstream: ServerProcess
    mirror: ServerProcess
    root: Path
    images: dict[str, Image]


def push_up(up: ServerProcess, repo: str, seed: str) -> Image:
    image = make_image(1, seed=seed)
    with httpx.Client(base_url=up.url, timeout=30) as c:
        push_image(c, repo, image, "v1")
    return image


def sign_up(up: ServerProcess, trust_dir: Path, repo: str, image: Image) -> str:
    """`notary init` + `addhash` + publish of tag v1 as `image`; the GUN's root key ID."""
    gun = f"{up.host}/{repo}"
    notary(up, trust_dir, "init", gun, "-p")
    hexd = image.digest.split(":", 1)[1]
    notary(up, trust_dir, "addhash", gun, "v1", str(len(image.manifest)), "--sha256", hexd, "-p")
    raw = httpx.get(f"{up.url}/v2/{gun}/_trust/tuf/root.json", timeout=30).content
    root = m.parse_root(raw)
    (key_id,) = root.roles[m.ROOT].keyids
    return canonical_key_id(root.keys[key_id])


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("mirrornotary")
    upstream = ServerProcess(root / "up").start()
    mirror = None
    try:
        images = {
            name: push_up(upstream, f"library/{name}", f"mn-{name}")
            for name in ("app", "unsigned", "moved", "foreign")
        }
        owner, stranger = root / "owner", root / "stranger"
        pinned = sign_up(upstream, owner, "library/app", images["app"])
        assert sign_up(upstream, owner, "library/moved", images["moved"]) == pinned
        # Another publisher's root: validly signed, but not the root the rule pins.
        assert sign_up(upstream, stranger, "library/foreign", images["foreign"]) != pinned
        images["moved-to"] = push_up(upstream, "library/moved", "mn-moved-later")
        rules = [
            {
                "name": "hub-notary",
                "repositories": ["hub/*"],
                "require": {"kind": "notary", "root_keys": [pinned]},
            }
        ]
        mirrors = [
            {
                "prefix": "hub",
                "upstream": upstream.url,
                "upstream_prefix": "library",
                "ttl_seconds": TTL,
            }
        ]
        env = {
            "TRUSTYARD_POLICY__RULES": json.dumps(rules),
            "TRUSTYARD_MIRRORS": json.dumps(mirrors),
        }
        mirror = ServerProcess(root / "mirror", extra_env=env).start()
        yield Setup(upstream, mirror, root, images)
    finally:
        if mirror is not None:
            mirror.stop()
        upstream.stop()


def stored_anywhere(s: Setup, image: Image) -> list[Path]:
    hexes = {d.split(":", 1)[1] for d in (image.digest, *(_sha(b) for b in image.blobs))}
    return [p for p in s.mirror.data_dir.rglob("*") if p.name in hexes]


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def kept(s: Setup, repo: str) -> Path:
    return s.mirror.data_dir / "mirror-trust" / "tuf" / s.upstream.host / repo / "metadata"


def get(s: Setup, path: str) -> httpx.Response:
    return httpx.get(f"{s.mirror.url}{path}", headers={"Accept": ALL_MANIFESTS}, timeout=60)


def test_notary_admission_refuses_admits_and_verifies_offline(setup: Setup, tmp_path: Path) -> None:
    s = setup
    # Unsigned upstream tag: refused with the policy's message, nothing stored or kept.
    out = skopeo(s.mirror, "hub/unsigned:v1", ok=False)
    assert "'hub-notary' (requires notary)" in out
    assert f"notary trust data of {s.upstream.host}/library/unsigned" in out
    # Signed, but the upstream tag moved to another manifest since.
    out = skopeo(s.mirror, "hub/moved:v1", ok=False)
    assert f"is signed in {s.upstream.host}/library/moved" in out and "moved after signing" in out
    # Signed under a root the rule does not pin: refused, never trusted on first use.
    out = skopeo(s.mirror, "hub/foreign:v1", ok=False)
    assert "'hub-notary'" in out and "is not among the keys pinned for" in out
    for name in ("unsigned", "moved-to", "foreign"):
        assert stored_anywhere(s, s.images[name]) == []
    for repo in ("unsigned", "moved", "foreign"):
        assert not kept(s, f"library/{repo}").exists()
    r = httpx.get(f"{s.mirror.url}/v2/_catalog", timeout=30)
    assert r.json()["repositories"] == []

    # Signed under the pinned root: admitted, the verified trust data kept with the image.
    app = s.images["app"]
    run(require("skopeo"), "copy", "--src-tls-verify=false",
        f"docker://{s.mirror.host}/hub/app:v1", f"oci:{tmp_path / 'app'}:x")  # fmt: skip
    assert stored_anywhere(s, app) != []
    files = sorted(p.name for p in kept(s, "library/app").iterdir())
    assert files == ["root.json", "snapshot.json", "targets.json", "timestamp.json"]
    podman_pull(s.mirror, "hub/app:v1", ok=True)
    assert '"mirror_admitted"' in s.mirror.log()

    # The upstream (and its trust server) goes away: past the TTL the cached image is served
    # stale, and the registry's notary rule verifies it from the kept trust data.
    assert s.mirror.log_path is not None
    before = len(s.mirror.log_path.read_text(errors="replace"))
    s.upstream.stop()
    time.sleep(TTL + 0.3)
    r = get(s, "/v2/hub/app/manifests/v1")
    assert r.status_code == 200, r.text
    assert r.headers["X-Trustyard-Cache"] == "stale"
    assert r.content == app.manifest
    skopeo(s.mirror, f"hub/app@{app.digest}", ok=True)
    podman_pull(s.mirror, "hub/app:v1", ok=True)
    offline = s.mirror.log_path.read_text(errors="replace")[before:]
    decisions = [
        json.loads(line)
        for line in offline.splitlines()
        if line.startswith("{") and '"policy_decision"' in line
    ]
    assert decisions and all(d["allowed"] for d in decisions), decisions
    assert {d["repository"] for d in decisions} == {"hub/app"}
    assert "mirror_trust_offline" in offline
    # Still refused offline: nothing cached, nothing kept.
    r = get(s, "/v2/hub/unsigned/manifests/v1")
    assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
    assert stored_anywhere(s, s.images["unsigned"]) == []


def test_token_auth_upstream_trust_data_is_read_with_the_mirrors_credentials(
    tmp_path: Path,
) -> None:
    """An upstream trustyard with token auth and no anonymous access: the `notary` client
    publishes with alice's credentials, and the mirror reads the trust data through its own
    token flow (scope `repository:<gun>:pull`). TOFU here: the rule pins nothing."""
    data = tmp_path / "secure"
    add_user(data, "alice", "alice-pw", admin=True)
    secure = token_server(data).start()
    mirror = None
    try:
        image = make_image(1, seed="mn-token")
        tok = token(secure, "repository:team/app:pull,push", auth=("alice", "alice-pw"))
        with httpx.Client(base_url=secure.url, timeout=30, headers=bearer(tok)) as up:
            push_image(up, "team/app", image, "v1")
        gun = f"{secure.host}/team/app"
        owner = tmp_path / "owner"
        hexd = image.digest.split(":", 1)[1]
        auth_notary(secure.url, owner, "init", gun, "-p", user=("alice", "alice-pw"))
        auth_notary(secure.url, owner, "addhash", gun, "v1", str(len(image.manifest)),
                    "--sha256", hexd, "-p", user=("alice", "alice-pw"))  # fmt: skip
        r = httpx.get(f"{secure.url}/v2/{gun}/_trust/tuf/root.json", timeout=30)
        assert r.status_code == 401  # nothing for anonymous readers
        rules = [{"name": "team", "repositories": ["up/*"], "require": {"kind": "notary"}}]
        mirrors = [{"prefix": "up", "upstream": secure.url, "username": "alice",
                    "password_env": "UPSTREAM_PW"}]  # fmt: skip
        env = {
            "TRUSTYARD_POLICY__RULES": json.dumps(rules),
            "TRUSTYARD_MIRRORS": json.dumps(mirrors),
            "UPSTREAM_PW": "alice-pw",
        }
        mirror = ServerProcess(tmp_path / "mirror", extra_env=env).start()
        r = httpx.get(
            f"{mirror.url}/v2/up/team/app/manifests/v1",
            headers={"Accept": ALL_MANIFESTS},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        assert r.content == image.manifest
        assert (mirror.data_dir / "mirror-trust" / "tuf" / gun / "metadata").is_dir()
    finally:
        if mirror is not None:
            mirror.stop()
        secure.stop()
