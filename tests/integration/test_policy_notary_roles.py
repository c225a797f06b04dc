"""A notary rule's `roles` also decide which signed indexes admit their children (item 8).

The attack: with `roles = ["targets/releases"]`, an index signed only in `targets/dev` was refused
but its unsigned child manifest was served by digest ("child of signed index"). Now the parent
index must be signed under the same rules as a direct hit: in a role that counts, with the
size the registry holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.images import OCI_INDEX, OCI_MANIFEST, make_image, make_index, push_image
from tests.integration.server import ServerProcess
from tests.integration.test_policy_pull import skopeo
from tests.integration.trusttools import trust

pytestmark = [pytest.mark.needs_skopeo, pytest.mark.slow]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("roles") / "data")
    rules = [
        {
            "name": "releases-only",
            "repositories": ["nr/*"],
            "require": {
                "kind": "notary",
                "gun_prefix": f"{s.host}/",
                "roles": ["targets/releases"],
            },
        }
    ]
    s.extra_env = {"TRUSTYARD_POLICY__RULES": json.dumps(rules)}
    s.start()
    yield s
    s.stop()


def status(srv: ServerProcess, repo: str, ref: str) -> int:
    r = httpx.get(
        f"{srv.url}/v2/{repo}/manifests/{ref}",
        headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"},
        timeout=30,
    )
    if r.status_code == 403:
        assert r.json()["errors"][0]["code"] == "DENIED"
        assert "releases-only" in r.json()["errors"][0]["message"]
    return r.status_code


def test_children_of_an_index_signed_in_another_role_are_refused(
    srv: ServerProcess, tmp_path: Path
) -> None:
    repo = "nr/multi"
    gun = f"{srv.host}/{repo}"
    amd, arm = make_image(1, seed="roles-amd"), make_image(1, seed="roles-arm", arch="arm64")
    stray = make_image(1, seed="roles-stray")
    index = make_index([(amd, "amd64"), (arm, "arm64")])
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for img in (amd, arm, stray):
            push_image(c, repo, img)
        r = c.put(f"/v2/{repo}/manifests/v1", content=index, headers={"Content-Type": OCI_INDEX})
        assert r.status_code == 201, r.text
        index_digest = r.headers["docker-content-digest"]
    size = str(len(index))
    owner, dev, rel = tmp_path / "owner", tmp_path / "dev", tmp_path / "rel"
    trust(srv, owner, "init", gun, "--server-managed-snapshot")  # delegates publish alone
    trust(srv, dev, "key", "generate", "dev", "-o", str(tmp_path))
    trust(srv, rel, "key", "generate", "rel", "-o", str(tmp_path))
    for name in ("dev", "rel"):
        role = "releases" if name == "rel" else "dev"
        trust(srv, owner, "delegation", "add", gun, role, "--all-paths",
              "--key", str(tmp_path / f"{name}.crt"))  # fmt: skip

    # Signed in the top-level `targets` role (not among `roles`): nothing is admitted.
    trust(srv, owner, "sign", f"{gun}:top", "--digest", index_digest, "--size", size)
    assert status(srv, repo, amd.digest) == 403
    # Signed only in targets/dev: the index is refused, and now its children too.
    assert "targets/dev" in trust(
        srv, dev, "sign", f"{gun}:v1", "--digest", index_digest, "--size", size
    )
    assert status(srv, repo, "v1") == 403
    assert status(srv, repo, index_digest) == 403
    for child in (amd, arm):
        assert status(srv, repo, child.digest) == 403
    out = skopeo(srv, f"{repo}@{amd.digest}", ok=False)
    assert "releases-only" in out and "is not signed in" in out
    # Signed in targets/releases, but with another size than the index the registry holds.
    trust(srv, rel, "sign", f"{gun}:v1", "--digest", index_digest, "--size", str(len(index) + 1))
    assert status(srv, repo, amd.digest) == 403
    # Signed in targets/releases as it is: the index and both children are served.
    assert "targets/releases" in trust(
        srv, rel, "sign", f"{gun}:v1", "--digest", index_digest, "--size", size
    )
    assert status(srv, repo, "v1") == 200
    for child in (amd, arm):
        assert status(srv, repo, child.digest) == 200
    skopeo(srv, f"{repo}@{arm.digest}", ok=True)
    # A manifest that is in no signed index stays refused.
    assert status(srv, repo, stray.digest) == 403
    decisions = [
        json.loads(line)
        for line in srv.log().splitlines()
        if '"policy_decision"' in line and amd.digest in line and '"allowed": true' in line
    ]
    assert decisions and "targets/releases" in decisions[-1]["reason"]
