"""Helpers for the signing tests: the CLI runner, real tools, tree hashes, layouts."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import Result
from typer.testing import CliRunner

from trustyard.cli.app import app

for tool in ("openssl", "umoci", "skopeo"):
    if shutil.which(tool) is None:  # pragma: no cover - the environment provides them
        raise RuntimeError(f"tests/signing need {tool} on PATH")


def run(*args: str | os.PathLike[str]) -> Result:
    """`trustyard sign ARGS…` in-process; stdout and stderr both land in result.output."""
    return CliRunner().invoke(app, ["sign", *map(str, args)])


def sh(*args: str | os.PathLike[str], input: bytes | None = None) -> bytes:
    """Run a real tool (openssl, umoci, skopeo); fail the test loudly if it fails."""
    proc = subprocess.run(list(map(str, args)), input=input, capture_output=True)
    assert proc.returncode == 0, f"{args[0]} failed: {proc.stderr.decode(errors='replace')}"
    return proc.stdout


def tree_hash(root: Path) -> str:
    """Hash of every path, type and content under root (hidden files too)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            h.update(f"L {rel} {os.readlink(path)}\n".encode())
        elif path.is_dir():
            h.update(f"D {rel}\n".encode())
        else:
            h.update(f"F {rel} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


@dataclass
class Keys:
    """An ir-sign key set made by openssl exactly as seed 004 describes."""

    dir: Path

    def __getattr__(self, name: str) -> Path:
        return self.dir / name.replace("_", ".")


def openssl_keypair(directory: Path, name: str, curve: str = "secp384r1") -> None:
    prv, pub = directory / f"{name}.prv", directory / f"{name}.pub"
    sh("openssl", "ecparam", "-name", curve, "-genkey", "-noout", "-out", prv, "-outform", "DER")
    sh("openssl", "ec", "-in", prv, "-inform", "DER", "-pubout", "-out", pub, "-outform", "DER")


def openssl_sign(key: Path, file: Path, out: Path) -> None:
    sh("openssl", "dgst", "-sha384", "-sign", key, "-keyform", "DER", "-out", out, file)


def umoci_image(layout: Path, tag: str, content: str, tmp: Path) -> None:
    """Add image `tag` with one file to an OCI layout, creating the layout if needed."""
    if not (layout / "index.json").exists():
        sh("umoci", "init", "--layout", layout)
    sh("umoci", "new", "--image", f"{layout}:{tag}")
    src = tmp / f"content-{tag}.txt"
    src.write_text(content)
    sh("umoci", "insert", "--rootless", "--image", f"{layout}:{tag}", src, f"/{tag}.txt")


def read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def manifest_of(layout: Path, tag: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(descriptor in index.json, parsed manifest) for a tag."""
    for desc in read_json(layout / "index.json")["manifests"]:
        if desc.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            blob = layout / "blobs" / "sha256" / desc["digest"].split(":")[1]
            return desc, read_json(blob)
    raise AssertionError(f"no tag {tag} in {layout}")


def blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / digest.replace(":", "/")


Unchanged = Callable[[], None]
