"""A malicious trust server for the client tests: `http.server` on a thread serving whatever a
test puts in `routes` (crafted metadata, endless streams), and a Notary collection builder whose
files the test can mix, replay and tamper with."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trustyard.crypto.notary_keys import PrivateKey, PublicKey, b64, canonical_json
from trustyard.trust.model import format_time

NOW = dt.datetime.now(dt.UTC)
LATER = NOW + dt.timedelta(days=365)
EARLIER = NOW - dt.timedelta(days=1)
CHUNK = 1 << 20


@dataclass
class Stream:
    """An answer produced lazily: `chunks()` may yield gigabytes; `headers` go first."""

    chunks: Callable[[], Iterator[bytes]]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def endless(byte: bytes = b"[", total: int = 4 << 30) -> Callable[[], Iterator[bytes]]:
    """`total` bytes (default 4 GiB) of `byte`, one MiB at a time, never held in memory."""
    block = byte * CHUNK

    def chunks() -> Iterator[bytes]:
        for _ in range(total // CHUNK):
            yield block

    return chunks


Answer = bytes | tuple[int, bytes] | tuple[int, bytes, dict[str, str]] | Stream


class EvilServer:
    """Serves `routes[path]` (query strings ignored); anything else is a Notary 404."""

    def __init__(self) -> None:
        self.routes: dict[str, Answer] = {}
        self.sent: dict[str, int] = {}
        self.requests: list[str] = []
        self.posted: list[bytes] = []  # bodies of POSTs (publishes)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # a body ends when the connection closes

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.handle(self)

            def do_POST(self) -> None:
                outer.handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def __enter__(self) -> EvilServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, req: BaseHTTPRequestHandler) -> None:
        path = req.path.split("?", 1)[0]
        self.requests.append(path)
        # counted from the request on: a client that hangs up before the first chunk
        # is written (a 401 whose body it never reads) has been sent 0 bytes, not none
        self.sent.setdefault(path, 0)
        if req.command == "POST":
            self.posted.append(req.rfile.read(int(req.headers.get("Content-Length") or 0)))
        answer = self.routes.get(path)
        if answer is None:
            answer = (404, b'{"errors":[{"code":"METADATA_NOT_FOUND","message":"not found"}]}')
        try:
            if isinstance(answer, Stream):
                req.send_response(answer.status)
                for k, v in answer.headers.items():
                    req.send_header(k, v)
                req.end_headers()
                for chunk in answer.chunks():
                    req.wfile.write(chunk)
                    self.sent[path] = self.sent.get(path, 0) + len(chunk)
                return
            status, body, headers = 200, answer, {}
            if isinstance(answer, tuple):
                status, body = answer[0], answer[1]
                headers = answer[2] if len(answer) > 2 else {}  # type: ignore[misc]
            assert isinstance(body, bytes)
            req.send_response(status)
            req.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                req.send_header(k, v)
            req.end_headers()
            req.wfile.write(body)
            self.sent[path] = self.sent.get(path, 0) + len(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what the bounded tests want

    def serve(self, gun: str, files: dict[str, bytes]) -> None:
        """Serve `files` (role → bytes) as the collection of `gun` (replacing those roles)."""
        for role, data in files.items():
            self.routes[f"/v2/{gun}/_trust/tuf/{role}.json"] = data

    def withhold(self, gun: str, role: str) -> None:
        self.routes.pop(f"/v2/{gun}/_trust/tuf/{role}.json", None)


# -- a Notary collection -------------------------------------------------------------------------
Signer = tuple[str, PrivateKey]  # (key ID written in the signature, the private key)


def envelope(body: dict[str, Any], signers: list[Signer]) -> bytes:
    message = canonical_json(body)
    sigs = [{"keyid": kid, "method": k.method, "sig": b64(k.sign(message))} for kid, k in signers]
    return canonical_json({"signatures": sigs, "signed": body})


def meta(data: bytes) -> dict[str, Any]:
    return {
        "hashes": {
            "sha256": b64(hashlib.sha256(data).digest()),
            "sha512": b64(hashlib.sha512(data).digest()),
        },
        "length": len(data),
    }


def target(seed: str) -> dict[str, Any]:
    """A target entry: the sha256 and length of a stand-in manifest."""
    data = f"manifest {seed}".encode()
    return {"hashes": {"sha256": b64(hashlib.sha256(data).digest())}, "length": len(data)}


def digest_of(seed: str) -> str:
    return hashlib.sha256(f"manifest {seed}".encode()).hexdigest()


def x509_key(key: PrivateKey, cn: str) -> PublicKey:
    """An `ecdsa-x509` key: a fresh self-signed certificate for `key` (each call a new ID)."""
    private = key.key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(LATER)
        .sign(private, hashes.SHA256())
    )
    return PublicKey("ecdsa-x509", cert.public_bytes(serialization.Encoding.PEM))


def compressed_key(key: PrivateKey) -> PublicKey:
    """The same `ecdsa` P-256 key with its point compressed in the SPKI: another key ID."""
    private = key.key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    point = private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    header = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200")
    return PublicKey("ecdsa", header + point)


@dataclass
class Delegate:
    name: str
    keys: list[PrivateKey]
    paths: list[str]
    threshold: int = 1


@dataclass
class Collection:
    """Keys and file builders for one GUN; every file is built on demand and may be replayed."""

    gun: str
    root_key: PrivateKey = field(default_factory=lambda: PrivateKey.generate("ecdsa"))
    targets_key: PrivateKey = field(default_factory=lambda: PrivateKey.generate("ecdsa"))
    snapshot_key: PrivateKey = field(default_factory=lambda: PrivateKey.generate("ecdsa"))
    timestamp_key: PrivateKey = field(default_factory=lambda: PrivateKey.generate("ed25519"))
    # role → (public keys listed, threshold) overriding the single key of the base roles
    role_keys: dict[str, tuple[list[PublicKey], int]] = field(default_factory=dict)
    first_root: bytes | None = None  # root version 1, built once (ECDSA signatures vary)

    def root(
        self,
        version: int = 1,
        *,
        expires: dt.datetime = LATER,
        signers: list[Signer] | None = None,
    ) -> bytes:
        keys: dict[str, Any] = {}
        roles: dict[str, Any] = {}
        for role, key in (
            ("root", self.root_key),
            ("targets", self.targets_key),
            ("snapshot", self.snapshot_key),
            ("timestamp", self.timestamp_key),
        ):
            listed, threshold = self.role_keys.get(role, ([key.public], 1))
            for pub in listed:
                keys[pub.key_id] = pub.to_json()
            roles[role] = {"keyids": [p.key_id for p in listed], "threshold": threshold}
        body = {
            "_type": "Root",
            "consistent_snapshot": False,
            "expires": format_time(expires),
            "keys": keys,
            "roles": roles,
            "version": version,
        }
        own = [(self.root_key.public.key_id, self.root_key)]
        return envelope(body, signers if signers is not None else own)

    def targets(
        self,
        targets: dict[str, dict[str, Any]],
        version: int = 1,
        *,
        role: str = "targets",
        delegations: list[Delegate] = (),  # type: ignore[assignment]
        signers: list[Signer] | None = None,
        expires: dt.datetime = LATER,
    ) -> bytes:
        dkeys: dict[str, Any] = {}
        droles = []
        for d in delegations:
            for k in d.keys:
                dkeys[k.public.key_id] = k.public.to_json()
            droles.append(
                {
                    "keyids": [k.public.key_id for k in d.keys],
                    "name": d.name,
                    "paths": d.paths,
                    "threshold": d.threshold,
                }
            )
        body = {
            "_type": "Targets",
            "delegations": {"keys": dkeys, "roles": droles},
            "expires": format_time(expires),
            "targets": targets,
            "version": version,
        }
        own = [(self.targets_key.public.key_id, self.targets_key)]
        return envelope(body, signers if signers is not None else own)

    def snapshot(
        self, files: dict[str, bytes], version: int = 1, *, expires: dt.datetime = LATER
    ) -> bytes:
        body = {
            "_type": "Snapshot",
            "expires": format_time(expires),
            "meta": {role: meta(data) for role, data in files.items()},
            "version": version,
        }
        return envelope(body, [(self.snapshot_key.public.key_id, self.snapshot_key)])

    def timestamp(
        self, snapshot: bytes | None, version: int = 1, *, expires: dt.datetime = LATER
    ) -> bytes:
        body = {
            "_type": "Timestamp",
            "expires": format_time(expires),
            "meta": {"snapshot": meta(snapshot)} if snapshot is not None else {},
            "version": version,
        }
        return envelope(body, [(self.timestamp_key.public.key_id, self.timestamp_key)])

    def files(
        self,
        version: int,
        targets: dict[str, dict[str, Any]],
        *,
        delegated: dict[str, bytes] | None = None,
        delegations: list[Delegate] = (),  # type: ignore[assignment]
        root: bytes | None = None,
    ) -> dict[str, bytes]:
        """A consistent collection at `version` (targets, snapshot and timestamp)."""
        if self.first_root is None:
            self.first_root = self.root()
        out = {
            "root": root or self.first_root,
            "targets": self.targets(targets, version, delegations=delegations),
        }
        out.update(delegated or {})
        out["snapshot"] = self.snapshot(out, version)
        out["timestamp"] = self.timestamp(out["snapshot"], version)
        return out
