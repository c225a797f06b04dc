"""A throwaway GPG key in a private GNUPGHOME, and hand-made simple signatures for bad-input tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class GpgKey:
    home: Path
    fingerprint: str
    public: Path  # binary export, as policy.json keyPath wants it

    @property
    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.home)}

    def sign(self, payload: bytes) -> bytes:
        """`gpg --sign` (binary, compressed): the same shape skopeo --sign-by makes."""
        out = subprocess.run(
            [gpg(), "--batch", "--yes", "--local-user", self.fingerprint, "--sign"],
            input=payload,
            capture_output=True,
            env={**os.environ, **self.env},
            timeout=60,
            check=True,
        )
        return out.stdout


def gpg() -> str:
    path = shutil.which("gpg")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("gpg is not installed; .ci/run must install it")
        pytest.skip("gpg is not installed (scripts/install-deps.sh installs gnupg)")
    return path


def make_key(root: Path, name: str) -> GpgKey:
    """An ed25519 signing key without passphrase, in its own GNUPGHOME (short path for the agent)."""
    home = root / "gnupg"
    home.mkdir(mode=0o700, parents=True)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(
        [
            gpg(),
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            f"{name} <{name}@example.com>",
            "ed25519",
            "sign",
            "never",
        ],
        capture_output=True,
        env=env,
        timeout=120,
        check=True,
    )
    listing = subprocess.run(
        [gpg(), "--batch", "--with-colons", "--list-secret-keys"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    public = root / f"{name}.gpg"
    public.write_bytes(
        subprocess.run(
            [gpg(), "--batch", "--export", fingerprint],
            capture_output=True,
            env=env,
            timeout=60,
            check=True,
        ).stdout
    )
    return GpgKey(home, fingerprint, public)


def stop_agent(key: GpgKey) -> None:
    subprocess.run(
        ["gpgconf", "--kill", "gpg-agent"],
        env={**os.environ, **key.env},
        capture_output=True,
        timeout=30,
        check=False,
    )


def atomic_payload(reference: str, digest: str, **critical_extra: Any) -> bytes:
    critical: dict[str, Any] = {
        "identity": {"docker-reference": reference},
        "image": {"docker-manifest-digest": digest},
        "type": "atomic container signature",
        **critical_extra,
    }
    return json.dumps({"critical": critical, "optional": {"creator": "test"}}).encode()
