"""The CLI contract: version, configuration errors stated plainly, env and file config."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.integration.server import ServerProcess


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trustyard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")},
            **(env or {}),
        },
    )


def test_version() -> None:
    out = run("--version")
    assert out.returncode == 0 and out.stdout.startswith("trustyard ")


def test_bad_config_value_is_one_clear_line(tmp_path) -> None:
    out = run("gc", "--data-dir", str(tmp_path), env={"TRUSTYARD_MAX_MANIFEST_BYTES": "lots"})
    assert out.returncode == 2
    assert "max_manifest_bytes" in out.stderr and "Traceback" not in out.stderr


def test_unknown_config_key_and_bad_toml(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("delete_enabeld = false\n")
    out = run("gc", "--config", str(cfg))
    assert out.returncode == 2 and "delete_enabeld" in out.stderr
    cfg.write_text("this is = = not toml")
    out = run("gc", "--config", str(cfg))
    assert out.returncode == 2 and "not valid TOML" in out.stderr
    out = run("gc", "--config", str(tmp_path / "missing.toml"))
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_config_file_and_env_precedence(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("delete_enabled = false\nmax_manifest_bytes = 2048\n")
    srv = ServerProcess(
        tmp_path / "data",
        extra_args=["--config", str(cfg)],
        extra_env={"TRUSTYARD_MAX_MANIFEST_BYTES": "4096"},
    ).start()
    try:
        r = httpx.delete(f"{srv.url}/v2/x/manifests/latest")
        assert r.status_code == 405  # from the file
        body = b'{"schemaVersion":2,"pad":"' + b"x" * 3000 + b'"}'
        r = httpx.put(
            f"{srv.url}/v2/x/manifests/v1",
            content=body,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert r.status_code == 400  # 3 KB passes the env limit (4096) and fails as a manifest
        r = httpx.put(
            f"{srv.url}/v2/x/manifests/v1",
            content=body + b" " * 2000,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert r.status_code == 413
    finally:
        srv.stop()


def test_tls_cert_without_key_is_refused(tmp_path) -> None:
    out = run(
        "serve", "--data-dir", str(tmp_path), "--tls-cert", str(tmp_path / "c.pem"), "--port", "0"
    )
    assert out.returncode != 0 and "--tls-key" in out.stderr


def test_serves_https(tmp_path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    srv = ServerProcess(tmp_path / "data", tls=(cert, key)).start()
    try:
        r = httpx.get(f"{srv.url}/v2/", verify=srv.verify)
        assert srv.url.startswith("https://") and r.status_code == 200
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    finally:
        srv.stop()
