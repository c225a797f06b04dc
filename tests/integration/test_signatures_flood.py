"""Signature flooding through the extension API (issue 16, item 16).

The attack: anyone who may push uploads well-formed simple signatures by untrusted keys. 32 of
them pushed the real signature out of the 32 a simple-signing rule looked at (the signed image was
denied), 64 made the real signer's own upload fail ("already has 64 signatures"), and nothing
could delete them. Now uploads that name a key a rule trusts must verify with it, untrusted
signatures are bounded per signer and in total without counting against trusted ones, the rule
only gpg-checks signatures that name its keys, and DELETE (delete right) removes junk.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.images import make_image, push_image
from tests.integration.server import ServerProcess
from tests.integration.test_policy_pull import podman_pull, skopeo
from tests.signatures.gpg import GpgKey, gpg, make_key, stop_agent

pytestmark = [pytest.mark.needs_skopeo, pytest.mark.needs_podman, pytest.mark.slow]
STRANGERS = 9  # 8 keys x 8 signatures = the 64 untrusted a manifest may hold, and one more


@dataclass
class Setup:
    srv: ServerProcess  # simple-signing rule on flood/*, nothing on open/*
    trusted: GpgKey
    strangers: list[GpgKey]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    gpg_root = Path(tempfile.mkdtemp(prefix="ty-flood-"))
    trusted = make_key(gpg_root / "t", "trusted")
    strangers = [make_key(gpg_root / f"s{i}", f"stranger{i}") for i in range(STRANGERS)]
    rules = [
        {
            "name": "gpg-signed",
            "repositories": ["flood/*"],
            "require": {"kind": "simple-signing", "keys": [str(trusted.public)]},
        }
    ]
    srv = ServerProcess(
        tmp_path_factory.mktemp("flood") / "data",
        extra_env={"TRUSTYARD_POLICY__RULES": json.dumps(rules)},
    ).start()
    try:
        yield Setup(srv, trusted, strangers)
    finally:
        srv.stop()
        for k in (trusted, *strangers):
            stop_agent(k)
        shutil.rmtree(gpg_root, ignore_errors=True)


def payload(reference: str, digest: str, nonce: str) -> bytes:
    return json.dumps(
        {
            "critical": {
                "identity": {"docker-reference": reference},
                "image": {"docker-manifest-digest": digest},
                "type": "atomic container signature",
            },
            "optional": {"nonce": nonce},
        }
    ).encode()


def put(srv: ServerProcess, repo: str, digest: str, content: bytes, sig_id: str) -> httpx.Response:
    body = {
        "schemaVersion": 2,
        "type": "atomic",
        "name": f"{digest}@{sig_id}",
        "content": base64.b64encode(content).decode(),
    }
    return httpx.put(
        f"{srv.url}/extensions/v2/{repo}/signatures/{digest}", content=json.dumps(body), timeout=30
    )


def listed(srv: ServerProcess, repo: str, digest: str) -> list[dict[str, str]]:
    r = httpx.get(f"{srv.url}/extensions/v2/{repo}/signatures/{digest}", timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json()["signatures"])


def push(srv: ServerProcess, repo: str, seed: str) -> str:
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        return push_image(c, repo, make_image(1, seed=seed), "v1")


def flood(s: Setup, repo: str, digest: str, keys: list[GpgKey], per_key: int) -> None:
    for k, key in enumerate(keys):
        for i in range(per_key):
            junk = key.sign(payload(f"{s.srv.host}/{repo}:v1", digest, f"junk-{k}-{i}"))
            r = put(s.srv, repo, digest, junk, f"junk-{k}-{i}")
            assert r.status_code == 201, r.text


def test_junk_neither_crowds_out_nor_locks_out_the_real_signer(setup: Setup) -> None:
    s = setup
    repo = "flood/app"
    digest = push(s.srv, repo, "flood-app")
    # 64 well-formed signatures by 8 untrusted keys, uploaded before the real one.
    flood(s, repo, digest, s.strangers[:8], 8)
    assert len(listed(s.srv, repo, digest)) == 64
    # The 65th untrusted one is refused, by a key that has not signed yet.
    extra = s.strangers[8].sign(payload(f"{s.srv.host}/{repo}:v1", digest, "one-more"))
    r = put(s.srv, repo, digest, extra, "one-more")
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    assert "64 signatures by keys no signature policy here trusts" in r.text
    assert "DELETE" in r.text
    # The real signer is not locked out, and the rule finds its signature behind the junk.
    real = s.trusted.sign(payload(f"{s.srv.host}/{repo}:v1", digest, "real"))
    assert put(s.srv, repo, digest, real, "real").status_code == 201
    assert len(listed(s.srv, repo, digest)) == 65
    assert json.loads(skopeo(s.srv, f"{repo}:v1", ok=True))["schemaVersion"] == 2
    skopeo(s.srv, f"{repo}@{digest}", ok=True)
    podman_pull(s.srv, f"{repo}:v1", ok=True)
    decisions = [
        json.loads(line)
        for line in s.srv.log().splitlines()
        if '"policy_decision"' in line and f'"{repo}"' in line
    ]
    assert decisions[-1]["allowed"] is True and decisions[-1]["signer"] == s.trusted.fingerprint


def test_junk_alone_is_still_denied(setup: Setup) -> None:
    s = setup
    repo = "flood/junk-only"
    digest = push(s.srv, repo, "flood-junk-only")
    flood(s, repo, digest, s.strangers[:5], 8)  # 40: more than the 32 gpg-checked
    out = skopeo(s.srv, f"{repo}:v1", ok=False)
    assert "gpg-signed" in out and "not among the trusted keys" in out


def uncompressed_sign(key: GpgKey, data: bytes) -> bytes:
    """`gpg --sign` without compression, so flipping a byte of the signature value leaves a
    well-formed message that names the key but does not verify."""
    return subprocess.run(
        [gpg(), "--batch", "--yes", "--compress-algo", "none", "--local-user", key.fingerprint,
         "--sign"],
        input=data, capture_output=True, env={**os.environ, **key.env}, timeout=60, check=True,
    ).stdout  # fmt: skip


def test_forged_claims_of_a_trusted_key_are_refused_at_upload(setup: Setup) -> None:
    s = setup
    repo = "flood/forged"
    digest = push(s.srv, repo, "flood-forged")
    real = uncompressed_sign(s.trusted, payload(f"{s.srv.host}/{repo}:v1", digest, "forged"))
    for position in (-5, -20):  # the signature's value: still names the trusted key
        forged = bytearray(real)
        forged[position] ^= 0x01
        r = put(s.srv, repo, digest, bytes(forged), f"forged{-position}")
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
        assert "trusts, but does not verify with that key" in r.text
    assert listed(s.srv, repo, digest) == []
    # The real one is stored; so are at most 8 by the trusted key per manifest.
    for i in range(8):
        sig = s.trusted.sign(payload(f"{s.srv.host}/{repo}:v1", digest, f"real-{i}"))
        assert put(s.srv, repo, digest, sig, f"real-{i}").status_code == 201
    ninth = s.trusted.sign(payload(f"{s.srv.host}/{repo}:v1", digest, "real-9"))
    r = put(s.srv, repo, digest, ninth, "real-9")
    assert r.status_code == 403 and "the limit per signer" in r.text


def test_forged_claims_stored_before_the_rule_do_not_lock_out_the_real_signer(
    setup: Setup,
) -> None:
    """Forged claims of the trusted key, uploaded where no rule vetted them (an endpoint of the
    same data without rules): they fill that key's per-signer quota, but the real signer's
    upload through the enforcing endpoint still lands, and the rule finds it among them."""
    s = setup
    repo = "flood/stale"
    digest = push(s.srv, repo, "flood-stale")
    bare = ServerProcess(s.srv.data_dir).start()
    try:
        for i in range(8):
            real = uncompressed_sign(s.trusted, payload(f"{s.srv.host}/{repo}:v1", digest, f"f{i}"))
            forged = bytearray(real)
            forged[-5] ^= 0x01
            assert put(bare, repo, digest, bytes(forged), f"forged-{i}").status_code == 201
        ninth = s.trusted.sign(payload(f"{s.srv.host}/{repo}:v1", digest, "on-bare"))
        assert "the limit per signer" in put(bare, repo, digest, ninth, "on-bare").text
    finally:
        bare.stop()
    skopeo(s.srv, f"{repo}:v1", ok=False)  # eight forged claims: nothing verifies
    real = s.trusted.sign(payload(f"{s.srv.host}/{repo}:v1", digest, "real"))
    r = put(s.srv, repo, digest, real, "real")
    assert r.status_code == 201, r.text
    skopeo(s.srv, f"{repo}:v1", ok=True)


def test_junk_is_bounded_per_signer(setup: Setup) -> None:
    s = setup
    repo = "open/app"  # no rule: the registry cannot tell signers apart by trust here
    digest = push(s.srv, repo, "flood-open")
    key = s.strangers[0]
    flood(s, repo, digest, [key], 8)
    ninth = key.sign(payload(f"{s.srv.host}/{repo}:v1", digest, "ninth"))
    r = put(s.srv, repo, digest, ninth, "ninth")
    assert r.status_code == 403
    assert f"8 signatures by key {key.fingerprint[-16:]}, the limit per signer" in r.text
    # Another signer is unaffected.
    other = s.strangers[1].sign(payload(f"{s.srv.host}/{repo}:v1", digest, "other"))
    assert put(s.srv, repo, digest, other, "other").status_code == 201


def test_delete_removes_junk(setup: Setup) -> None:
    s = setup
    repo = "open/cleanup"
    digest = push(s.srv, repo, "flood-cleanup")
    url = f"{s.srv.url}/extensions/v2/{repo}/signatures/{digest}"
    flood(s, repo, digest, s.strangers[:2], 3)
    keep = s.trusted.sign(payload(f"{s.srv.host}/{repo}:v1", digest, "keep"))
    assert put(s.srv, repo, digest, keep, "keep").status_code == 201
    # By signer (fingerprint or long key ID)
    r = httpx.delete(url, params={"signer": s.strangers[0].fingerprint}, timeout=30)
    assert r.status_code == 202 and r.json() == {"deleted": 3}
    r = httpx.delete(url, params={"signer": s.strangers[1].fingerprint[-16:]}, timeout=30)
    assert r.status_code == 202 and r.json() == {"deleted": 3}
    assert [x["name"] for x in listed(s.srv, repo, digest)] == [f"{digest}@keep"]
    # Bad input: the spec's codes and a message, never a 500.
    bad = httpx.delete(url, params={"signer": "not-hex"}, timeout=30)
    assert bad.status_code == 400 and "not a key ID or fingerprint" in bad.text
    bad = httpx.delete(url, params=[("name", f"{digest}@a"), ("name", f"{digest}@b")], timeout=30)
    assert bad.status_code == 400 and "at most once" in bad.text
    bad = httpx.delete(url, params={"name": "sha256:other@x"}, timeout=30)
    assert bad.status_code == 400 and "as listed by GET" in bad.text
    missing = httpx.delete(url, params={"name": f"{digest}@nope"}, timeout=30)
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    bad = httpx.delete(f"{s.srv.url}/extensions/v2/{repo}/signatures/sha256:zz", timeout=30)
    assert bad.status_code == 400 and bad.json()["errors"][0]["code"] == "DIGEST_INVALID"
    gone = httpx.delete(
        f"{s.srv.url}/extensions/v2/{repo}/signatures/sha256:{'cd' * 32}", timeout=30
    )
    assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    # By name, then everything
    r = httpx.delete(url, params={"name": f"{digest}@keep"}, timeout=30)
    assert r.status_code == 202 and r.json() == {"deleted": 1}
    assert listed(s.srv, repo, digest) == []
    assert httpx.delete(url, timeout=30).json() == {"deleted": 0}


def test_delete_needs_the_delete_right(tmp_path: Path) -> None:
    from tests.auth.integration import add_user, bearer, cli, token, token_server

    data = tmp_path / "data"
    add_user(data, "root", "root-pw", admin=True)
    add_user(data, "pusher", "pusher-pw")
    add_user(data, "janitor", "janitor-pw")
    cli(data, "acl", "add", "pusher", "team/*", "pull,push")
    cli(data, "acl", "add", "janitor", "team/*", "pull,delete")
    gpg_root = Path(tempfile.mkdtemp(prefix="ty-flood-"))
    key = make_key(gpg_root / "k", "signer")
    srv = token_server(data).start()
    try:
        image = make_image(1, seed="flood-auth")
        admin = token(srv, "repository:team/app:pull,push", auth=("root", "root-pw"))
        with httpx.Client(base_url=srv.url, timeout=30, headers=bearer(admin)) as c:
            push_image(c, "team/app", image, "v1")
        url = f"{srv.url}/extensions/v2/team/app/signatures/{image.digest}"
        body = {
            "schemaVersion": 2,
            "type": "atomic",
            "name": f"{image.digest}@junk",
            "content": base64.b64encode(
                key.sign(payload(f"{srv.host}/team/app:v1", image.digest, "junk"))
            ).decode(),
        }
        pusher = token(srv, "repository:team/app:pull,push,delete", auth=("pusher", "pusher-pw"))
        assert httpx.put(url, content=json.dumps(body), headers=bearer(pusher)).status_code == 201
        assert httpx.delete(url, timeout=30).status_code == 401
        denied = httpx.delete(url, headers=bearer(pusher), timeout=30)
        assert denied.status_code == 403 and denied.json()["errors"][0]["code"] == "DENIED"
        assert "delete" in denied.json()["errors"][0]["message"]
        janitor = token(srv, "repository:team/app:pull,push,delete", auth=("janitor", "janitor-pw"))
        assert httpx.put(url, content=json.dumps(body), headers=bearer(janitor)).status_code == 403
        ok = httpx.delete(url, headers=bearer(janitor), timeout=30)
        assert ok.status_code == 202 and ok.json() == {"deleted": 1}
        assert httpx.get(url, headers=bearer(janitor), timeout=30).json() == {"signatures": []}
    finally:
        srv.stop()
        stop_agent(key)
        shutil.rmtree(gpg_root, ignore_errors=True)
