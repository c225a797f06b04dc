"""Deeply nested JSON through a running server: the spec's 4xx with a clear message, never a 500.

`json.loads` recurses once per level; before the bound a manifest nested 20,000 deep answered 500
(RecursionError). Every endpoint that parses JSON from the network is attacked 20,000 and
1,000,000 deep, with arrays, objects and both mixed; brackets inside strings stay fine.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.integration import add_user, bearer, token_server
from tests.integration.images import OCI_MANIFEST, make_image, push_image, sha256
from tests.integration.server import ServerProcess
from trustyard.signing import cosign

DEPTHS = [20_000, 1_000_000]
MANIFEST_LIMIT = 4 * 1024 * 1024


def arrays(n: int) -> bytes:
    return b"[" * n + b"]" * n


def objects(n: int) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


def mixed(n: int) -> bytes:
    return b'[{"a":' * (n // 2) + b"1" + b"}]" * (n // 2)


def unclosed(n: int) -> bytes:
    return b"[" * n


SHAPES = {"arrays": arrays, "objects": objects, "mixed": mixed, "unclosed": unclosed}


def deep_manifest(n: int) -> bytes:
    """A plausible manifest with the nesting in an annotation-like field."""
    return (
        b'{"schemaVersion":2,"mediaType":"' + OCI_MANIFEST.encode() + b'","config":'
        b'{"mediaType":"x","digest":"sha256:' + b"a" * 64 + b'","size":1},"layers":[],'
        b'"x":' + arrays(n) + b"}"
    )


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("deep") / "data").start()
    yield server
    server.stop()


def _error(r: httpx.Response) -> dict[str, str]:
    assert r.headers["content-type"].startswith("application/json"), r.text[:300]
    entry: dict[str, str] = r.json()["errors"][0]
    return entry


def _still_serves(server: ServerProcess) -> None:
    assert httpx.get(server.url + "/v2/", timeout=10).status_code == 200
    assert "Traceback" not in server.log() and "RecursionError" not in server.log()


# -- manifests ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", DEPTHS)
@pytest.mark.parametrize("shape", SHAPES)
def test_deep_manifest_is_manifest_invalid(srv: ServerProcess, shape: str, n: int) -> None:
    body = SHAPES[shape](n)
    r = httpx.put(
        f"{srv.url}/v2/deep/manifests/latest",
        content=body,
        headers={"Content-Type": OCI_MANIFEST},
        timeout=60,
    )
    if len(body) > MANIFEST_LIMIT:  # a million objects is 6 MB: the size bound answers first
        assert r.status_code == 413 and _error(r)["code"] == "SIZE_INVALID", r.text[:300]
        return
    assert r.status_code == 400, r.text[:300]
    err = _error(r)
    assert err["code"] == "MANIFEST_INVALID"
    assert f"nested {n} levels deep" in err["message"] and "limit is 64" in err["message"], err
    _still_serves(srv)


@pytest.mark.parametrize("n", DEPTHS)
def test_deep_value_inside_a_real_manifest_is_refused(srv: ServerProcess, n: int) -> None:
    r = httpx.put(
        f"{srv.url}/v2/deep/manifests/inner",
        content=deep_manifest(n),
        headers={"Content-Type": OCI_MANIFEST},
        timeout=60,
    )
    assert r.status_code == 400 and _error(r)["code"] == "MANIFEST_INVALID", r.text[:300]
    assert f"nested {n + 1} levels deep" in _error(r)["message"]


def test_brackets_inside_strings_are_fine(srv: ServerProcess) -> None:
    """A manifest whose annotation holds 20,000 `[` (and escaped quotes) is an ordinary push."""
    tricky = '\\"[' * 10_000 + "{" * 10_000
    image = make_image(1, seed="strings", extra={"annotations": {"note": tricky}})
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        push_image(c, "strings", image, "v1")
    r = httpx.get(
        f"{srv.url}/v2/strings/manifests/v1", headers={"Accept": OCI_MANIFEST}, timeout=30
    )
    assert r.status_code == 200 and r.content == image.manifest
    assert json.loads(r.content)["annotations"]["note"] == tricky


def test_nesting_at_the_limit_is_accepted_one_more_is_not(srv: ServerProcess) -> None:
    image = make_image(1, seed="limit")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        push_image(c, "limit", image)
    base = json.loads(image.manifest)

    def nested(levels: int) -> bytes:
        # manifest object (1) + annotations-like field holding `levels - 1` arrays
        doc = dict(base, x="PLACEHOLDER")
        text = json.dumps(doc).replace('"PLACEHOLDER"', "[" * (levels - 1) + "]" * (levels - 1))
        return text.encode()

    ok = httpx.put(
        f"{srv.url}/v2/limit/manifests/ok",
        content=nested(64),
        headers={"Content-Type": OCI_MANIFEST},
        timeout=30,
    )
    assert ok.status_code == 201, ok.text
    over = httpx.put(
        f"{srv.url}/v2/limit/manifests/over",
        content=nested(65),
        headers={"Content-Type": OCI_MANIFEST},
        timeout=30,
    )
    assert over.status_code == 400 and "nested 65 levels deep" in _error(over)["message"]


# -- TUF metadata (Notary's POST of a multipart update) -------------------------------------------
def _multipart(parts: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = "deepboundary1234"
    body = b""
    for role, content in parts.items():
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="{role}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + content
            + b"\r\n"
        )
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("n", DEPTHS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("role", ["root", "targets", "targets/releases"])
def test_deep_tuf_metadata_is_malformed_json(
    srv: ServerProcess, role: str, shape: str, n: int
) -> None:
    body, ctype = _multipart({role: SHAPES[shape](n)})
    r = httpx.post(
        f"{srv.url}/v2/example.com/deep/app/_trust/tuf/",
        content=body,
        headers={"Content-Type": ctype},
        timeout=60,
    )
    assert r.status_code == 400, r.text[:300]
    err = _error(r)
    assert err["code"] == "MALFORMED_JSON" and "nested" in err["message"], err
    _still_serves(srv)


def test_deep_tuf_inside_a_signed_envelope_is_refused(srv: ServerProcess) -> None:
    doc = b'{"signed":{"_type":"Root","x":' + arrays(20_000) + b'},"signatures":[]}'
    body, ctype = _multipart({"root": doc})
    r = httpx.post(
        f"{srv.url}/v2/example.com/deep/env/_trust/tuf/",
        content=body,
        headers={"Content-Type": ctype},
        timeout=60,
    )
    assert r.status_code == 400 and _error(r)["code"] == "MALFORMED_JSON"


# -- the signatures extension ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def pushed(srv: ServerProcess) -> str:
    image = make_image(1, seed="sigs")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        push_image(c, "sigs", image, "v1")
    return image.digest


@pytest.mark.parametrize("shape", SHAPES)
def test_deep_signature_upload_is_refused(srv: ServerProcess, pushed: str, shape: str) -> None:
    r = httpx.put(
        f"{srv.url}/extensions/v2/sigs/signatures/{pushed}",
        content=SHAPES[shape](12_000),  # 20,000 objects would pass the 91 KB upload limit
        timeout=30,
    )
    assert r.status_code == 400, r.text[:300]
    assert _error(r)["code"] == "MANIFEST_INVALID" and "nested" in _error(r)["message"]
    _still_serves(srv)


def test_million_deep_signature_upload_is_too_large(srv: ServerProcess, pushed: str) -> None:
    r = httpx.put(
        f"{srv.url}/extensions/v2/sigs/signatures/{pushed}", content=arrays(1_000_000), timeout=30
    )
    assert r.status_code == 413, r.text[:300]


def test_deep_signature_content_is_refused(srv: ServerProcess, pushed: str) -> None:
    """Well-formed upload whose `content` (the signed message) hides the nesting."""
    body = {
        "schemaVersion": 2,
        "type": "atomic",
        "name": f"{pushed}@" + "0" * 32,
        "content": base64.b64encode(arrays(20_000)).decode(),
    }
    r = httpx.put(
        f"{srv.url}/extensions/v2/sigs/signatures/{pushed}", content=json.dumps(body), timeout=30
    )
    assert r.status_code == 400 and _error(r)["code"] == "MANIFEST_INVALID", r.text[:300]
    _still_serves(srv)


# -- the token endpoint and bearer tokens ---------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def deep_jwt(n: int, where: str) -> str:
    deep = _b64url(b'{"alg":"ES256","x":' + arrays(n) + b"}")
    plain = _b64url(b'{"alg":"ES256","typ":"JWT"}')
    payload = _b64url(b'{"sub":' + arrays(n) + b"}")
    if where == "header":
        return f"{deep}.{_b64url(b'{}')}.{_b64url(b'sig')}"
    return f"{plain}.{payload}.{_b64url(b'sig')}"


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("deeptok") / "data"
    add_user(data, "alice", "alice-pw")
    server = token_server(data).start()
    yield server
    server.stop()


# 2,700 levels is what fits in the 8 KiB token limit; a million is refused for its length.
@pytest.mark.parametrize("n", [2_700, 20_000, 1_000_000])
@pytest.mark.parametrize("where", ["header", "payload"])
def test_deep_refresh_token_is_refused(tokens: ServerProcess, where: str, n: int) -> None:
    r = httpx.post(
        f"{tokens.url}/auth/token",
        data={
            "grant_type": "refresh_token",
            "service": "trustyard",
            "refresh_token": deep_jwt(n, where),
        },
        timeout=60,
    )
    assert r.status_code in (400, 401, 413), r.text[:300]
    assert r.json()["errors"][0]["message"]
    assert "Traceback" not in tokens.log()


@pytest.mark.parametrize("n", [2_700, 20_000])
@pytest.mark.parametrize("where", ["header", "payload"])
def test_deep_bearer_token_is_unauthorized(tokens: ServerProcess, where: str, n: int) -> None:
    r = httpx.get(f"{tokens.url}/v2/_catalog", headers=bearer(deep_jwt(n, where)), timeout=30)
    assert r.status_code == 401, r.text[:300]
    assert "Traceback" not in tokens.log()


@pytest.mark.parametrize("n", DEPTHS)
def test_deep_json_body_to_token_endpoint_is_a_client_error(tokens: ServerProcess, n: int) -> None:
    """The endpoint takes a form; JSON (however deep) is refused without being parsed as JSON."""
    r = httpx.post(
        f"{tokens.url}/auth/token",
        content=arrays(n),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    err = r.json()["errors"][0]
    if 2 * n > 64 * 1024:  # the form's size bound answers first
        assert r.status_code == 413 and err["code"] == "SIZE_INVALID", r.text[:300]
        return
    assert r.status_code == 400, r.text[:300]
    assert err["code"] == "INVALID_REQUEST" and "x-www-form-urlencoded" in err["message"]
    assert "Traceback" not in tokens.log()


@pytest.mark.parametrize("fields", [101, 5_000])
def test_form_with_too_many_fields_is_400(tokens: ServerProcess, fields: int) -> None:
    """parse_qsl raised ValueError past max_num_fields: a 500 before."""
    r = httpx.post(
        f"{tokens.url}/auth/token",
        content="&".join(f"f{i}=1" for i in range(fields)),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert r.status_code == 400, r.text[:300]
    assert "more than 100 fields" in r.json()["errors"][0]["message"]
    assert "Traceback" not in tokens.log()


def test_tokens_still_work(tokens: ServerProcess, tmp_path: Path) -> None:
    r = httpx.get(
        f"{tokens.url}/auth/token",
        params={"service": "trustyard", "scope": "repository:alice/x:pull"},
        auth=("alice", "alice-pw"),
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["token"]


# -- registry policy inputs: cosign signatures read on the pull path -----------------------------
@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("deeppolicy")
    key = ec.generate_private_key(ec.SECP256R1())
    (root / "cosign.pub").write_bytes(cosign.public_pem(key.public_key()))
    rules = [
        {
            "name": "cosign-signed",
            "repositories": ["cos/*"],
            "require": {"kind": "cosign", "keys": [str(root / "cosign.pub")]},
        }
    ]
    server = ServerProcess(
        root / "data", extra_env={"TRUSTYARD_POLICY__RULES": json.dumps(rules)}
    ).start()
    yield server
    server.stop()


def _push_blob(c: httpx.Client, repo: str, data: bytes) -> dict[str, object]:
    digest = sha256(data)
    r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    return {"digest": digest, "size": len(data)}


@pytest.mark.parametrize("layer_type", [cosign.SIMPLESIGNING, cosign.BUNDLE_V03])
@pytest.mark.parametrize("shape", ["arrays", "objects", "mixed"])
def test_deep_signature_layer_denies_the_pull(
    enforcing: ServerProcess, layer_type: str, shape: str
) -> None:
    """A pusher's signature artifact with a deep payload: the signed image is denied, not 500."""
    repo = f"cos/{shape}-{'bundle' if layer_type == cosign.BUNDLE_V03 else 'simple'}"
    image = make_image(1, seed=repo)
    with httpx.Client(base_url=enforcing.url, timeout=30) as c:
        push_image(c, repo, image, "v1")
        config = _push_blob(c, repo, b"{}")
        payload = _push_blob(c, repo, SHAPES[shape](10_000))
        sig = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": cosign.OCI_CONFIG, **config},
            "layers": [
                {
                    "mediaType": layer_type,
                    **payload,
                    "annotations": {cosign.SIG_ANNOTATION: base64.b64encode(b"x").decode()},
                }
            ],
        }
        tag = image.digest.replace(":", "-") + ".sig"
        r = c.put(
            f"/v2/{repo}/manifests/{tag}",
            content=json.dumps(sig),
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert r.status_code == 201, r.text
        pulled = c.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST})
    assert pulled.status_code in (403, 404), pulled.text[:300]
    assert "Traceback" not in enforcing.log() and "RecursionError" not in enforcing.log()
