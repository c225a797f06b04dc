"""Verified admission (issue 22): an upstream trustyard and a local one, both real apps in-process.

The upstream serves images with cosign signatures (tag scheme and referrers) and simple
signatures (extension API); the admission judges with the policy rules before anything is
written locally, stores the signature material when admitted, and the local registry's own
policy then verifies the cached image with the upstream gone.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.inprocess.conftest import BASE_URL, fresh_data_dir, make_settings, serve
from tests.inprocess.helpers import make_image, push_blob, push_image, put_manifest
from tests.signatures.gpg import GpgKey, atomic_payload, make_key, stop_agent
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.registry.mirror_admission import (
    MirrorAdmission,
    MirrorNames,
    identity_aliases,
    manifest_record,
    staged_context,
)
from trustyard.registry.policy import build_policy
from trustyard.registry.policy_signatures import KINDS_REGISTERED  # noqa: F401 (registers them)
from trustyard.registry.policy_sources import RegistrySources
from trustyard.remote.upstream import UpstreamRegistry
from trustyard.remote.upstream_errors import UpstreamUnavailable
from trustyard.remote.upstream_signatures import HttpSignatureSource
from trustyard.signing import cosign

UPSTREAM_HOST = "upstream.example"
MIRRORS = [MirrorNames("hub", "library")]


@dataclass
class World:
    upstream: httpx.AsyncClient
    local: httpx.AsyncClient
    local_app_state: Any
    key: ec.EllipticCurvePrivateKey
    pub: Path
    other: ec.EllipticCurvePrivateKey


@pytest.fixture(scope="module")
def gpg_keys() -> Iterator[tuple[GpgKey, GpgKey]]:
    root = Path(tempfile.mkdtemp(prefix="ty-gpg-"))
    a, b = make_key(root / "a", "signer"), make_key(root / "b", "other")
    yield a, b
    stop_agent(a)
    stop_agent(b)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def world(tmp_path: Path, migrated_database: Path) -> AsyncIterator[World]:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    pub = tmp_path / "cosign.pub"
    pub.write_bytes(cosign.public_pem(key.public_key()))
    up = make_settings(fresh_data_dir(tmp_path / "up", migrated_database))
    local = make_settings(fresh_data_dir(tmp_path / "local", migrated_database))
    async with serve(up) as upstream, serve(local) as local_client:
        transport = local_client._transport
        assert isinstance(transport, httpx.ASGITransport)
        state = transport.app.state  # type: ignore[attr-defined]
        yield World(upstream, local_client, state, key, pub, other)


async def push_signed(
    w: World, name: str, seed: str, signer: ec.EllipticCurvePrivateKey | None, shape: str = "tag"
) -> str:
    image = make_image(seed)
    digest = await push_image(w.upstream, name, image, "v1")
    if signer is None:
        return digest
    identity = f"{UPSTREAM_HOST}/{name}"
    subject = {"mediaType": image.media_type, "digest": digest, "size": len(image.manifest)}
    s = cosign.KeySigner(signer)
    artifact = (
        cosign.tag_artifact(s, identity, digest, None)
        if shape == "tag"
        else cosign.referrer_artifact(s, identity, subject)
    )
    for blob in artifact.blobs:
        await push_blob(w.upstream, name, blob)
    r = await put_manifest(
        w.upstream, name, artifact.tag or artifact.digest, artifact.manifest, cosign.OCI_MANIFEST
    )
    assert r.status_code == 201, r.text
    return digest


def signature_source(w: World) -> HttpSignatureSource:
    """The upstream read as the mirror reads it: through its `UpstreamRegistry` client."""
    return HttpSignatureSource(UpstreamRegistry(BASE_URL, transport=w.upstream._transport))


def admission(w: World, rules: list[dict[str, Any]]) -> MirrorAdmission:
    ctx = staged_context(identity_aliases(MIRRORS))
    state = w.local_app_state
    return MirrorAdmission(rules, ctx, state.registry, state.simple_signatures)


async def upstream_record(w: World, name: str, local: str) -> Any:
    r = await w.upstream.get(f"/v2/{name}/manifests/v1", headers={"Accept": cosign.OCI_MANIFEST})
    assert r.status_code == 200
    return manifest_record(local, r.headers["content-type"], r.content)


async def store_image(w: World, local: str, name: str, seed: str) -> None:
    """What the mirror core does after admission: the image itself, cached locally."""
    image = make_image(seed)
    await push_image(w.local, local, image, "v1")


async def local_catalog(w: World) -> list[str]:
    r = await w.local.get("/v2/_catalog")
    assert r.status_code == 200
    repos: list[str] = r.json()["repositories"]
    return repos


def cosign_rule(w: World, mode: str = "enforce") -> list[dict[str, Any]]:
    return [
        {
            "name": "mirrored",
            "repositories": ["hub/*"],
            "mode": mode,
            "require": {"kind": "cosign", "keys": [str(w.pub)]},
        }
    ]


async def offline_verdict(w: World, rules: list[dict[str, Any]], local: str) -> None:
    """The registry's ordinary pull-path policy, over the local stores only (the upstream is
    not consulted: its client is closed first)."""
    await w.upstream.aclose()
    state = w.local_app_state
    sources = RegistrySources(state.registry, state.simple_signatures.store)
    ctx = sources.context(None, None)
    ctx.identity_aliases = identity_aliases(MIRRORS)
    policy = build_policy(rules, ctx)
    record = await state.registry.get_manifest(local, "v1")
    await policy.on_pull(local, "v1", record)


@pytest.mark.parametrize("shape", ["tag", "referrer"])
async def test_cosign_admission_refuses_unsigned_and_foreign_and_admits_signed(
    world: World, shape: str
) -> None:
    w = world
    source = signature_source(w)
    adm = admission(w, cosign_rule(w))

    await push_signed(w, "library/unsigned", "u", None)
    with pytest.raises(RegistryError) as info:
        await adm.admit(
            "hub/unsigned", "library/unsigned", "v1",
            await upstream_record(w, "library/unsigned", "hub/unsigned"), source,
        )  # fmt: skip
    assert info.value.code == ErrorCode.DENIED
    assert "denied by signature policy 'mirrored'" in info.value.message
    assert "no cosign signature" in info.value.message

    await push_signed(w, "library/foreign", "f", w.other, shape)
    with pytest.raises(RegistryError) as info:
        await adm.admit(
            "hub/foreign", "library/foreign", "v1",
            await upstream_record(w, "library/foreign", "hub/foreign"), source,
        )  # fmt: skip
    assert info.value.code == ErrorCode.DENIED
    assert "no cosign signature by a trusted key" in info.value.message
    assert await local_catalog(w) == []  # refusals wrote nothing

    await push_signed(w, "library/good", "g", w.key, shape)
    record = await upstream_record(w, "library/good", "hub/good")
    admitted = await adm.admit("hub/good", "library/good", "v1", record, source)
    assert await local_catalog(w) == []  # the decision itself writes nothing
    await store_image(w, "hub/good", "library/good", "g")
    await admitted.store()
    sig_tag = f"sha256-{record.digest.hex}.sig"
    tags = (await w.local.get("/v2/hub/good/tags/list")).json()["tags"]
    if shape == "tag":
        assert sig_tag in tags
    else:
        refs = (await w.local.get(f"/v2/hub/good/referrers/{record.digest}")).json()
        assert [m["artifactType"] for m in refs["manifests"]] == [cosign.ARTIFACT_SIG]
    await offline_verdict(w, cosign_rule(w), "hub/good")


async def test_identity_of_another_upstream_repository_is_refused(world: World) -> None:
    """A signature made for library/other does not admit the same digest as hub/good."""
    w = world
    image = make_image("x")
    digest = await push_image(w.upstream, "library/good", image, "v1")
    artifact = cosign.tag_artifact(
        cosign.KeySigner(w.key), f"{UPSTREAM_HOST}/library/other", digest, None
    )
    for blob in artifact.blobs:
        await push_blob(w.upstream, "library/good", blob)
    assert artifact.tag is not None
    r = await put_manifest(
        w.upstream, "library/good", artifact.tag, artifact.manifest, cosign.OCI_MANIFEST
    )
    assert r.status_code == 201
    with pytest.raises(RegistryError) as info:
        await admission(w, cosign_rule(w)).admit(
            "hub/good", "library/good", "v1",
            await upstream_record(w, "library/good", "hub/good"), signature_source(w),
        )  # fmt: skip
    assert "names repository library/other, not hub/good" in info.value.message


async def test_warn_mode_admits_unsigned_and_uncovered_repositories_fetch_nothing(
    world: World,
) -> None:
    w = world
    await push_signed(w, "library/unsigned", "u", None)
    record = await upstream_record(w, "library/unsigned", "hub/unsigned")
    source = signature_source(w)
    admitted = await admission(w, cosign_rule(w, "warn")).admit(
        "hub/unsigned", "library/unsigned", "v1", record, source
    )
    assert admitted.stage is not None and admitted.stage.manifests == {}
    uncovered = await admission(w, cosign_rule(w)).admit(
        "other/unsigned", "library/unsigned", "v1", record, source
    )
    assert uncovered.stage is None


async def test_simple_signing_admission_and_offline_reverification(
    world: World, gpg_keys: tuple[GpgKey, GpgKey]
) -> None:
    w = world
    signer, other = gpg_keys
    rules = [
        {
            "name": "mirrored",
            "repositories": ["hub/*"],
            "require": {"kind": "simple-signing", "keys": [str(signer.public)]},
        }
    ]
    source = signature_source(w)
    adm = admission(w, rules)
    for name, key in (("library/foreign", other), ("library/good", signer)):
        digest = await push_image(w.upstream, name, make_image(name), "v1")
        content = key.sign(atomic_payload(f"{UPSTREAM_HOST}/{name}:v1", digest))
        body = {
            "schemaVersion": 2,
            "type": "atomic",
            "name": f"{digest}@up1",
            "content": base64.b64encode(content).decode(),
        }
        r = await w.upstream.put(
            f"/extensions/v2/{name}/signatures/{digest}", content=json.dumps(body)
        )
        assert r.status_code in (200, 201), r.text

    with pytest.raises(RegistryError) as info:
        await adm.admit(
            "hub/foreign", "library/foreign", "v1",
            await upstream_record(w, "library/foreign", "hub/foreign"), source,
        )  # fmt: skip
    assert "not among the trusted keys" in info.value.message
    assert await local_catalog(w) == []

    record = await upstream_record(w, "library/good", "hub/good")
    admitted = await adm.admit("hub/good", "library/good", "v1", record, source)
    await push_image(w.local, "hub/good", make_image("library/good"), "v1")
    await admitted.store()
    listed = (await w.local.get(f"/extensions/v2/hub/good/signatures/{record.digest}")).json()
    assert len(listed["signatures"]) == 1

    await offline_verdict(w, rules, "hub/good")
    # Without the mirror mapping the stored signature names another repository: refused.
    state = w.local_app_state
    ctx = RegistrySources(state.registry, state.simple_signatures.store).context(None, None)
    with pytest.raises(RegistryError, match="names repository library/good, not hub/good"):
        await build_policy(rules, ctx).on_pull("hub/good", "v1", record)


@pytest.fixture
def lookaside(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A plain web server over a directory: containers' lookaside signature layout."""
    root = tmp_path / "lookaside"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/sigs"
    server.shutdown()
    server.server_close()


async def test_simple_signatures_from_a_lookaside_url(
    world: World, gpg_keys: tuple[GpgKey, GpgKey], lookaside: tuple[Path, str]
) -> None:
    """The upstream has no signatures of its own; they sit at `<lookaside>/<repo>@sha256=<hex>/
    signature-N`, are admitted from there and cached locally."""
    w = world
    signer, other = gpg_keys
    root, url = lookaside
    rules = [
        {
            "name": "mirrored",
            "repositories": ["hub/*"],
            "require": {"kind": "simple-signing", "keys": [str(signer.public)]},
        }
    ]
    digest = await push_image(w.upstream, "library/ls", make_image("ls"), "v1")
    record = await upstream_record(w, "library/ls", "hub/ls")
    upstream = UpstreamRegistry(BASE_URL, transport=w.upstream._transport)
    source = HttpSignatureSource(upstream, lookaside=url)
    adm = admission(w, rules)
    with pytest.raises(RegistryError, match="no simple signature of"):
        await adm.admit("hub/ls", "library/ls", "v1", record, source)

    folder = root / "sigs" / f"library/ls@sha256={digest.split(':')[1]}"
    folder.mkdir(parents=True)
    (folder / "signature-1").write_bytes(
        other.sign(atomic_payload(f"{UPSTREAM_HOST}/library/ls:v1", digest))
    )
    with pytest.raises(RegistryError, match="not among the trusted keys"):
        await adm.admit("hub/ls", "library/ls", "v1", record, source)
    (folder / "signature-2").write_bytes(
        signer.sign(atomic_payload(f"{UPSTREAM_HOST}/library/ls:v1", digest))
    )
    admitted = await adm.admit("hub/ls", "library/ls", "v1", record, source)
    assert admitted.stage is not None and len(admitted.stage.simple[record.digest]) == 2
    await push_image(w.local, "hub/ls", make_image("ls"), "v1")
    await admitted.store()
    listed = (await w.local.get(f"/extensions/v2/hub/ls/signatures/{digest}")).json()
    assert len(listed["signatures"]) == 2
    shutil.rmtree(root / "sigs")  # the lookaside is gone too: the cache verifies on its own
    await offline_verdict(w, rules, "hub/ls")


async def test_upstream_unreachable_during_the_check_refuses(world: World) -> None:
    """An upstream that fails while its signatures are read: not admitted, nothing stored, and
    the mirror hears "upstream unavailable" (it serves its cache or 503), not a refusal."""
    w = world
    await push_signed(w, "library/good", "g", w.key)
    record = await upstream_record(w, "library/good", "hub/good")
    dead = HttpSignatureSource(UpstreamRegistry("http://127.0.0.1:9", timeout=2))
    with pytest.raises(UpstreamUnavailable, match=r"upstream http://127\.0\.0\.1:9 failed"):
        await admission(w, cosign_rule(w)).admit("hub/good", "library/good", "v1", record, dead)
    assert await local_catalog(w) == []
