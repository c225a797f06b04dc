"""Policy kind `authority` and `trustyard verify --authority-roots` against a real server: grants
issued and stored with `trustyard authority grant|revoke`, cosign signatures made with
`trustyard sign cosign`, pulls with skopeo and podman.

As in test_policy_signatures.py, one enforcing server (the public endpoint) and one without rules
on the same data directory (the signer's endpoint: an enforcing rule hides unsigned manifests
from the signing tool too).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.pki import make_cert
from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.images import make_image, push_image, write_layout
from tests.integration.server import ServerProcess
from tests.integration.test_policy_pull import podman_pull, skopeo
from tests.integration.trusttools import trust
from tests.signatures.gpg import make_key, stop_agent
from trustyard.authority import statements
from trustyard.crypto.jws import verify_schema1
from trustyard.oci import mediatypes as mt
from trustyard.signing import cosign

pytestmark = [pytest.mark.needs_skopeo, pytest.mark.needs_podman, pytest.mark.slow]
USERS = ("alice", "bob", "carol", "dave")
GUNS = "registry.test/"  # the Notary GUN of repository R is GUNS + R


@dataclass
class Setup:
    root: Path
    public: ServerProcess  # enforcing
    signer: ServerProcess  # same data, no rules
    roots: Path  # the client's roots directory

    def key(self, user: str) -> Path:
        return self.root / f"{user}.key"

    def pub(self, user: str) -> Path:
        return self.root / f"{user}.pub"

    def authority(self, *args: str) -> str:
        """`trustyard authority …` as the authority, storing in the registry; the stdout."""
        out = trustyard(
            "authority", *args, "--authority-key", str(self.root / "authority.key"),
            "--authority-cert", str(self.root / "authority.pem"),
            "--registry", self.signer.url,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def grant(self, user: str, namespace: str, *extra: str) -> str:
        """Grant `user`'s cosign key for `namespace`; the statement id."""
        args = ["grant", "--key", str(self.pub(user)), "--user", user, "--namespace", namespace]
        return self.authority(*args, *extra)

    def push_signed(self, repo: str, user: str | None) -> str:
        with httpx.Client(base_url=self.signer.url, timeout=30) as c:
            digest = push_image(c, repo, make_image(1, seed=f"authz-{repo}"), "v1")
        if user is not None:
            signed = trustyard(
                "sign", "cosign", f"{self.signer.host}/{repo}:v1", "--key", str(self.key(user)),
                "--mode", "tag", "--plain-http", env={"COSIGN_PASSWORD": "pw"},
            )  # fmt: skip
            assert signed.returncode == 0, signed.stderr
        return digest

    def verify(self, ref: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return trustyard(
            "verify", f"{self.signer.host}/{ref}", "--authority-roots", str(self.roots),
            "--plain-http", *extra,
        )  # fmt: skip


def trustyard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustyard", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("authz")
    ca = make_cert("Authority Root", ca=True)
    inter = ca.issue("Authority Intermediate", ca=True)
    leaf = inter.issue("Authority Statements")
    (root / "authority.key").write_bytes(leaf.key_pem())
    (root / "authority.pem").write_bytes(leaf.pem + inter.pem)
    roots = root / "roots"
    roots.mkdir()
    (roots / "corp.pem").write_bytes(ca.pem)
    for user in USERS:
        key = ec.generate_private_key(ec.SECP256R1())
        (root / f"{user}.key").write_bytes(cosign.encrypt_cosign_key(key, b"pw"))
        (root / f"{user}.pub").write_bytes(cosign.public_pem(key.public_key()))
    require = {"kind": "authority", "roots": [str(roots / "corp.pem")], "gun_prefix": GUNS}
    rules = [{"name": "authorized", "repositories": ["team/*", "old/*"], "require": require}]
    data = root / "data"
    env = {"TRUSTYARD_SCHEMA1": "verify"}
    rules_env = {"TRUSTYARD_POLICY__RULES": json.dumps(rules)}
    public = ServerProcess(data, extra_env=env | rules_env).start()
    signer = ServerProcess(data, extra_env=env).start()
    try:
        yield Setup(root, public, signer, roots)
    finally:
        public.stop()
        signer.stop()


def test_authorized_pull_passes_and_others_are_refused_with_the_reason(setup: Setup) -> None:
    s = setup
    alice = s.grant("alice", "team/*")
    s.grant("bob", "other/*")
    digest = s.push_signed("team/app", "alice")
    assert json.loads(skopeo(s.public, "team/app:v1", ok=True))["schemaVersion"] == 2
    skopeo(s.public, f"team/app@{digest}", ok=True)
    podman_pull(s.public, "team/app:v1", ok=True)

    s.push_signed("team/bobs", "bob")
    out = skopeo(s.public, "team/bobs:v1", ok=False)
    assert "'authorized' (requires authority)" in out
    assert "is granted to bob for other/*, not for team/bobs" in out
    podman_pull(s.public, "team/bobs:v1", ok=False)

    s.push_signed("team/unsigned", None)
    assert "(requires authority): no signatures" in skopeo(s.public, "team/unsigned:v1", ok=False)

    # The decision names the signer and the grant.
    log = s.public.log_path
    assert log is not None
    allowed = [
        json.loads(line)
        for line in log.read_text(errors="replace").splitlines()
        if '"policy_decision"' in line and '"team/app"' in line
    ]
    assert allowed[-1]["allowed"] is True
    assert f"granted to alice for team/* by statement {alice}" in allowed[-1]["reason"]


def test_revoked_grant_is_refused_at_once(setup: Setup) -> None:
    s = setup
    carol = s.grant("carol", "team/*")
    s.push_signed("team/revoked", "carol")
    skopeo(s.public, "team/revoked:v1", ok=True)
    s.authority("revoke", "--statement", carol, "--reason", "laptop stolen")
    out = skopeo(s.public, "team/revoked:v1", ok=False)
    assert f"statement {carol}" in out and "laptop stolen" in out


def test_expired_grant_is_refused(setup: Setup) -> None:
    """A grant that was valid for an hour, two hours ago: issued with the library (the CLI only
    issues from now on), posted like any statement; no waiting on the clock."""
    s = setup
    s.push_signed("team/expiring", "dave")
    now = dt.datetime.now(dt.UTC)
    key = serialization.load_pem_private_key((s.root / "authority.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    chain = x509.load_pem_x509_certificates((s.root / "authority.pem").read_bytes())
    statement = statements.issue_grant(
        statements.KeySigner(key), chain, s.pub("dave").read_bytes(), "dave", ["team/*"],
        expires=now - dt.timedelta(hours=1), now=now - dt.timedelta(hours=2),
    )  # fmt: skip
    posted = httpx.post(s.signer.url + "/extensions/v2/_authority/statements", content=statement)
    assert posted.status_code == 201, posted.text
    dave = posted.json()["id"]
    out = skopeo(s.public, "team/expiring:v1", ok=False)
    assert dave in out and "expired on" in out


def test_verify_prints_every_signature_and_exits_by_authorization(
    setup: Setup, tmp_path: Path
) -> None:
    s = setup
    s.grant("alice", "team/*")
    s.grant("bob", "other/*")
    s.push_signed("team/verify", "alice")
    # bob signs too: two signatures, one authorized.
    extra = trustyard(
        "sign", "cosign", f"{s.signer.host}/team/verify:v1", "--key", str(s.key("bob")),
        "--mode", "referrers", "--plain-http", env={"COSIGN_PASSWORD": "pw"},
    )  # fmt: skip
    assert extra.returncode == 0, extra.stderr
    out = s.verify("team/verify:v1")
    assert out.returncode == 0, out.stderr
    assert "2 signature(s), 1 authorized" in out.stdout
    assert "granted to alice for team/*" in out.stdout
    assert "granted to bob for other/*, not for team/verify" in out.stdout

    got = s.verify("team/verify:v1", "--json")
    assert got.returncode == 0, got.stderr
    rows = json.loads(got.stdout)
    fields = {"kind", "key_id", "verified", "authorized", "user", "namespaces", "statement"}
    assert all(fields | {"reason"} <= set(r) for r in rows)
    authorized = [r for r in rows if r["authorized"]]
    assert [(r["kind"], r["user"], r["namespaces"]) for r in authorized] == [
        ("cosign", "alice", ["team/*"])
    ]
    assert all(r["verified"] for r in rows)

    # Only bob's signature: refused, non-zero, one line saying why.
    s.push_signed("team/bob-only", "bob")
    out = s.verify("team/bob-only:v1")
    assert out.returncode == 1
    assert out.stderr.strip().count("\n") == 0 and "no signature is authorized" in out.stderr

    # Offline: the statements as `trustyard authority fetch` saved them.
    saved = tmp_path / "statements"
    fetched = trustyard("authority", "fetch", "--registry", s.signer.url, "--out", str(saved))
    assert fetched.returncode == 0, fetched.stderr
    assert s.verify("team/verify:v1", "--statements", str(saved)).returncode == 0

    # A disabled root trusts nothing.
    disabled = tmp_path / "roots"
    disabled.mkdir()
    (disabled / "corp.pem.disabled").write_bytes((s.roots / "corp.pem").read_bytes())
    out = trustyard(
        "verify", f"{s.signer.host}/team/verify:v1", "--authority-roots", str(disabled),
        "--plain-http",
    )  # fmt: skip
    assert out.returncode == 2 and "holds no enabled root" in out.stderr


def test_jws_schema1_signer_granted(setup: Setup, tmp_path: Path) -> None:
    """skopeo --format v2s1 signs with a key it generates: its libtrust key ID is refused until
    the authority grants that key."""
    s = setup
    src = write_layout(tmp_path / "src", {"v1": make_image(2, seed="authz-s1", history=True)})
    run(require("skopeo"), "copy", "--dest-tls-verify=false", "--format", "v2s1",
        f"oci:{src}:v1", f"docker://{s.signer.host}/old/app:v1")  # fmt: skip
    raw = httpx.get(
        f"{s.signer.url}/v2/old/app/manifests/v1",
        headers={"Accept": mt.DOCKER_SCHEMA1_SIGNED},
        timeout=30,
    ).content
    [signer] = verify_schema1(raw)
    out = skopeo(s.public, "old/app:v1", ok=False)
    assert f"jws signature by {signer.key_id}: no statement grants key {signer.key_id}" in out
    pub = tmp_path / "jws.pub"
    pub.write_bytes(
        signer.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    s.authority("grant", "--key", str(pub), "--user", "builder", "--namespace", "old/*")
    skopeo(s.public, "old/app:v1", ok=True)
    got = s.verify("old/app:v1", "--json")
    assert got.returncode == 0, got.stderr
    [row] = json.loads(got.stdout)
    assert (row["kind"], row["key_id"], row["user"]) == ("jws", signer.key_id, "builder")


def test_simple_signature_by_a_granted_gpg_key(setup: Setup, tmp_path: Path) -> None:
    s = setup
    gpg_root = Path(tempfile.mkdtemp(prefix="ty-gpg-"))
    key = make_key(gpg_root / "k", "erin")
    try:
        src = write_layout(tmp_path / "src", {"v1": make_image(1, seed="authz-gpg")})
        permissive = tmp_path / "any.json"
        permissive.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        home = tmp_path / "home"
        home.mkdir()
        run(require("skopeo"), "copy", "--policy", permissive, "--dest-tls-verify=false",
            "--sign-by", key.fingerprint, f"oci:{src}:v1",
            f"docker://{s.signer.host}/team/gpg:v1",
            env={"HOME": str(home), **key.env})  # fmt: skip
        out = skopeo(s.public, "team/gpg:v1", ok=False)
        assert f"no statement grants key {key.fingerprint[-16:]}" in out
        s.authority("grant", "--key", str(key.public), "--user", "erin", "--namespace", "team/*")
        skopeo(s.public, "team/gpg:v1", ok=True)
        podman_pull(s.public, "team/gpg:v1", ok=True)
    finally:
        stop_agent(key)
        shutil.rmtree(gpg_root, ignore_errors=True)


def test_notary_delegation_key_granted(setup: Setup, tmp_path: Path) -> None:
    """A tag signed in targets/releases counts once the delegation's key (a certificate made
    by `trustyard trust key generate`) is granted."""
    s = setup
    repo, gun = "team/notary", f"{GUNS}team/notary"
    digest = s.push_signed(repo, None)
    size = len(httpx.get(f"{s.signer.url}/v2/{repo}/manifests/v1", timeout=30).content)
    owner, rel = tmp_path / "owner", tmp_path / "rel"
    trust(s.signer, owner, "init", gun, "--server-managed-snapshot")
    trust(s.signer, rel, "key", "generate", "rel", "-o", str(tmp_path))
    trust(s.signer, owner, "delegation", "add", gun, "releases", "--all-paths",
          "--key", str(tmp_path / "rel.crt"))  # fmt: skip
    trust(s.signer, rel, "sign", f"{gun}:v1", "--digest", digest, "--size", str(size))
    out = skopeo(s.public, f"{repo}:v1", ok=False)
    assert f"notary {gun}:v1 (targets/releases): notary signature by " in out
    assert "no statement grants key" in out
    s.authority("grant", "--key", str(tmp_path / "rel.crt"), "--user", "releaser",
                "--namespace", "team/notary")  # fmt: skip
    skopeo(s.public, f"{repo}:v1", ok=True)

    got = s.verify(f"{repo}:v1", "--json", "--trust-server", s.signer.url, "--gun", gun,
                   "--trust-dir", str(tmp_path / "client"))  # fmt: skip
    assert got.returncode == 0, got.stderr
    rows = [r for r in json.loads(got.stdout) if r["authorized"]]
    assert [(r["kind"], r["user"]) for r in rows] == [("notary", "releaser")]
