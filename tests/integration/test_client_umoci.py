"""An image built with umoci, pushed and pulled with skopeo, unpacked again with umoci."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.integration.clienttools import ALL_MANIFESTS, read_layout, run
from tests.integration.conftest import require
from tests.integration.images import OCI_MANIFEST, sha256
from tests.integration.server import ServerProcess

pytestmark = [pytest.mark.needs_skopeo]


def test_umoci_image_round_trip(shared_server: ServerProcess, tmp_path: Path) -> None:
    umoci = require("umoci")
    skopeo = require("skopeo")
    layout = tmp_path / "layout"
    bundle = tmp_path / "bundle"
    run(umoci, "init", "--layout", layout)
    run(umoci, "new", "--image", f"{layout}:v1")
    run(umoci, "unpack", "--image", f"{layout}:v1", bundle)
    (bundle / "rootfs" / "etc").mkdir(parents=True, exist_ok=True)
    (bundle / "rootfs" / "etc" / "hello").write_text("hello from umoci\n")
    (bundle / "rootfs" / "bin").mkdir(exist_ok=True)
    (bundle / "rootfs" / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    (bundle / "rootfs" / "bin" / "tool").chmod(0o755)
    run(umoci, "repack", "--image", f"{layout}:v1", bundle)
    run(
        umoci, "config", "--image", f"{layout}:v1",
        "--config.cmd", "/bin/tool", "--architecture", "amd64", "--os", "linux",
    )  # fmt: skip
    built = read_layout(layout, "v1")
    ref = f"docker://{shared_server.host}/umoci/hello:v1"

    run(skopeo, "copy", "--dest-tls-verify=false", f"oci:{layout}:v1", ref)

    r = httpx.get(
        f"{shared_server.url}/v2/umoci/hello/manifests/v1",
        headers={"Accept": ALL_MANIFESTS},
        timeout=30,
        follow_redirects=True,
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == OCI_MANIFEST
    assert r.content == built.manifest_bytes
    assert r.headers["docker-content-digest"] == built.manifest_digest

    out = tmp_path / "out"
    run(skopeo, "copy", "--src-tls-verify=false", ref, f"oci:{out}:v1")
    pulled = read_layout(out, "v1")
    assert pulled.manifest_digest == built.manifest_digest
    assert pulled.config_digest == built.config_digest
    assert pulled.layer_digests == built.layer_digests
    assert json.loads(pulled.config_bytes)["config"]["Cmd"] == ["/bin/tool"]

    unpacked = tmp_path / "unpacked"
    run(umoci, "unpack", "--image", f"{out}:v1", unpacked)
    assert (unpacked / "rootfs" / "etc" / "hello").read_text() == "hello from umoci\n"
    tool = unpacked / "rootfs" / "bin" / "tool"
    assert tool.read_bytes() == b"#!/bin/sh\necho tool\n"
    assert tool.stat().st_mode & 0o777 == 0o755
    assert sha256(r.content) == built.manifest_digest
