"""Registry policy kinds `cosign` and `simple-signing` on the pull path, with real skopeo/podman.

One enforcing server (the public endpoint) and, on the same data directory, one without rules:
the signer's endpoint. `trustyard sign cosign` must read the manifest it signs, and an enforcing
rule hides unsigned manifests from every reader (that is its point), so cosign signing goes
through the signer's endpoint; `skopeo copy --sign-by` only pushes and works on either.
"""

from __future__ import annotations

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
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.images import make_image, push_image, write_layout
from tests.integration.server import ServerProcess
from tests.integration.test_policy_pull import podman_pull, skopeo
from tests.signatures.gpg import GpgKey, make_key, stop_agent
from trustyard.signing import cosign

pytestmark = [pytest.mark.needs_skopeo, pytest.mark.needs_podman, pytest.mark.slow]


@dataclass
class Setup:
    public: ServerProcess  # enforcing
    signer: ServerProcess  # same data, no rules
    cosign_key: Path
    cosign_pub: Path
    stranger_key: Path  # a cosign key the policy does not trust
    gpg: GpgKey
    gpg_stranger: GpgKey


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("polsig")
    keys = []
    for name in ("cosign", "stranger"):
        key = ec.generate_private_key(ec.SECP256R1())
        (root / f"{name}.key").write_bytes(cosign.encrypt_cosign_key(key, b"pw"))
        (root / f"{name}.pub").write_bytes(cosign.public_pem(key.public_key()))
        keys.append(root / f"{name}.key")
    gpg_root = Path(tempfile.mkdtemp(prefix="ty-gpg-"))
    gpg_key, gpg_stranger = make_key(gpg_root / "a", "signer"), make_key(gpg_root / "b", "other")
    cosign_rule = {"kind": "cosign", "keys": [str(root / "cosign.pub")]}
    gpg_rule = {
        "kind": "simple-signing",
        "keys": [str(gpg_key.public)],
        "fingerprints": [gpg_key.fingerprint],
    }
    rules = [
        {"name": "cosign-signed", "repositories": ["cos/*"], "require": cosign_rule},
        {"name": "gpg-signed", "repositories": ["gpg/*"], "require": gpg_rule},
        {
            "name": "either",
            "repositories": ["mix/*"],
            "require": {"kind": "any-of", "of": [cosign_rule, gpg_rule]},
        },
    ]
    data = root / "data"
    public = ServerProcess(data, extra_env={"TRUSTYARD_POLICY__RULES": json.dumps(rules)}).start()
    signer = ServerProcess(data).start()
    try:
        yield Setup(public, signer, keys[0], root / "cosign.pub", keys[1], gpg_key, gpg_stranger)
    finally:
        public.stop()
        signer.stop()
        for k in (gpg_key, gpg_stranger):
            stop_agent(k)
        shutil.rmtree(gpg_root, ignore_errors=True)


def push(s: Setup, repo: str, seed: str, tag: str = "v1") -> str:
    with httpx.Client(base_url=s.public.url, timeout=30) as c:
        return push_image(c, repo, make_image(1, seed=seed), tag)


def cosign_sign(
    srv: ServerProcess, ref: str, key: Path, mode: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustyard", "sign", "cosign", f"{srv.host}/{ref}", "--key",
         str(key), "--mode", mode, "--plain-http"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COSIGN_PASSWORD": "pw"},
        check=False,
    )  # fmt: skip


def sign_by(s: Setup, tmp: Path, key: GpgKey, repo: str, seed: str) -> str:
    """`skopeo copy --sign-by` to the enforcing endpoint: image and signature in one push."""
    image = make_image(1, seed=seed)
    src = write_layout(tmp / f"src-{seed}", {"v1": image})
    permissive = tmp / "any.json"
    permissive.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    run(require("skopeo"), "copy", "--policy", permissive, "--dest-tls-verify=false",
        "--sign-by", key.fingerprint, f"oci:{src}:v1", f"docker://{s.public.host}/{repo}:v1",
        env={"HOME": str(home), **key.env})  # fmt: skip
    return image.digest


def decisions(srv: ServerProcess, repo: str) -> list[dict[str, object]]:
    assert srv.log_path is not None
    return [
        json.loads(line)
        for line in srv.log_path.read_text(errors="replace").splitlines()
        if line.startswith("{") and '"policy_decision"' in line and f'"{repo}"' in line
    ]


def test_cosign_rule_denies_until_signed_by_a_trusted_key(setup: Setup) -> None:
    s = setup
    digest = push(s, "cos/app", "pol-cosign")
    out = skopeo(s.public, "cos/app:v1", ok=False)
    assert "'cosign-signed' (requires cosign)" in out and f"no cosign signature of {digest}" in out
    # The enforcing endpoint hides the manifest from the signer too.
    hidden = cosign_sign(s.public, "cos/app:v1", s.cosign_key, "tag")
    assert hidden.returncode == 1 and "cosign-signed" in hidden.stderr
    # Signed by a key the rule does not trust: still denied, and the log says why.
    assert cosign_sign(s.signer, "cos/app:v1", s.stranger_key, "tag").returncode == 0
    out = skopeo(s.public, "cos/app:v1", ok=False)
    assert "no cosign signature by a trusted key" in out and "does not verify" in out
    assert cosign_sign(s.signer, "cos/app:v1", s.cosign_key, "tag").returncode == 0
    assert json.loads(skopeo(s.public, "cos/app:v1", ok=True))["schemaVersion"] == 2
    skopeo(s.public, f"cos/app@{digest}", ok=True)
    podman_pull(s.public, "cos/app:v1", ok=True)
    # The signature artifact itself is served (verifiers must fetch it).
    sig = json.loads(skopeo(s.public, f"cos/app:sha256-{digest.split(':')[1]}.sig", ok=True))
    # Both signatures live in the .sig manifest (the stranger's and the trusted one), as cosign
    # appends; the policy picks the one by a trusted key.
    assert [x["mediaType"] for x in sig["layers"]] == [cosign.SIMPLESIGNING] * 2
    verify = subprocess.run(
        [sys.executable, "-m", "trustyard", "sign", "verify-cosign", f"{s.public.host}/cos/app:v1",
         "--key", str(s.cosign_pub), "--plain-http"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    last = [d for d in decisions(s.public, "cos/app") if d["reference"] == "v1"][-1]
    assert last["allowed"] is True and last["kind"] == "cosign"
    assert str(last["signer"]).startswith("sha256:")


@pytest.mark.parametrize("mode", ["referrers", "bundle"])
def test_cosign_rule_accepts_referrer_and_bundle(setup: Setup, mode: str) -> None:
    s = setup
    repo = f"cos/{mode}"
    push(s, repo, f"pol-{mode}")
    skopeo(s.public, f"{repo}:v1", ok=False)
    assert cosign_sign(s.signer, f"{repo}:v1", s.cosign_key, mode).returncode == 0
    skopeo(s.public, f"{repo}:v1", ok=True)
    kind = "cosign referrer" if mode == "referrers" else "sigstore bundle"
    last = [d for d in decisions(s.public, repo) if d["reference"] == "v1"][-1]
    assert last["allowed"] is True and str(last["reason"]).startswith(kind)


def test_a_moved_tag_is_denied_again(setup: Setup) -> None:
    s = setup
    push(s, "cos/moving", "pol-moving")
    assert cosign_sign(s.signer, "cos/moving:v1", s.cosign_key, "tag").returncode == 0
    skopeo(s.public, "cos/moving:v1", ok=True)
    push(s, "cos/moving", "pol-moved")  # same tag, another manifest, no signature
    assert "no cosign signature of" in skopeo(s.public, "cos/moving:v1", ok=False)


def test_simple_signing_rule(setup: Setup, tmp_path: Path) -> None:
    s = setup
    signed = sign_by(s, tmp_path, s.gpg, "gpg/app", "pol-gpg")
    with httpx.Client(base_url=s.public.url, timeout=30) as c:
        push_image(c, "gpg/app", make_image(1, seed="pol-gpg-unsigned"), "unsigned")
    assert json.loads(skopeo(s.public, "gpg/app:v1", ok=True))["schemaVersion"] == 2
    skopeo(s.public, f"gpg/app@{signed}", ok=True)
    podman_pull(s.public, "gpg/app:v1", ok=True)
    out = skopeo(s.public, "gpg/app:unsigned", ok=False)
    assert "'gpg-signed' (requires simple-signing)" in out and "no simple signature of" in out
    assert decisions(s.public, "gpg/app")[0]["signer"] == s.gpg.fingerprint


def test_simple_signing_rule_refuses_an_untrusted_signer(setup: Setup, tmp_path: Path) -> None:
    s = setup
    sign_by(s, tmp_path, s.gpg_stranger, "gpg/stranger", "pol-gpg-stranger")
    out = skopeo(s.public, "gpg/stranger:v1", ok=False)
    assert "gpg-signed" in out and "not among the trusted keys" in out
    podman_pull(s.public, "gpg/stranger:v1", ok=False)


def test_any_of_accepts_either_kind(setup: Setup, tmp_path: Path) -> None:
    s = setup
    push(s, "mix/cos", "pol-mix-cos")
    out = skopeo(s.public, "mix/cos:v1", ok=False)
    assert "'either' (requires any-of)" in out
    assert "cosign: no cosign signature" in out and "simple-signing: no simple signature" in out
    assert cosign_sign(s.signer, "mix/cos:v1", s.cosign_key, "bundle").returncode == 0
    skopeo(s.public, "mix/cos:v1", ok=True)
    sign_by(s, tmp_path, s.gpg, "mix/gpg", "pol-mix-gpg")
    skopeo(s.public, "mix/gpg:v1", ok=True)
    reasons = [d["reason"] for d in decisions(s.public, "mix/gpg") if d["allowed"]]
    assert reasons and str(reasons[-1]).startswith("simple-signing: ")
