"""`trustyard export static`: Debian's nginx serves the export with the generated config, and
skopeo and podman pull from it by tag and by digest; re-exports are incremental; tampering is
caught by the clients; hostile targets are refused."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.exporttools import Nginx, export, exported
from tests.integration.images import (
    Image,
    make_image,
    make_index,
    push_blob,
    push_image,
    sha256,
    write_layout,
)
from tests.integration.server import ServerProcess, free_port
from tests.integration.test_scrub import trustyard
from tests.integration.test_signatures_simple import accept_all, client_env
from tests.integration.trusttools import notary, trust
from tests.services.s3 import ACCESS_KEY, SECRET_KEY, S3Server
from tests.signatures.gpg import make_key, stop_agent

pytestmark = [pytest.mark.needs_skopeo, pytest.mark.slow]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _push_index(client: httpx.Client, repo: str, images: list[tuple[Image, str]], tag: str) -> str:
    for image, _ in images:
        push_image(client, repo, image)
    index = make_index(images)
    r = client.put(
        f"/v2/{repo}/manifests/{tag}", content=index, headers={"Content-Type": OCI_INDEX}
    )
    assert r.status_code == 201, r.text
    return sha256(index)


def _push_referrer(client: httpx.Client, repo: str, subject: Image) -> str:
    """An artifact (empty config) whose subject is `subject`."""
    empty = push_blob(client, repo, b"{}")
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example.sbom",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty,
                       "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty,
                        "size": 2}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject.digest,
                        "size": len(subject.manifest)},
        }
    ).encode()  # fmt: skip
    digest = sha256(body)
    r = client.put(
        f"/v2/{repo}/manifests/{digest}", content=body, headers={"Content-Type": OCI_MANIFEST}
    )
    assert r.status_code == 201, r.text
    return digest


class Served:
    def __init__(self, srv: ServerProcess, dest: Path, nginx: Nginx, images: dict[str, Image],
                 index: str, referrer: str) -> None:  # fmt: skip
        self.srv, self.dest, self.nginx, self.images = srv, dest, nginx, images
        self.index, self.referrer = index, referrer


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("export")
    srv = ServerProcess(root / "data").start()
    nginx = None
    try:
        images = {"v1": make_image(2, seed="exp-v1"), "v2": make_image(1, seed="exp-v2")}
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            for tag, image in images.items():
                push_image(c, "team/app", image, tag)
            arm = make_image(1, seed="exp-arm", arch="arm64")
            index = _push_index(c, "team/multi", [(images["v1"], "amd64"), (arm, "arm64")],
                                "latest")  # fmt: skip
            referrer = _push_referrer(c, "team/app", images["v1"])
        dest = root / "site"
        unstarted = Nginx(dest, root / "nginx", free_port())
        exported(dest, srv.data_dir, "--listen", f"127.0.0.1:{unstarted.port}")
        nginx = unstarted.start()
        yield Served(srv, dest, nginx, images, index, referrer)
    finally:
        if nginx is not None:
            nginx.stop()
        srv.stop()


def test_nginx_answers_like_a_registry(served: Served) -> None:
    base, app = served.nginx.url, served.images["v1"]
    with httpx.Client(base_url=base, timeout=30) as c:
        r = c.get("/v2/")
        assert r.status_code == 200
        assert r.headers["docker-distribution-api-version"] == "registry/2.0"
        for ref in ("v1", app.digest):
            for method in ("GET", "HEAD"):
                r = c.request(method, f"/v2/team/app/manifests/{ref}")
                assert r.status_code == 200, (method, ref)
                assert r.headers["content-type"] == OCI_MANIFEST
                assert r.headers["docker-content-digest"] == app.digest
                assert int(r.headers["content-length"]) == len(app.manifest)
        r = c.get("/v2/team/multi/manifests/latest")
        assert r.headers["content-type"] == OCI_INDEX
        assert r.headers["docker-content-digest"] == served.index == sha256(r.content)
        blob = app.blobs[1]
        r = c.get(f"/v2/team/app/blobs/{sha256(blob)}")
        assert r.status_code == 200 and r.content == blob
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["docker-content-digest"] == sha256(blob)
        tags = c.get("/v2/team/app/tags/list")
        assert tags.headers["content-type"] == "application/json"
        subject_tag = "sha256-" + app.digest.split(":")[1]
        assert tags.json() == {"name": "team/app", "tags": sorted(["v1", "v2", subject_tag])}
        assert c.get("/v2/_catalog").json() == {"repositories": ["team/app", "team/multi"]}
        # Referrers: the tag-schema index and the API path, both naming the artifact.
        for path in (
            f"/v2/team/app/manifests/{subject_tag}",
            f"/v2/team/app/referrers/{app.digest}",
        ):
            r = c.get(path)
            assert r.status_code == 200 and r.headers["content-type"] == OCI_INDEX
            [found] = r.json()["manifests"]
            assert found["digest"] == served.referrer
            assert found["artifactType"] == "application/vnd.example.sbom"
        # Unknown paths and our own files: 404 with an OCI error body.
        for path, code in [
            ("/v2/team/app/manifests/nope", "MANIFEST_UNKNOWN"),
            (f"/v2/team/app/blobs/sha256:{'0' * 64}", "BLOB_UNKNOWN"),
            ("/v2/nobody/tags/list", "NAME_UNKNOWN"),
            ("/nginx.conf", "NOT_FOUND"),
            ("/.trustyard-export.json", "NOT_FOUND"),
        ]:
            r = c.get(path)
            assert r.status_code == 404, path
            assert r.json()["errors"][0]["code"] == code, path
    # Blobs are the store's files, linked, not copies.
    store = served.srv.data_dir / "storage" / "blobs" / "sha256" / sha256(blob).split(":")[1][:2]
    linked = served.dest / "v2" / "team" / "app" / "blobs" / sha256(blob)
    assert linked.stat().st_ino == (store / sha256(blob).split(":")[1]).stat().st_ino


def test_skopeo_copies_by_tag_and_by_digest(served: Served, tmp_path: Path) -> None:
    skopeo, host, app = require("skopeo"), served.nginx.host, served.images["v1"]
    inspect = json.loads(
        run(skopeo, "inspect", "--tls-verify=false", f"docker://{host}/team/app:v1").stdout
    )
    assert inspect["Digest"] == app.digest
    for n, ref in enumerate(["team/app:v1", f"team/app@{app.digest}"]):
        out = tmp_path / f"copy{n}"
        run(skopeo, "copy", "--src-tls-verify=false", f"docker://{host}/{ref}", f"dir:{out}")
        assert (out / "manifest.json").read_bytes() == app.manifest
    out = tmp_path / "multi"
    run(skopeo, "copy", "--all", "--src-tls-verify=false",
        f"docker://{host}/team/multi:latest", f"oci:{out}:latest")  # fmt: skip
    assert json.loads((out / "index.json").read_text())["manifests"][0]["digest"] == served.index


@pytest.mark.needs_podman
def test_podman_pulls_by_tag_and_by_digest(served: Served, tmp_path: Path) -> None:
    exe, host, app = require("podman"), served.nginx.host, served.images["v1"]
    runroot = Path(tempfile.mkdtemp(prefix="ty-podman-"))
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f'unqualified-search-registries = []\n\n[[registry]]\nlocation = "{host}"\ninsecure = true\n'
    )
    env = {"CONTAINERS_REGISTRIES_CONF": str(conf), "TMPDIR": str(tmp_path)}
    base = ["--root", str(tmp_path / "root"), "--runroot", str(runroot), "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file"]  # fmt: skip
    try:
        config_hex = sha256(app.config).split(":")[1]
        for ref in (f"{host}/team/app:v1", f"{host}/team/app@{app.digest}"):
            run(exe, *base, "pull", ref, env=env)
            image_id = run(exe, *base, "image", "inspect", "--format", "{{.Id}}", ref, env=env)
            assert image_id.stdout.strip() == config_hex
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def _summary(out: str) -> dict[str, int]:
    """'… 3 written, 2 linked, 0 copied, 9 unchanged, 1 removed' as numbers."""
    tail = out.rsplit(":", 1)[1]
    return {part.split()[1]: int(part.split()[0]) for part in tail.strip().split(", ")}


def _replace(path: Path, data: bytes) -> None:
    """Tamper the way an attacker on the host would: a new file at the name. (Writing into a
    linked blob would change the store's own file too; scrub finds that one.)"""
    tmp = path.with_name(path.name + ".evil")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_reexport_is_incremental_keeps_foreign_files_and_tampering_is_caught(
    server: ServerProcess, client: httpx.Client, tmp_path: Path
) -> None:
    skopeo = require("skopeo")
    one, two = make_image(2, seed="inc-1"), make_image(1, seed="inc-2")
    push_image(client, "inc/app", one, "one")
    push_image(client, "inc/app", two, "two")
    dest = tmp_path / "site"
    (dest / "v2").mkdir(parents=True)
    (dest / "index.html").write_text("mine")
    (dest / "v2" / "README").write_text("mine too")
    nginx = Nginx(dest, tmp_path / "nginx", free_port())
    listen = ("--listen", f"127.0.0.1:{nginx.port}")
    first = _summary(exported(dest, server.data_dir, *listen))
    assert first["linked"] == 5 and first["removed"] == 0
    again = _summary(exported(dest, server.data_dir, *listen))
    assert again["written"] == again["linked"] == again["removed"] == 0
    nginx.start()
    try:
        host = nginx.host
        # Delete a tag (and its manifest) in the registry: the re-export removes them.
        assert client.delete(f"/v2/inc/app/manifests/{two.digest}").status_code == 202
        removed = _summary(exported(dest, server.data_dir, *listen))
        # by tag, by digest, and its config and layer (no manifest exported names them now)
        assert removed["removed"] == 4 and removed["linked"] == 0
        assert not (dest / "v2/inc/app/manifests/two").exists()
        assert not any((dest / "v2/inc/app/blobs" / sha256(b)).exists() for b in two.blobs)
        nginx.reload()
        assert httpx.get(f"{nginx.url}/v2/inc/app/tags/list").json()["tags"] == ["one"]
        gone = run(skopeo, "inspect", "--tls-verify=false", f"docker://{host}/inc/app:two",
                   check=False)  # fmt: skip
        assert gone.returncode != 0 and "manifest unknown" in gone.stderr.lower()
        # A new push: only its files are added.
        three = make_image(2, seed="inc-3")
        push_image(client, "inc/app", three, "three")
        added = _summary(exported(dest, server.data_dir, *listen))
        assert added["linked"] == 3 and added["removed"] == 0
        # manifest by tag and by digest, tags/list, nginx.conf, Caddyfile
        assert added["written"] == 5
        nginx.reload("/v2/inc/app/manifests/three")
        inspect = run(skopeo, "inspect", "--tls-verify=false", f"docker://{host}/inc/app:three")
        assert json.loads(inspect.stdout)["Digest"] == three.digest
        assert (dest / "index.html").read_text() == "mine"
        assert (dest / "v2" / "README").read_text() == "mine too"

        # Tampered blob: skopeo refuses it.
        layer = dest / "v2/inc/app/blobs" / sha256(one.blobs[1])
        _replace(layer, b"x" * len(one.blobs[1]))
        bad = run(skopeo, "copy", "--src-tls-verify=false", f"docker://{host}/inc/app:one",
                  f"dir:{tmp_path / 'bad'}", check=False)  # fmt: skip
        assert bad.returncode != 0 and "digest" in bad.stderr.lower(), bad.stderr
        # Tampered manifest by digest: refused too.
        by_digest = dest / "v2/inc/app/manifests" / one.digest
        _replace(by_digest, one.manifest + b"\n")
        bad = run(skopeo, "inspect", "--tls-verify=false", f"docker://{host}/inc/app@{one.digest}",
                  check=False)  # fmt: skip
        assert bad.returncode != 0 and "digest" in bad.stderr.lower(), bad.stderr
        # The store is untouched, and the next export repairs both files.
        repaired = _summary(exported(dest, server.data_dir, *listen))
        assert repaired["linked"] == 1 and repaired["written"] == 1
        run(skopeo, "copy", "--src-tls-verify=false", f"docker://{host}/inc/app@{one.digest}",
            f"dir:{tmp_path / 'good'}")  # fmt: skip
    finally:
        nginx.stop()


def test_repository_patterns_select_and_unselect(
    server: ServerProcess, client: httpx.Client, tmp_path: Path
) -> None:
    push_image(client, "keep/app", make_image(1, seed="pat-1"), "v1")
    push_image(client, "drop/app", make_image(1, seed="pat-2"), "v1")
    dest = tmp_path / "site"
    exported(dest, server.data_dir)
    assert (dest / "v2/drop/app/tags/list").exists()
    out = _summary(exported(dest, server.data_dir, "--repository", "keep/*"))
    assert out["removed"] >= 4
    assert not (dest / "v2/drop").exists()
    assert json.loads((dest / "v2/_catalog").read_text()) == {"repositories": ["keep/app"]}


def test_hostile_targets_are_refused(server: ServerProcess, client: httpx.Client,
                                     tmp_path: Path) -> None:  # fmt: skip
    push_image(client, "h/app", make_image(1, seed="hostile"), "v1")
    inside = export(server.data_dir / "public", server.data_dir)
    assert inside.returncode == 2 and "inside the data dir" in inside.stderr
    assert not (server.data_dir / "public").exists()
    around = export(server.data_dir.parent, server.data_dir)
    assert around.returncode == 2 and "would publish its keys" in around.stderr
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert export(a_file, server.data_dir).returncode == 2
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / ".trustyard-export.json").write_text("not json")
    refused = export(odd, server.data_dir)
    assert refused.returncode == 2 and "not an export record" in refused.stderr
    assert (odd / ".trustyard-export.json").read_text() == "not json"
    evil = export(tmp_path / "www", server.data_dir, "--listen", "80; include /etc/shadow")
    assert evil.returncode == 2 and "is not [host:]port" in evil.stderr
    assert not (tmp_path / "www").exists()


@pytest.mark.needs_notary
def test_signatures_verify_offline_through_the_export(tmp_path: Path) -> None:
    """Simple signatures through the lookaside and registries.d snippet; Notary TUF files at
    the Notary API paths for `trustyard trust verify` and the notary client. The GUN names the
    static host, where clients pull from."""
    skopeo = require("skopeo")
    srv = ServerProcess(tmp_path / "data").start()
    dest, port = tmp_path / "site", free_port()
    nginx = Nginx(dest, tmp_path / "nginx", port)
    static = ServerProcess(tmp_path / "unused", port=port)  # the static host, for the trust tools
    key = make_key(Path(tempfile.mkdtemp(prefix="ty-gpg-")), "signer")
    args = ("--listen", f"127.0.0.1:{port}", "--signatures", "--base-url", nginx.url)
    try:
        env = client_env(tmp_path, key)
        image = make_image(1, seed="exp-signed")
        src = tmp_path / "src"
        write_layout(src, {"v1": image})
        run(skopeo, "copy", "--policy", accept_all(tmp_path / "any.json"),
            "--dest-tls-verify=false", "--sign-by", key.fingerprint, f"oci:{src}:v1",
            f"docker://{srv.host}/sig/app:v1", env=env)  # fmt: skip
        exported(dest, srv.data_dir, *args)
        sig = dest / f"sigstore/sig/app@sha256={image.digest.split(':')[1]}/signature-1"
        assert sig.exists()
        snippet = (dest / "registries.d/trustyard.yaml").read_text()
        assert f"{nginx.host}:" in snippet and f"lookaside: {nginx.url}/sigstore" in snippet
        nginx.start()

        # The signature names the registry it was pushed to; the export is a mirror of it.
        strict = tmp_path / "strict.json"
        requirement = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key.public),
                       "signedIdentity": {"type": "remapIdentity", "prefix": nginx.host,
                                          "signedPrefix": srv.host}}  # fmt: skip
        strict.write_text(json.dumps({
            "default": [{"type": "reject"}],
            "transports": {"docker": {f"{nginx.host}/sig": [requirement]},
                           "dir": {"": [{"type": "insecureAcceptAnything"}]}},
        }))  # fmt: skip
        pull = (skopeo, "copy", "--policy", strict, "--registries.d", dest / "registries.d",
                "--src-tls-verify=false", f"docker://{nginx.host}/sig/app:v1")  # fmt: skip
        run(*pull, f"dir:{tmp_path / 'ok'}", env=env)
        assert (tmp_path / "ok" / "manifest.json").read_bytes() == image.manifest

        # Notary: sign the tag the static host serves, under the static host's GUN.
        gun, owner = f"{nginx.host}/sig/app", tmp_path / "owner"
        trust(srv, owner, "init", gun, "--server-managed-snapshot")
        # A delegation signs the tag: its file lives at targets/releases.json, one level down.
        alice = tmp_path / "alice"
        trust(srv, alice, "key", "generate", "alice", "-o", str(tmp_path))
        trust(srv, owner, "delegation", "add", gun, "releases", "--all-paths",
              "--key", str(tmp_path / "alice.crt"))  # fmt: skip
        assert "targets/releases" in trust(srv, alice, "sign", f"{gun}:v1")
        done = exported(dest, srv.data_dir, *args)
        assert "1 trust GUNs" in done
        tuf = dest / "v2" / gun / "_trust" / "tuf"
        assert {"root.json", "targets.json", "snapshot.json", "timestamp.json", "1.root.json"} <= {
            p.name for p in tuf.iterdir()
        }
        assert (tuf / "targets" / "releases.json").exists()
        nginx.reload()
        out = trust(static, tmp_path / "reader", "verify", f"{gun}:v1")
        assert image.digest in out and "targets/releases" in out
        listed = notary(static, tmp_path / "notary", "list", gun)
        assert image.digest.split(":")[1] in listed

        # Tampered files are refused by each verifier.
        _replace(sig, sig.read_bytes()[:-8] + b"\x00" * 8)
        refused = run(*pull, f"dir:{tmp_path / 'no'}", env=env, check=False)
        assert refused.returncode != 0 and "rejected" in refused.stderr, refused.stderr
        for targets in tuf.glob("targets/releases*.json"):  # by name and by hash (notary's)
            _replace(targets, targets.read_bytes().replace(b'"v1"', b'"v9"'))
        out = trust(static, tmp_path / "reader2", "verify", f"{gun}:v1", ok=False)
        notary(static, tmp_path / "notary2", "list", gun, ok=False)
    finally:
        nginx.stop()
        srv.stop()
        stop_agent(key)
        shutil.rmtree(key.home.parent, ignore_errors=True)


def test_blobs_in_s3_are_streamed_into_the_export(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str
) -> None:
    config = tmp_path / "s3.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nstorage_backend = "s3"\n[s3]\n'
        f'bucket = "{s3_bucket}"\nendpoint_url = "{s3_server.endpoint}"\n'
        f'access_key = "{ACCESS_KEY}"\nsecret_key = "{SECRET_KEY}"\nredirect = false\n'
    )
    srv = ServerProcess(tmp_path / "data", extra_args=["--config", str(config)]).start()
    try:
        image = make_image(2, seed="s3-export")
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            push_image(c, "s3/app", image, "v1")
        dest = tmp_path / "site"
        out = trustyard("export", "static", str(dest), "--config", str(config))
        assert out.returncode == 0, out.stderr
        first = _summary(out.stdout)
        assert first["copied"] == 3 and first["linked"] == 0
        for blob in image.blobs:
            assert (dest / "v2/s3/app/blobs" / sha256(blob)).read_bytes() == blob
        again = _summary(trustyard("export", "static", str(dest), "--config", str(config)).stdout)
        assert again["copied"] == again["written"] == 0
    finally:
        srv.stop()
