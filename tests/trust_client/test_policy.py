"""The policy framework in-process: rules, modes, protected tags, `annotations` and `any-of`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from trustyard.crypto.ecdsa import FileKeySigner, generate_private_key, public_key_to_der
from trustyard.metadata.base import ManifestRecord
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.registry.policy import (
    KINDS,
    Decision,
    PolicyConfigError,
    PolicyContext,
    build_policy,
    register_kind,
)
from trustyard.signing.chain import endorse_vendor_key
from trustyard.signing.image import sign_manifest

CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"diff_ids": []}}).encode()
CONFIG_DIGEST = Digest("sha256", hashlib.sha256(CONFIG).hexdigest())


def manifest(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": str(CONFIG_DIGEST),
            "size": len(CONFIG),
        },
        "layers": [],
    }
    if annotations:
        doc["annotations"] = annotations
    return doc


def record(doc: dict[str, Any]) -> ManifestRecord:
    body = json.dumps(doc).encode()
    digest = Digest("sha256", hashlib.sha256(body).hexdigest())
    return ManifestRecord("devices/app", digest, doc["mediaType"], len(body), body)


async def read_blob(digest: Digest, limit: int) -> bytes | None:
    return CONFIG if digest == CONFIG_DIGEST else None


async def no_manifest(repository: str, digest: Digest) -> ManifestRecord | None:
    return None


CTX = PolicyContext(read_blob, no_manifest)


@pytest.fixture
def root_ca(tmp_path: Path) -> tuple[FileKeySigner, Path]:
    root = FileKeySigner(generate_private_key())
    path = tmp_path / "root-ca.pub"
    path.write_bytes(root.public_key_der())
    return root, path


def signed(root: FileKeySigner) -> ManifestRecord:
    vendor_key = generate_private_key()
    vendor = FileKeySigner(vendor_key)
    endorsement = endorse_vendor_key(root, public_key_to_der(vendor_key.public_key()))
    doc, _, _ = sign_manifest(manifest(), hashlib.sha384(CONFIG).digest(), vendor, endorsement)
    return record(doc)


def rules(path: Path, mode: str = "enforce", **extra: Any) -> list[dict[str, Any]]:
    require = {"kind": "annotations", "root_ca_pub": str(path)}
    return [
        {
            "name": "devices",
            "repositories": ["devices/*"],
            "mode": mode,
            "require": require,
            **extra,
        }
    ]


async def test_enforce_refuses_unsigned_and_names_the_policy(
    root_ca: tuple[FileKeySigner, Path],
) -> None:
    root, path = root_ca
    policy = build_policy(rules(path), CTX)
    with capture_logs() as logs, pytest.raises(RegistryError) as err:
        await policy.on_pull("devices/app", "v1", record(manifest()))
    assert err.value.code is ErrorCode.DENIED and "'devices'" in str(err.value)
    assert logs[-1]["event"] == "policy_decision" and logs[-1]["allowed"] is False
    await policy.on_pull("devices/app", "v1", signed(root))  # a signed image passes
    await policy.on_pull("other/app", "v1", record(manifest()))  # no rule: not checked


async def test_other_root_ca_and_tampered_config_are_refused(
    tmp_path: Path, root_ca: tuple[FileKeySigner, Path]
) -> None:
    _, path = root_ca
    policy = build_policy(rules(path), CTX)
    stranger = FileKeySigner(generate_private_key())
    with pytest.raises(RegistryError, match=r"not endorsed by this root CA|no signature"):
        await policy.on_pull("devices/app", "v1", signed(stranger))

    async def altered(digest: Digest, limit: int) -> bytes | None:
        return CONFIG + b" "

    tampered = build_policy(rules(path), PolicyContext(altered, no_manifest))
    with pytest.raises(RegistryError, match="config"):
        await tampered.on_pull("devices/app", "v1", signed(FileKeySigner(generate_private_key())))


async def test_warn_mode_logs_and_lets_through(root_ca: tuple[FileKeySigner, Path]) -> None:
    _, path = root_ca
    policy = build_policy(rules(path, mode="warn"), CTX)
    with capture_logs() as logs:
        await policy.on_pull("devices/app", "v1", record(manifest()))
    assert logs[-1]["allowed"] is False and logs[-1]["mode"] == "warn"


async def test_protected_tags_on_push(root_ca: tuple[FileKeySigner, Path]) -> None:
    root, path = root_ca
    policy = build_policy(rules(path, protect_tags=["release-*"]), CTX)
    await policy.on_push("devices/app", ["dev"], record(manifest()))  # unprotected tag
    with pytest.raises(RegistryError, match="push of devices/app:release-1"):
        await policy.on_push("devices/app", ["release-1"], record(manifest()))
    await policy.on_push("devices/app", ["release-1"], signed(root))


async def test_any_of_and_plugged_in_kind(root_ca: tuple[FileKeySigner, Path]) -> None:
    _, path = root_ca

    class Always:
        kind = "always"

        def __init__(self, spec: dict[str, Any], ctx: PolicyContext) -> None:
            self.ok = bool(spec.get("ok"))

        async def verify(self, repository: str, rec: ManifestRecord, tag: str | None) -> Decision:
            return Decision(self.ok, "by test", "tester")

    register_kind("always", Always)
    try:
        spec = {
            "kind": "any-of",
            "of": [
                {"kind": "annotations", "root_ca_pub": str(path)},
                {"kind": "always", "ok": True},
            ],
        }
        policy = build_policy([{"name": "p", "require": spec}], CTX)
        with capture_logs() as logs:
            await policy.on_pull("x/y", "v1", record(manifest()))
        assert logs[-1]["allowed"] is True and logs[-1]["signer"] == "tester"
        spec["of"][1]["ok"] = False
        refusing = build_policy([{"name": "p", "require": spec}], CTX)
        with pytest.raises(RegistryError, match=r"annotations: .* \| always: by test"):
            await refusing.on_pull("x/y", "v1", record(manifest()))
    finally:
        del KINDS["always"]


def test_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(PolicyConfigError, match="unknown signature kind 'nope'"):
        build_policy([{"name": "r", "require": {"kind": "nope"}}], CTX)
    with pytest.raises(PolicyConfigError, match="root_ca_pub"):
        build_policy([{"name": "r", "require": {"kind": "annotations"}}], CTX)
    with pytest.raises(PolicyConfigError, match="no trust store"):
        build_policy([{"name": "r", "require": {"kind": "notary"}}], CTX)
