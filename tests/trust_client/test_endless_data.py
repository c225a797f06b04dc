"""Endless and deeply nested answers against the real `trustyard` CLI (a subprocess), served by
the malicious server of tests/trust_client/evil.py as lazily generated gigabytes.

Each run must stop early with a one-line `error: …` (no traceback), within a time bound and with
bounded memory (the CLI's own ru_maxrss, read with wait4 by a small launcher), and the server
must have sent far less than it offered.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.trust_client.evil import Collection, EvilServer, Stream, endless, target
from trustyard.signing.cosign import ARTIFACT_SIG, SIMPLESIGNING

pytestmark = pytest.mark.slow

REPO = "team/app"
MAX_RSS_KB = 300 * 1024  # a bounded client stays far below; the old one grew to gigabytes
TIME_LIMIT = 60.0
OFFERED = 4 << 30


@pytest.fixture
def srv() -> Iterator[EvilServer]:
    with EvilServer() as s:
        yield s


def manifest() -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + "0" * 64,
                "size": 2,
            },
            "layers": [],
        }
    ).encode()


def serve_manifest(srv: EvilServer, tag: str = "v1") -> str:
    data = manifest()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    headers = {
        "Content-Type": "application/vnd.oci.image.manifest.v1+json",
        "Docker-Content-Digest": digest,
    }
    srv.routes[f"/v2/{REPO}/manifests/{tag}"] = (200, data, headers)
    srv.routes[f"/v2/{REPO}/manifests/{digest}"] = (200, data, headers)
    return digest


# Runs the CLI and writes the CLI's own max RSS (KiB) to argv[1]. Linux starts a child's
# ru_maxrss at the RSS of the process it was forked from, so a child of the (large, long-lived)
# pytest process would report pytest's size; a child of this small launcher reports its own.
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run(tmp_path: Path, *args: str) -> tuple[int, str, float, int]:
    """Run `python -m trustyard ARGS`: (exit code, output, seconds, max RSS in KiB)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUSTYARD", "NOTARY"))}
    env.update(HOME=str(tmp_path), REGISTRY_AUTH_FILE=str(tmp_path / "no-auth.json"))
    tmp_path.mkdir(parents=True, exist_ok=True)
    log, rss_file = tmp_path / "cli.log", tmp_path / "cli.maxrss"
    start = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LAUNCHER,
                str(rss_file),
                sys.executable,
                "-m",
                "trustyard",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout=2 * TIME_LIMIT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"trustyard {' '.join(args)} still running after {2 * TIME_LIMIT}s")
    return code, log.read_text(), time.monotonic() - start, int(rss_file.read_text())


def stopped_early(
    result: tuple[int, str, float, int], srv: EvilServer, path: str, message: str
) -> str:
    code, out, seconds, rss = result
    assert code == 1, out
    assert "Traceback" not in out and "RecursionError" not in out, out
    assert out.startswith("error: ") and out.count("\n") == 1, out
    assert message in out, out
    assert seconds < TIME_LIMIT, f"{seconds:.1f}s"
    assert rss < MAX_RSS_KB, f"max RSS {rss // 1024} MiB"
    assert srv.sent.get(path, 0) < 256 << 20, f"server sent {srv.sent.get(path, 0)} bytes"
    return out


def trust_verify(tmp_path: Path, srv: EvilServer) -> tuple[int, str, float, int]:
    ref = f"{srv.host}/{REPO}:v1"
    trust_dir = str(tmp_path / "trust")
    return run(tmp_path, "trust", "-d", trust_dir, "-s", srv.url, "--plain-http", "verify", ref)


def tuf(srv: EvilServer, role: str) -> str:
    return f"/v2/{srv.host}/{REPO}/_trust/tuf/{role}.json"


def test_trust_verify_stops_reading_endless_metadata(tmp_path: Path, srv: EvilServer) -> None:
    serve_manifest(srv)
    srv.routes[tuf(srv, "root")] = Stream(endless(b"[", OFFERED))
    out = stopped_early(
        trust_verify(tmp_path, srv), srv, tuf(srv, "root"), "larger than the 16777216 byte limit"
    )
    assert f"root of {srv.host}/{REPO}" in out


def test_trust_verify_endless_later_role_error_body_and_declared_length(
    tmp_path: Path, srv: EvilServer
) -> None:
    serve_manifest(srv)
    gun = f"{srv.host}/{REPO}"
    coll = Collection(gun)
    srv.serve(gun, coll.files(1, {"v1": target("one")}))
    # the timestamp never ends
    srv.routes[tuf(srv, "timestamp")] = Stream(endless(b"{", OFFERED))
    stopped_early(trust_verify(tmp_path / "a", srv), srv, tuf(srv, "timestamp"), "byte limit")
    # an error answer that never ends: the status is reported, the body cut
    srv.sent.clear()
    srv.routes[tuf(srv, "timestamp")] = Stream(endless(b"x", OFFERED), status=500)
    stopped_early(trust_verify(tmp_path / "b", srv), srv, tuf(srv, "timestamp"), "answered 500")
    # a declared Content-Length over the limit is refused before reading
    srv.sent.clear()
    srv.routes[tuf(srv, "timestamp")] = Stream(
        endless(b"[", OFFERED), headers={"Content-Length": str(OFFERED)}
    )
    stopped_early(trust_verify(tmp_path / "c", srv), srv, tuf(srv, "timestamp"), "byte limit")
    # a 401 whose body never ends, then a token server whose answer never ends
    srv.sent.clear()
    challenge = f'Bearer realm="{srv.url}/token",service="evil"'
    srv.routes[tuf(srv, "timestamp")] = Stream(
        endless(b"x", OFFERED), status=401, headers={"WWW-Authenticate": challenge}
    )
    srv.routes["/token"] = Stream(endless(b"[", OFFERED))
    out = stopped_early(trust_verify(tmp_path / "d", srv), srv, "/token", "byte limit")
    assert "token server" in out
    assert srv.sent[tuf(srv, "timestamp")] < 256 << 20


def test_trust_verify_deeply_nested_metadata_is_a_clear_error(
    tmp_path: Path, srv: EvilServer
) -> None:
    serve_manifest(srv)
    srv.routes[tuf(srv, "root")] = b"[" * (4 << 20)
    stopped_early(trust_verify(tmp_path, srv), srv, tuf(srv, "root"), "root is nested")


def cosign_key(tmp_path: Path) -> Path:
    pub = ec.generate_private_key(ec.SECP256R1()).public_key()
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "cosign.pub"
    path.write_bytes(
        pub.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def verify_cosign(tmp_path: Path, srv: EvilServer) -> tuple[int, str, float, int]:
    ref = f"{srv.host}/{REPO}:v1"
    key = str(cosign_key(tmp_path))
    return run(tmp_path, "sign", "verify-cosign", ref, "--key", key, "--plain-http")


def test_verify_cosign_stops_reading_an_endless_manifest(tmp_path: Path, srv: EvilServer) -> None:
    path = f"/v2/{REPO}/manifests/v1"
    srv.routes[path] = Stream(endless(b"[", OFFERED))
    stopped_early(verify_cosign(tmp_path, srv), srv, path, "larger than the 4194304 byte limit")
    # the same behind a redirect whose own body never ends
    srv.sent.clear()
    srv.routes[path] = Stream(endless(b"x", OFFERED), status=302, headers={"Location": "/m"})
    srv.routes["/m"] = Stream(endless(b"[", OFFERED))
    stopped_early(verify_cosign(tmp_path, srv), srv, "/m", "byte limit")
    # nothing recorded when the client left before the first chunk was written (a broken pipe)
    assert srv.sent.get(path, 0) < 256 << 20


def test_verify_cosign_endless_or_deep_referrers(tmp_path: Path, srv: EvilServer) -> None:
    digest = serve_manifest(srv)
    path = f"/v2/{REPO}/referrers/{digest}"
    srv.routes[path] = Stream(endless(b"[", OFFERED))
    stopped_early(verify_cosign(tmp_path / "a", srv), srv, path, "referrers of")
    # within the size limit but nested a million levels deep: a message, not a RecursionError
    srv.routes[path] = b"[" * (3 << 20)
    stopped_early(verify_cosign(tmp_path / "b", srv), srv, path, "nested too deeply")
    # an endless error body on the signature tag
    srv.routes.pop(path)
    sig = f"/v2/{REPO}/manifests/sha256-{digest.split(':')[1]}.sig"
    srv.routes[sig] = Stream(endless(b"x", OFFERED), status=500)
    stopped_early(verify_cosign(tmp_path / "c", srv), srv, sig, "HTTP 500")


def test_verify_cosign_does_not_fan_out_without_bound(tmp_path: Path, srv: EvilServer) -> None:
    """Each answer is small, but a signature manifest with 1000 layers and a referrers list of
    1000 signature manifests would make the client fetch thousands of blobs."""
    digest = serve_manifest(srv)
    blob = b'{"critical":{}}'
    blob_digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    srv.routes[f"/v2/{REPO}/blobs/{blob_digest}"] = blob
    layer = {"mediaType": SIMPLESIGNING, "digest": blob_digest, "size": len(blob)}

    def sig_manifest(n: int, layers: int) -> tuple[str, bytes]:
        doc = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                       "digest": "sha256:" + "4" * 64},
            "layers": [layer] * layers,
            "annotations": {"n": str(n)},
        }  # fmt: skip
        data = json.dumps(doc).encode()
        return "sha256:" + hashlib.sha256(data).hexdigest(), data

    _, tag_doc = sig_manifest(0, 1000)
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    srv.routes[f"/v2/{REPO}/manifests/sha256-{digest.split(':')[1]}.sig"] = (200, tag_doc, headers)
    referrers = []
    for n in range(1, 1001):
        d, data = sig_manifest(n, 1)
        srv.routes[f"/v2/{REPO}/manifests/{d}"] = (200, data, headers)
        referrers.append({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "digest": d, "size": len(data), "artifactType": ARTIFACT_SIG})  # fmt: skip
    srv.routes[f"/v2/{REPO}/referrers/{digest}"] = json.dumps(
        {"schemaVersion": 2, "manifests": referrers}
    ).encode()
    code, out, seconds, _ = verify_cosign(tmp_path, srv)
    assert code == 1 and "Traceback" not in out and seconds < 2 * TIME_LIMIT
    assert "no cosign signature verifies" in out
    blob_reads = srv.requests.count(f"/v2/{REPO}/blobs/{blob_digest}")
    manifest_reads = sum(1 for p in srv.requests if p.startswith(f"/v2/{REPO}/manifests/sha256:"))
    assert blob_reads <= 2 * 64 and manifest_reads <= 64 + 1, (blob_reads, manifest_reads)
