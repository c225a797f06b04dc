"""Real clients through token auth: podman login/push/pull, skopeo, the docker CLI (credentials
in DOCKER_CONFIG/config.json + `docker manifest inspect`), the oras SDK, and htpasswd mode."""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.auth.integration import AuthServerProcess, add_user, cli, token_server
from tests.integration.clienttools import run
from tests.integration.conftest import require
from tests.integration.images import make_image, push_image, write_layout

oras_provider = pytest.importorskip("oras.provider")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServerProcess]:
    data = tmp_path_factory.mktemp("clients") / "data"
    add_user(data, "alice", "alice-pw")
    add_user(data, "bob", "bob-pw")
    server = token_server(data).start()
    yield server
    server.stop()


@pytest.mark.needs_podman
def test_podman_login_push_pull_and_denied(srv: AuthServerProcess, tmp_path: Path) -> None:
    exe = require("podman")
    runroot = Path(tempfile.mkdtemp(prefix="ty-auth-"))
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{srv.host}"\ninsecure = true\n')
    env = {
        "CONTAINERS_REGISTRIES_CONF": str(conf),
        "TMPDIR": str(tmp_path),
        "REGISTRY_AUTH_FILE": str(tmp_path / "auth.json"),
    }
    base = ["--root", str(tmp_path / "root"), "--runroot", str(runroot), "--storage-driver", "vfs",
            "--cgroup-manager", "cgroupfs", "--events-backend", "file"]  # fmt: skip
    try:
        image = make_image(2, seed="podman-auth")
        src = write_layout(tmp_path / "src", {"v1": image})
        run(exe, *base, "login", "-u", "alice", "-p", "alice-pw", srv.host, env=env)
        auth = json.loads((tmp_path / "auth.json").read_text())
        assert srv.host in auth["auths"]
        image_id = run(exe, *base, "pull", f"oci:{src}:v1", env=env).stdout.strip().splitlines()[-1]
        run(exe, *base, "push", image_id, f"docker://{srv.host}/alice/podman:v1", env=env)
        run(exe, *base, "rmi", "-a", "-f", env=env)
        pulled = run(exe, *base, "pull", f"{srv.host}/alice/podman:v1", env=env).stdout
        assert pulled.strip().splitlines()[-1] == image_id
        denied = run(
            exe,
            *base,
            "push",
            image_id,
            f"docker://{srv.host}/bob/podman:v1",
            env=env,
            check=False,
        )
        assert denied.returncode != 0
        assert "bob/podman: 403 (forbidden)" in denied.stderr.lower()
        bad = run(exe, *base, "login", "-u", "alice", "-p", "nope", srv.host, env=env, check=False)
        assert bad.returncode != 0
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def test_docker_cli_manifest_inspect_with_config_json(
    srv: AuthServerProcess, tmp_path: Path
) -> None:
    exe = require("docker")
    image = make_image(1, seed="docker-auth")
    tok = httpx.get(
        f"{srv.url}/auth/token",
        params={"service": "trustyard", "scope": "repository:alice/dock:pull,push"},
        auth=("alice", "alice-pw"),
    ).json()["token"]
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {tok}"}) as c:
        push_image(c, "alice/dock", image, "v1")
    config = tmp_path / "docker-config"
    config.mkdir()
    cred = base64.b64encode(b"alice:alice-pw").decode()
    (config / "config.json").write_text(json.dumps({"auths": {srv.host: {"auth": cred}}}))
    env = {"DOCKER_CONFIG": str(config)}
    out = run(exe, "manifest", "inspect", "--insecure", f"{srv.host}/alice/dock:v1", env=env)
    assert (
        json.loads(out.stdout)["config"]["digest"]
        == "sha256:" + __import__("hashlib").sha256(image.config).hexdigest()
    )
    (config / "config.json").write_text(json.dumps({"auths": {}}))
    anon = run(
        exe, "manifest", "inspect", "--insecure", f"{srv.host}/alice/dock:v1", env=env, check=False
    )
    assert anon.returncode != 0


def test_oras_sdk_login_push_pull(srv: AuthServerProcess, tmp_path: Path) -> None:
    reg = oras_provider.Registry(hostname=srv.host, insecure=True)
    reg.login(
        username="alice",
        password="alice-pw",
        tls_verify=False,
        config_path=str(tmp_path / "c.json"),
    )
    artifact = tmp_path / "hello.txt"
    artifact.write_bytes(b"hello through token auth")
    target = f"{srv.host}/alice/oras:v1"
    response = reg.push(target=target, files=[str(artifact)], disable_path_validation=True)
    assert response.status_code == 201
    out = tmp_path / "out"
    files = reg.pull(target=target, outdir=str(out))
    assert Path(files[0]).read_bytes() == b"hello through token auth"


def test_htpasswd_mode_with_skopeo(tmp_path: Path) -> None:
    htpasswd = require("htpasswd")
    file = tmp_path / "htpasswd"
    run(htpasswd, "-B", "-b", "-c", file, "carol", "carol-pw")
    server = AuthServerProcess(
        tmp_path / "data",
        extra_env={"TRUSTYARD_AUTH__MODE": "htpasswd", "TRUSTYARD_AUTH__HTPASSWD": str(file)},
    ).start()
    try:
        r = httpx.get(f"{server.url}/v2/")
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Basic realm="trustyard"'
        assert httpx.get(f"{server.url}/v2/", auth=("carol", "wrong")).status_code == 401
        assert httpx.get(f"{server.url}/v2/", auth=("carol", "carol-pw")).status_code == 200
        skopeo = require("skopeo")
        image = make_image(1, seed="htpasswd")
        src = write_layout(tmp_path / "src", {"v1": image})
        run(
            skopeo,
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            "carol:carol-pw",
            f"oci:{src}:v1",
            f"docker://{server.host}/any/repo:v1",
        )
        got = httpx.get(
            f"{server.url}/v2/any/repo/manifests/v1",
            auth=("carol", "carol-pw"),
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert got.status_code == 200 and got.content == image.manifest
        assert "carol-pw" not in server.log()
        cli(server.data_dir, "user", "list")  # the admin CLI works next to a running server
    finally:
        server.stop()
