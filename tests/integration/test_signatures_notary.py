"""`trustyard signatures` lists Notary targets, against a real `trustyard serve`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.server import ServerProcess
from tests.integration.trusttools import push, trust

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = ServerProcess(tmp_path_factory.mktemp("sig-notary") / "data").start()
    yield s
    s.stop()


def signatures(ref: str, trust_dir: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "trustyard", "signatures", ref, "--plain-http"]
    proc = subprocess.run(
        [*cmd, "--trust-dir", str(trust_dir), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def notary_rows(ref: str, trust_dir: Path, *args: str) -> list[dict[str, Any]]:
    report = json.loads(signatures(ref, trust_dir, "--json", *args))
    return [s for s in report["signatures"] if s["kind"] == "notary"]


def targets_key(init_output: str) -> str:
    return next(ln.split()[1] for ln in init_output.splitlines() if ln.split()[:1] == ["targets"])


def test_notary_target_verified_then_tag_moved(srv: ServerProcess, tmp_path: Path) -> None:
    repo = "signot/app"
    gun = f"{srv.host}/{repo}"
    ref = f"{gun}:v1"
    owner, reader = tmp_path / "owner", tmp_path / "reader"
    digest = push(srv, repo, "v1", "one")
    # no collection for the GUN: nothing listed for Notary, no error
    assert notary_rows(ref, reader) == []
    keyid = targets_key(trust(srv, owner, "init", gun))
    trust(srv, owner, "sign", ref)

    text = signatures(ref, reader)
    line = next(ln for ln in text.splitlines() if ln.startswith("notary"))
    assert "verified" in line and keyid[:16] in line and f"{gun}:v1" in line
    assert "role targets" in line and "TOFU" in line
    [row] = notary_rows(ref, reader)
    assert row["status"] == "verified"
    n = row["notary"]
    assert (n["gun"], n["target"], n["role"], n["digest"]) == (gun, "v1", "targets", digest)
    assert n["canonical_key_ids"] == [keyid] and n["root_trusted_by"] == "tofu"
    # by digest: the same target is found by its hash
    by_digest = notary_rows(f"{gun}@{digest}", reader)
    assert [(r["status"], r["notary"]["target"]) for r in by_digest] == [("verified", "v1")]

    # the tag moves: the signed target no longer matches what the registry serves
    moved = push(srv, repo, "v1", "two")
    [row] = notary_rows(ref, reader)
    assert row["status"] == "tag-moved" and row["notary"]["digest"] == digest
    assert "tag moved after signing" in row["detail"] and moved in row["detail"]
    assert "tag-moved" in signatures(ref, reader)
    # the old image, by digest, is still signed
    [row] = notary_rows(f"{gun}@{digest}", reader)
    assert row["status"] == "verified"


def test_pins_gun_and_trust_server_options(srv: ServerProcess, tmp_path: Path) -> None:
    repo = "signot/pinned"
    gun = f"{srv.host}/{repo}"
    ref = f"{gun}:v1"
    owner = tmp_path / "owner"
    push(srv, repo, "v1", "pinned")
    out = trust(srv, owner, "init", gun)
    root_canonical = next(ln.split()[1] for ln in out.splitlines() if "root_canonical" in ln)
    trust(srv, owner, "sign", ref)

    # pinned by canonical root key ID: verified, and says the root is pinned
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"trust_pinning": {"certs": {gun: [root_canonical]}}}))
    [row] = notary_rows(ref, tmp_path / "c1", "--trust-config", str(good))
    assert row["status"] == "verified" and row["notary"]["root_trusted_by"] == "certs"
    # pinned to another key: the collection does not verify
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"trust_pinning": {"certs": {gun: ["ab" * 32]}}}))
    [row] = notary_rows(ref, tmp_path / "c2", "--trust-config", str(bad))
    assert row["status"] == "failed" and "not among the keys pinned" in row["detail"]
    # TOFU disabled and no pin: refused, with how to pin
    nopin = tmp_path / "nopin.json"
    nopin.write_text(json.dumps({"trust_pinning": {"disable_tofu": True}}))
    [row] = notary_rows(ref, tmp_path / "c3", "--trust-config", str(nopin))
    assert row["status"] == "failed" and "disable_tofu" in row["detail"]

    # --gun: the image pushed elsewhere, its trust data under this GUN
    copy = "signot/copy"
    push(srv, copy, "v1", "pinned")  # same seed, but fresh random layers: another digest
    [row] = notary_rows(f"{srv.host}/{copy}:v1", tmp_path / "c4", "--gun", gun)
    assert row["status"] == "tag-moved" and row["notary"]["gun"] == gun
    # --trust-server: a server with no collection lists nothing; an unreachable one says so
    other = ServerProcess(tmp_path / "other").start()
    try:
        assert notary_rows(ref, tmp_path / "c5", "--trust-server", other.url) == []
    finally:
        other.stop()
    [row] = notary_rows(ref, tmp_path / "c6", "--trust-server", other.url)
    assert row["status"] == "unverifiable" and "cannot reach the trust server" in row["detail"]
    # --no-notary: not asked at all
    assert notary_rows(ref, tmp_path / "c7", "--no-notary") == []
