"""`trustyard serve` with a setting it cannot use: one clear line and exit 2, before any worker.

Before the preflight, a bad key file or bundle raised in each worker's start-up: a traceback per
worker, then Granian's "Unexpected exit from worker", and no answer on the port.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.integration.server import free_port


def _serve(tmp_path: Path, toml: str, *extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "trustyard.toml"
    config.write_text(toml)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "trustyard",
            "serve",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "data"),
            "--config",
            str(config),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRUSTYARD")},
    )


def _private_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def _assert_one_clear_line(out: subprocess.CompletedProcess[str], *words: str) -> None:
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    assert "Traceback" not in out.stderr and "Unexpected exit" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("error: cannot start:")]
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_missing_signing_key_file(tmp_path: Path) -> None:
    out = _serve(
        tmp_path,
        '[auth]\nmode = "token"\n[auth.token]\n'
        f'signing_key = "{tmp_path}/nope.pem"\nsigning_cert = "{tmp_path}/nope.crt"\n',
    )
    _assert_one_clear_line(out, "No such file", "nope.pem")


def test_garbage_root_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_text("this is not a certificate\n")
    out = _serve(tmp_path, f'[auth]\nmode = "token"\n[auth.token]\nrootcertbundle = "{bundle}"\n')
    _assert_one_clear_line(out, "rootcertbundle", str(bundle))


def test_signing_key_that_is_not_a_key(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    junk.chmod(0o600)
    out = _serve(
        tmp_path,
        f'[auth]\nmode = "token"\n[auth.token]\nsigning_key = "{junk}"\nsigning_cert = "{junk}"\n',
    )
    _assert_one_clear_line(out, str(junk), "private key")


def test_certificate_file_that_is_a_key(tmp_path: Path) -> None:
    key = _private_key(tmp_path / "key.pem")
    out = _serve(
        tmp_path,
        f'[auth]\nmode = "token"\n[auth.token]\nsigning_key = "{key}"\nsigning_cert = "{key}"\n',
        "--workers",
        "2",
    )
    _assert_one_clear_line(out, str(key))
