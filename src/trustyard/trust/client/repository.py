"""A client for any Notary v1 compatible trust server (ours, or notary-server).

State lives in a trust directory, like Notary's: `private/` (encrypted keys, keys.py),
`tuf/<gun>/metadata/<role>.json` (the last verified copy of every role, as Notary's and TUF's
clients keep them: later roots must be signed by the trusted root, and no role may go back to an
older version or change at the same version) and `pins.json` (root keys imported with
`trustyard trust key import`). The config file is Notary's
`config.json` (`trust_dir`, `remote_server.url`, `remote_server.root_ca`, `trust_pinning`), so
one file serves both clients.

Every change is one atomic publish (a multipart POST of the changed roles); nothing is sent
before all files are built and signed, so a failure leaves the server as it was.

The server is not trusted to be small or quick: every answer is streamed and read under a size
cap and a deadline (`signing/bounded.py`), error bodies included.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trustyard.crypto.notary_keys import KeyError_, PublicKey, b64, canonical_json
from trustyard.remote.bounded import (
    ERROR_BODY,
    TOKEN_BODY,
    BodyError,
    buffered,
    get_bounded,
    loads_json,
    read_body,
)
from trustyard.signing.errors import RemoteError
from trustyard.signing.registry_client import Credentials, load_credentials, parse_challenge
from trustyard.trust import model as m
from trustyard.trust.client.keys import (
    FileSigner,
    KeyStore,
    KeyStoreError,
    NotarySigner,
    TokenSigner,
)
from trustyard.trust.client.pinning import (
    PinningError,
    TrustPinning,
    canonical_key_id,
    cert_key,
    chains_to,
    check_leaf,
    load_ca_file,
    load_root_material,
    public_key_of,
)
from trustyard.trust.client.verify import Collection, TargetHit, VerifyError, verify_collection

ROOT_LIFETIME = dt.timedelta(days=3650)
TARGETS_LIFETIME = dt.timedelta(days=3 * 365)
MAX_METADATA = 16 * 1024 * 1024
MAX_KEY = 64 * 1024
MAX_ROOT_ROTATIONS = 256  # intermediate roots fetched in one update (TUF's client caps them too)
MAX_DELEGATIONS = 1024  # delegation files fetched for one collection


class TrustError(Exception):
    """A trust operation failed; the message is one line for the user (never a secret)."""


@dataclass(frozen=True)
class ClientConfig:
    trust_dir: Path
    server: str | None = None
    pinning: TrustPinning = field(default_factory=TrustPinning)
    root_ca: Path | None = None

    @property
    def pins_file(self) -> Path:
        return self.trust_dir / "pins.json"


def default_trust_dir() -> Path:
    return Path.home() / ".trustyard" / "trust"


def load_config(
    config_file: Path | None, trust_dir: Path | None = None, server: str | None = None
) -> ClientConfig:
    """Notary's config.json (optional) with command-line overrides and imported pins."""
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if config_file is not None:
        try:
            raw = json.loads(config_file.read_text())
        except OSError as exc:
            raise TrustError(f"cannot read config {config_file}: {exc.strerror}") from None
        except ValueError:
            raise TrustError(f"config {config_file} is not valid JSON") from None
        if not isinstance(raw, dict):
            raise TrustError(f"config {config_file} must be a JSON object")
        base = config_file.parent
    remote = raw.get("remote_server") or {}
    tdir = trust_dir or (
        Path(str(raw["trust_dir"])).expanduser() if raw.get("trust_dir") else default_trust_dir()
    )
    if not tdir.is_absolute():
        tdir = base / tdir
    try:
        pinning = TrustPinning.from_json(raw.get("trust_pinning"), base)
    except PinningError as exc:
        raise TrustError(str(exc)) from None
    pins_file = tdir / "pins.json"
    if pins_file.exists():
        try:
            imported = json.loads(pins_file.read_text()).get("certs", {})
            pinning = pinning.merged({g: tuple(ids) for g, ids in imported.items()})
        except (ValueError, AttributeError, TypeError):
            raise TrustError(f"{pins_file} is corrupt") from None
    root_ca = remote.get("root_ca")
    return ClientConfig(
        trust_dir=tdir,
        server=server or remote.get("url"),
        pinning=pinning,
        root_ca=(base / Path(root_ca).expanduser()) if root_ca else None,
    )


def _expiry(lifetime: dt.timedelta) -> str:
    return m.format_time(dt.datetime.now(dt.UTC) + lifetime)


def envelope(signed: dict[str, Any], signers: list[tuple[str, NotarySigner]]) -> bytes:
    """`{"signed","signatures"}` canonical bytes; each signer signs under the given key ID
    (an x509 root key signs under its certificate's ID)."""
    message = canonical_json(signed)
    sigs = [
        {"keyid": keyid, "method": s.method, "sig": b64(s.sign(message))} for keyid, s in signers
    ]
    return canonical_json({"signatures": sigs, "signed": signed})


def self_signed_cert(signer: FileSigner, cn: str, lifetime: dt.timedelta) -> x509.Certificate:
    """A root certificate as Notary makes one: CN = GUN, not a CA, code signing."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    key: Any = signer.key.key
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)
        .sign(key, hashes.SHA256())
    )


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TrustError(f"cannot read {what} {path}: {exc.strerror}") from None


def gun_of(host: str, repository: str) -> str:
    """Docker Content Trust's GUN for an image: the registry host and the repository."""
    return f"{host}/{repository}"


def delegation_role(name: str) -> str:
    role = name if name.startswith("targets/") else f"targets/{name}"
    if not m.is_delegation(role):
        raise TrustError(f"{name!r} is not a valid delegation name (targets/<name>)")
    return role


def load_delegation_key(path: Path) -> PublicKey:
    """A delegate's certificate (PEM) or public key (PEM/DER) as a Notary key."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrustError(f"cannot read key {path}: {exc.strerror}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
        if certs[0].not_valid_after_utc < dt.datetime.now(dt.UTC):
            raise TrustError(f"delegation certificate {path} has expired")
        key = cert_key(certs[:1])
        key.crypto_key()
        return key
    except ValueError:
        pass
    except KeyError_ as exc:
        raise TrustError(f"{path} is not a valid delegation key: {exc}") from None
    for loader in (serialization.load_pem_public_key, serialization.load_der_public_key):
        try:
            key = public_key_of(loader(data))
            key.crypto_key()
            return key
        except (ValueError, KeyError_):
            continue
    raise TrustError(
        f"{path} is not a valid delegation key: expected an X.509 certificate or a public key "
        "(PEM or DER; ECDSA, RSA ≥ 2048 bits or Ed25519)"
    )


_GUN_PATH = re.compile(r"^/v2/(?P<gun>.+)/_trust/")


def trust_credentials(server: str, auth_file: Path | None = None) -> Credentials | None:
    """Credentials for a trust server, as the notary client finds them: `$NOTARY_AUTH`
    (base64 of `user:password`), else the Docker config.json `auths` entry for its host
    (`$REGISTRY_AUTH_FILE`, `$DOCKER_CONFIG/config.json`, `~/.docker/config.json`)."""
    env = os.environ.get("NOTARY_AUTH", "").strip()
    if env:
        try:
            user, sep, password = base64.b64decode(env, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise TrustError("NOTARY_AUTH is not base64 of user:password") from None
        if not sep or not user:
            raise TrustError("NOTARY_AUTH is not base64 of user:password")
        return Credentials(user, password)
    host = httpx.URL(server).netloc.decode()
    try:
        return load_credentials(host, auth_file)
    except RemoteError as exc:
        raise TrustError(str(exc)) from None


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class TrustAuth(httpx.Auth):
    """Answers the trust server's 401 challenge as the notary client does: HTTP Basic, or a
    bearer token from the challenge's realm for `repository:GUN:ACTIONS` (GET pull, POST
    pull,push, DELETE *; a server key: GET pull,push, POST *), fetched with the credentials as Basic. Tokens are kept per scope."""

    def __init__(
        self,
        credentials: Credentials | None,
        timeout: float,
        verify: Any,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.credentials = credentials
        self._tokens: dict[str, str] = {}
        self._http = httpx.Client(timeout=timeout, verify=verify, transport=transport)

    def close(self) -> None:
        self._http.close()

    @staticmethod
    def _scope(request: httpx.Request) -> str | None:
        match = _GUN_PATH.match(request.url.path)
        if match is None:
            return None
        method = request.method
        actions = (
            "pull" if method in ("GET", "HEAD") else "*" if method == "DELETE" else "pull,push"
        )
        if request.url.path.endswith(".key"):  # server keys: read pull,push, rotate * (notary)
            actions = "pull,push" if method == "GET" else "*"
        return f"repository:{match.group('gun')}:{actions}"

    def _basic(self, url: str) -> str:
        if self.credentials is None:
            raise TrustError(
                "the trust server wants authentication and there are no credentials: set "
                "NOTARY_AUTH (base64 of user:password) or log in (docker login HOST)"
            )
        u = httpx.URL(url)
        if u.scheme != "https" and not _loopback(u.host):
            raise TrustError(f"refusing to send credentials over plain HTTP to {u.host}")
        raw = f"{self.credentials.username}:{self.credentials.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _token(self, params: dict[str, str], scope: str | None) -> str:
        realm = params["realm"]
        query = httpx.QueryParams()
        for s in dict.fromkeys(filter(None, (scope, params.get("scope")))):
            query = query.add("scope", s)
        if params.get("service"):
            query = query.add("service", params["service"])
        headers = {"Authorization": self._basic(realm)} if self.credentials else {}
        what = f"token server {realm}'s answer"
        try:
            r = get_bounded(self._http, realm, TOKEN_BODY, what, params=query, headers=headers)
        except httpx.HTTPError as exc:
            raise TrustError(f"token server {realm} failed: {exc.__class__.__name__}") from None
        except BodyError as exc:
            raise TrustError(str(exc)) from None
        if r.status_code in (401, 403):
            who = f"user {self.credentials.username}" if self.credentials else "anonymous access"
            raise TrustError(f"token server {realm} refused {who}")
        if r.status_code != 200:
            raise TrustError(f"token server {realm} answered HTTP {r.status_code}")
        try:
            body: Any = loads_json(r.content, what)
            token = body.get("token") or body.get("access_token")
        except (BodyError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise TrustError(f"token server {realm} answered without a token")
        return token

    def auth_flow(self, request: httpx.Request) -> Any:
        scope = self._scope(request)
        cached = self._tokens.get(scope or "")
        if cached:
            request.headers["Authorization"] = f"Bearer {cached}"
        response = yield request
        if response.status_code != 401 or "www-authenticate" not in response.headers:
            return  # a 403 (insufficient_scope): a new token would grant no more
        scheme, params = parse_challenge(response.headers["www-authenticate"])
        if scheme == "basic":
            request.headers["Authorization"] = self._basic(str(request.url))
        elif scheme == "bearer" and params.get("realm"):
            token = self._token(params, scope)
            self._tokens[scope or ""] = token
            request.headers["Authorization"] = f"Bearer {token}"
        else:
            return
        response = yield request  # the caller closes the 401 unread (it may be endless)
        if response.status_code in (401, 403) and self.credentials is None:
            self._basic(str(request.url))  # raises: say how to log in


class TrustClient:
    def __init__(
        self,
        config: ClientConfig,
        keys: KeyStore,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        auth_file: Path | None = None,
    ) -> None:
        if not config.server:
            raise TrustError("no trust server: pass --server URL or set remote_server.url")
        self.config = config
        self.keys = keys
        verify: Any = str(config.root_ca) if config.root_ca else True
        self.auth = TrustAuth(
            trust_credentials(config.server, auth_file), timeout, verify, transport
        )
        self.http = httpx.Client(
            base_url=config.server.rstrip("/"),
            verify=verify,
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self.http.close()
        self.auth.close()

    def __enter__(self) -> TrustClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ------------------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, *, limit: int = MAX_METADATA, what: str = "", **kwargs: Any
    ) -> httpx.Response:
        """Send (answering the server's 401 challenge once) and return the answer read under
        `limit` bytes (error answers: cut at `ERROR_BODY`; audit reads changefeed pages here). The auth flow is driven here
        rather than by httpx, which would read every 401 body whole."""
        what = what or f"the trust server's answer to {method} {path}"
        try:
            request = self.http.build_request(method, path, **kwargs)
            flow = self.auth.auth_flow(request)
            request = next(flow)
            for _ in range(3):
                response = self.http.send(request, stream=True)
                try:
                    try:
                        request = flow.send(response)
                    except StopIteration:
                        ok = response.status_code == 200
                        body = read_body(
                            response, limit if ok else ERROR_BODY, what, truncate=not ok
                        )
                        return buffered(response, body)
                finally:
                    response.close()
            raise TrustError(f"{self.config.server} kept asking for authentication")
        except httpx.HTTPError as exc:
            raise TrustError(
                f"cannot reach the trust server {self.config.server}: {exc.__class__.__name__}"
                f" {exc}; nothing was published"
            ) from None
        except BodyError as exc:
            raise TrustError(f"{exc} (from the trust server {self.config.server})") from None

    def _fail(self, r: httpx.Response, what: str) -> TrustError:
        detail = r.text[:300]
        try:
            errors = loads_json(r.content, "error answer").get("errors") or []
            if errors:
                e = errors[0]
                inner = (e.get("detail") or {}).get("Error") if isinstance(e, dict) else None
                msg = inner.get("Msg") if isinstance(inner, dict) else None
                detail = f"{e.get('code')}: {msg or e.get('message')}"
        except (BodyError, AttributeError):
            pass
        if r.status_code == 401:
            detail += " (the trust server wants authentication)"
        return TrustError(f"{what}: the trust server answered {r.status_code} ({detail})")

    def get_file(self, gun: str, role: str) -> bytes | None:
        """The current `role.json` of `gun` (read under `MAX_METADATA` bytes), None on 404."""
        return self._get_metadata(gun, role, f"{role}.json")

    def get_root_version(self, gun: str, version: int) -> bytes | None:
        """Root `version` of `gun` (`N.root.json`, as notary-server serves old roots)."""
        return self._get_metadata(gun, f"root version {version}", f"{version}.root.json")

    def _get_metadata(self, gun: str, what: str, name: str) -> bytes | None:
        r = self._request(
            "GET", f"/v2/{gun}/_trust/tuf/{name}", limit=MAX_METADATA, what=f"{what} of {gun}"
        )
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise self._fail(r, f"cannot fetch {what} of {gun}")
        return r.content

    def server_key(self, gun: str, role: str) -> PublicKey:
        what = f"the server's {role} key for {gun}"
        r = self._request("GET", f"/v2/{gun}/_trust/tuf/{role}.key", limit=MAX_KEY, what=what)
        if r.status_code != 200:
            raise self._fail(r, f"cannot get the server's {role} key for {gun}")
        try:
            return PublicKey.from_json(loads_json(r.content, what))
        except BodyError as exc:
            raise TrustError(str(exc)) from None
        except (ValueError, KeyError_) as exc:
            raise TrustError(f"the server's {role} key for {gun} is invalid: {exc}") from None

    def publish(self, gun: str, files: dict[str, bytes]) -> None:
        parts = [
            ("files", (role, data, "application/octet-stream")) for role, data in files.items()
        ]
        r = self._request("POST", f"/v2/{gun}/_trust/tuf/", files=parts)
        if r.status_code != 200:
            raise self._fail(r, f"publishing {', '.join(files)} of {gun} failed")

    # -- trusted copies --------------------------------------------------------------------------
    def _metadata_dir(self, gun: str) -> Path:
        return self.config.trust_dir / "tuf" / gun / "metadata"

    def _root_cache(self, gun: str) -> Path:
        return self._metadata_dir(gun) / "root.json"

    def _write_trusted(self, gun: str, role: str, data: bytes) -> None:
        path = self._metadata_dir(gun) / f"{role}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def _remember_root(self, gun: str, data: bytes) -> None:
        self._write_trusted(gun, m.ROOT, data)

    def trusted_files(self, gun: str) -> dict[str, bytes]:
        """The last verified copy of every role of `gun` (role → bytes)."""
        base = self._metadata_dir(gun)
        found: dict[str, bytes] = {}
        if not base.is_dir():
            return found
        for path in base.rglob("*.json"):
            role = path.relative_to(base).as_posix().removesuffix(".json")
            if m.valid_role(role):
                found[role] = path.read_bytes()
        return found

    def _forget(self, gun: str) -> None:
        """Drop the trusted copies of `gun` (before `init` makes a new collection)."""
        base = self._metadata_dir(gun)
        if base.is_dir():
            for path in sorted(base.rglob("*.json"), reverse=True):
                path.unlink()

    def _remember(self, gun: str, coll: Collection) -> None:
        for role, data in coll.verified().items():
            self._write_trusted(gun, role, data)

    def _root_chain(self, gun: str, trusted: bytes | None, current: bytes) -> list[bytes]:
        """The intermediate roots between the trusted root and the current one, fetched so that
        each rotation is checked against the root before it (the TUF client's root update)."""
        if trusted is None:
            return []
        try:
            have = m.parse_signed(m.ROOT, trusted).version
            want = m.parse_signed(m.ROOT, current).version
        except m.MetadataError:
            return []  # verify_collection says what is wrong
        if want - have <= 1:
            return []
        if want - have > MAX_ROOT_ROTATIONS:
            raise TrustError(
                f"the root of {gun} moved from version {have} to {want}: more than "
                f"{MAX_ROOT_ROTATIONS} rotations to check at once"
            )
        chain = []
        for version in range(have + 1, want):
            data = self.get_root_version(gun, version)
            if data is None:
                raise TrustError(
                    f"root version {version} of {gun} is missing on the trust server: cannot "
                    f"check the rotation from version {have} to {want}"
                )
            chain.append(data)
        return chain

    def fetch(self, gun: str, *, remember: bool = True) -> Collection:
        """Fetch and verify the collection as a TUF client does (root and its rotation chain,
        timestamp, snapshot, targets, delegations) against the trusted copies and the pins;
        with `remember`, the verified files become the new trusted copies."""
        files: dict[str, bytes] = {}
        for role in (m.ROOT, m.TIMESTAMP, m.SNAPSHOT, m.TARGETS):
            data = self.get_file(gun, role)
            if data is not None:
                files[role] = data
        if m.ROOT not in files:
            raise TrustError(f"{gun} has no trust data on {self.config.server} (run init first)")
        trusted = self.trusted_files(gun)
        chain = self._root_chain(gun, trusted.get(m.ROOT), files[m.ROOT])
        self._fetch_delegations(gun, files)
        try:
            coll = verify_collection(
                gun, files, self.config.pinning, trusted=trusted, root_chain=chain
            )
        except VerifyError as exc:
            raise TrustError(str(exc)) from None
        if remember:
            self._remember(gun, coll)
        return coll

    def _fetch_delegations(self, gun: str, files: dict[str, bytes]) -> None:
        """Every delegation file the snapshot names or the delegation tree reaches (valid role
        names only, at most `MAX_DELEGATIONS`)."""
        names: set[str] = set()
        if m.SNAPSHOT in files:
            try:
                names |= {
                    r
                    for r in m.parse_meta_map(m.SNAPSHOT, files[m.SNAPSHOT]).meta
                    if m.is_delegation(r)
                }
            except m.MetadataError:
                pass
        fetched = 0

        def get(name: str) -> None:
            nonlocal fetched
            if name in files:
                return
            fetched += 1
            if fetched > MAX_DELEGATIONS:
                raise TrustError(f"{gun} has more than {MAX_DELEGATIONS} delegations")
            data = self.get_file(gun, name)
            if data is not None:
                files[name] = data

        pending = [m.TARGETS]
        while pending:
            role = pending.pop()
            if role not in files:
                continue
            try:
                parsed = m.parse_targets(role, files[role])
            except m.MetadataError:
                continue
            for child in parsed.delegations:
                names.add(child)
                get(child)
                pending.append(child)
        for name in sorted(names):
            get(name)

    # -- init ------------------------------------------------------------------------------------
    def _root_signer(self, gun: str, root_key: str | None) -> NotarySigner:
        if root_key and root_key.startswith("pkcs11:"):
            return TokenSigner(root_key)
        if root_key:
            data = _read(root_key, "root key")
            return FileSigner(self.keys.import_key(data, "root", gun, root_key))
        existing = self.keys.ids("root")
        if existing:  # one root key for every collection, as Notary does
            return self.keys.signer(existing[0])
        return FileSigner(self.keys.generate("root", gun))

    def _root_certs(
        self, gun: str, signer: NotarySigner, root_cert: Path | None
    ) -> list[x509.Certificate]:
        now = dt.datetime.now(dt.UTC)
        if root_cert is None:
            if not isinstance(signer, FileSigner):
                raise TrustError(
                    "a root key in a PKCS#11 token needs --root-cert (a certificate with "
                    f"CN={gun} for the token's public key, e.g. issued by your CA)"
                )
            return [self_signed_cert(signer, gun, ROOT_LIFETIME)]
        try:
            certs = x509.load_pem_x509_certificates(root_cert.read_bytes())
        except OSError as exc:
            raise TrustError(f"cannot read root certificate {root_cert}: {exc.strerror}") from None
        except ValueError:
            raise TrustError(f"{root_cert} is not a PEM certificate") from None
        if public_key_of(certs[0].public_key()).key_id != signer.public.key_id:
            raise TrustError(f"root certificate {root_cert} is not for the root key")
        try:
            check_leaf(gun, certs[0], now)
            ca = self.config.pinning.ca_file(gun)
            if ca is not None and not chains_to(certs, load_ca_file(ca), now):
                raise TrustError(f"root certificate {root_cert} is not issued by the CA {ca}")
        except PinningError as exc:
            raise TrustError(str(exc)) from None
        return certs

    def init(
        self,
        gun: str,
        *,
        root_key: str | None = None,
        root_cert: Path | None = None,
        server_managed_snapshot: bool = False,
        targets_key: str | None = None,
    ) -> dict[str, str]:
        if self.get_file(gun, m.ROOT) is not None:
            raise TrustError(f"{gun} already has trust data on {self.config.server}")
        self._forget(gun)
        try:
            signer = self._root_signer(gun, root_key)
            certs = self._root_certs(gun, signer, root_cert)
            root_pub = cert_key(certs)
            targets: NotarySigner
            if targets_key and targets_key.startswith("pkcs11:"):
                targets = self.keys.add_token(targets_key, "targets", gun)
            elif targets_key:
                data = _read(targets_key, "targets key")
                targets = FileSigner(self.keys.import_key(data, "targets", gun, targets_key))
            else:
                targets = FileSigner(self.keys.generate("targets", gun))
            snapshot: FileSigner | None = None
            if server_managed_snapshot:
                snapshot_pub = self.server_key(gun, m.SNAPSHOT)
            else:
                snapshot = FileSigner(self.keys.generate("snapshot", gun))
                snapshot_pub = snapshot.public
        except KeyStoreError as exc:
            raise TrustError(str(exc)) from None
        timestamp_pub = self.server_key(gun, m.TIMESTAMP)
        keys = {
            m.ROOT: root_pub,
            m.TARGETS: targets.public,
            m.SNAPSHOT: snapshot_pub,
            m.TIMESTAMP: timestamp_pub,
        }
        root_body = {
            "_type": "Root",
            "consistent_snapshot": False,
            "expires": _expiry(ROOT_LIFETIME),
            "keys": {k.key_id: k.to_json() for k in keys.values()},
            "roles": {r: {"keyids": [k.key_id], "threshold": 1} for r, k in keys.items()},
            "version": 1,
        }
        files = {m.ROOT: envelope(root_body, [(root_pub.key_id, signer)])}
        targets_body = {
            "_type": "Targets",
            "delegations": {"keys": {}, "roles": []},
            "expires": _expiry(TARGETS_LIFETIME),
            "targets": {},
            "version": 1,
        }
        files[m.TARGETS] = envelope(targets_body, [(targets.public.key_id, targets)])
        if snapshot is not None:
            files[m.SNAPSHOT] = self._snapshot(files, {}, 1, snapshot)
        self.publish(gun, files)
        self._remember_root(gun, files[m.ROOT])
        return {
            "root": root_pub.key_id,
            "root_canonical": canonical_key_id(root_pub),
            "targets": targets.public.key_id,
            "snapshot": snapshot_pub.key_id,
            "timestamp": timestamp_pub.key_id,
        }

    @staticmethod
    def _snapshot(
        files: dict[str, bytes], previous: dict[str, Any], version: int, signer: NotarySigner
    ) -> bytes:
        meta = dict(previous)
        for role, data in files.items():
            if role != m.SNAPSHOT:
                meta[role] = m.FileMeta.of(data).to_json()
        body = {
            "_type": "Snapshot",
            "expires": _expiry(TARGETS_LIFETIME),
            "meta": meta,
            "version": version,
        }
        return envelope(body, [(signer.public.key_id, signer)])

    # -- targets and delegations -----------------------------------------------------------------
    def _signers_for(self, keys: dict[str, PublicKey]) -> list[tuple[str, NotarySigner]]:
        found: list[tuple[str, NotarySigner]] = []
        for keyid, key in keys.items():
            cid = canonical_key_id(key)
            if self.keys.has(cid):
                try:
                    found.append((keyid, self.keys.signer(cid)))
                except KeyStoreError as exc:
                    raise TrustError(str(exc)) from None
        return found

    def role_keys(self, coll: Collection, role: str) -> tuple[dict[str, PublicKey], int]:
        if role == m.TARGETS:
            return coll.root.role_keys(m.TARGETS), coll.root.roles[m.TARGETS].threshold
        parent = coll.targets.get(m.parent_role(role))
        if parent is None or role not in parent.delegations:
            raise TrustError(f"{role} is not a delegation of {coll.gun}")
        dele = parent.delegations[role]
        return {k: parent.delegation_keys[k] for k in dele.keys.keyids}, dele.keys.threshold

    def writable_roles(self, coll: Collection) -> list[str]:
        """Roles this client holds enough keys for: delegations first, then targets."""
        roles = []
        for parent in list(coll.targets.values()):
            for name in parent.delegations:
                keys, threshold = self.role_keys(coll, name)
                if len(self._signers_for(keys)) >= threshold:
                    roles.append(name)
        keys, threshold = self.role_keys(coll, m.TARGETS)
        if len(self._signers_for(keys)) >= threshold:
            roles.append(m.TARGETS)
        return roles

    def update(
        self, gun: str, changes: dict[str, Callable[[dict[str, Any]], None]], coll: Collection
    ) -> None:
        """Apply `changes` (role → mutation of its `signed` body), re-sign, publish at once."""
        raw = coll.raw
        files: dict[str, bytes] = {}
        for role, change in changes.items():
            keys, threshold = self.role_keys(coll, role)
            signers = self._signers_for(keys)
            if len(signers) < threshold:
                raise TrustError(
                    f"cannot sign {role} of {gun}: this client holds {len(signers)} of its keys "
                    f"(threshold {threshold}); keys: {', '.join(k[:12] for k in keys)}"
                )
            if role in raw:
                body = self._current_body(coll, role, keys, threshold)
            else:
                body = {
                    "_type": "Targets",
                    "delegations": {"keys": {}, "roles": []},
                    "targets": {},
                    "version": 0,
                }
            change(body)
            body["version"] = int(body["version"]) + 1
            body["expires"] = _expiry(TARGETS_LIFETIME)
            files[role] = envelope(body, signers)
        self.publish(gun, self._with_snapshot(coll, files))

    @staticmethod
    def _current_body(
        coll: Collection, role: str, keys: dict[str, PublicKey], threshold: int
    ) -> dict[str, Any]:
        """The `signed` body of `role` to change: from a file that verified, or at least one
        signed to its threshold by the role's keys (an expired delegation is renewed by
        re-signing it). Never from a file the server could have forged: re-signing it would
        make its targets ours."""
        if role in coll.targets:
            return dict(coll.targets[role].signed.body)
        try:
            parsed = m.parse_targets(role, coll.raw[role])
        except m.MetadataError as exc:
            raise TrustError(
                f"{role} of {coll.gun} is malformed on the server ({exc}); refusing to sign on "
                "top of it"
            ) from None
        signers = parsed.signed.valid_signers(m.RoleKeys(tuple(keys), threshold), keys)
        if len(signers) < threshold:
            raise TrustError(
                f"{role} of {coll.gun} on the server is not signed by its own keys (forged or "
                "corrupt); refusing to sign on top of it"
            )
        return dict(parsed.signed.body)

    def _with_snapshot(self, coll: Collection, files: dict[str, bytes]) -> dict[str, bytes]:
        """Add a new snapshot when this client holds the snapshot key (else the server makes it)."""
        snap_signers = self._signers_for(coll.root.role_keys(m.SNAPSHOT))
        if snap_signers and m.SNAPSHOT in coll.raw:
            previous = json.loads(coll.raw[m.SNAPSHOT])["signed"]
            meta = dict(previous["meta"])
            meta.update({r: m.FileMeta.of(d).to_json() for r, d in files.items()})
            body = {
                "_type": "Snapshot",
                "expires": _expiry(TARGETS_LIFETIME),
                "meta": meta,
                "version": int(previous["version"]) + 1,
            }
            files = {**files, m.SNAPSHOT: envelope(body, snap_signers)}
        return files

    def rotate_root(
        self,
        gun: str,
        *,
        root_key: str | None = None,
        root_cert: Path | None = None,
        old_root_key: str | None = None,
    ) -> dict[str, str]:
        """Replace the root key: the new root is signed by the old root key(s) and the new one."""
        coll = self.fetch(gun)
        old_keys = coll.root.role_keys(m.ROOT)
        signers = self._signers_for(old_keys)
        if old_root_key is not None:
            token = self._root_signer(gun, old_root_key)
            signers += [
                (k, token)
                for k, v in old_keys.items()
                if canonical_key_id(v) == token.public.key_id
            ]
        if len(signers) < coll.root.roles[m.ROOT].threshold:
            raise TrustError(
                f"rotating the root of {gun} needs the current root key "
                f"({', '.join(canonical_key_id(k)[:12] for k in old_keys.values())}): "
                "pass --old-root-key FILE|pkcs11:URI"
            )
        try:
            if root_key is None:
                new: NotarySigner = FileSigner(self.keys.generate("root", gun))
            else:
                new = self._root_signer(gun, root_key)
            new_pub = cert_key(self._root_certs(gun, new, root_cert))
        except KeyStoreError as exc:
            raise TrustError(str(exc)) from None
        body = json.loads(coll.raw[m.ROOT])["signed"]
        used = {k for r, v in body["roles"].items() if r != m.ROOT for k in v["keyids"]}
        body["keys"] = {k: v for k, v in body["keys"].items() if k in used}
        body["keys"][new_pub.key_id] = new_pub.to_json()
        body["roles"][m.ROOT] = {"keyids": [new_pub.key_id], "threshold": 1}
        body["version"] = int(body["version"]) + 1
        body["expires"] = _expiry(ROOT_LIFETIME)
        data = envelope(body, [*signers, (new_pub.key_id, new)])
        self.publish(gun, self._with_snapshot(coll, {m.ROOT: data}))
        self._remember_root(gun, data)
        return {"root": new_pub.key_id, "root_canonical": canonical_key_id(new_pub)}

    def add_target(
        self, gun: str, name: str, sha256_hex: str, length: int, roles: list[str] | None = None
    ) -> list[str]:
        coll = self.fetch(gun)
        roles = roles or self._default_roles(coll, name)
        meta = {"hashes": {"sha256": b64(bytes.fromhex(sha256_hex))}, "length": length}

        def add(body: dict[str, Any]) -> None:
            body["targets"] = dict(body.get("targets") or {})
            body["targets"][name] = meta

        self.update(gun, dict.fromkeys(roles, add), coll)
        return roles

    def _default_roles(self, coll: Collection, name: str) -> list[str]:
        writable = self.writable_roles(coll)
        delegated = [r for r in writable if r != m.TARGETS and self._allows(coll, r, name)]
        if delegated:
            return delegated
        if m.TARGETS in writable:
            return [m.TARGETS]
        raise TrustError(
            f"this client holds no key that may sign {name!r} in {coll.gun}: import the targets "
            "key or a delegation key (`trustyard trust key generate`, then ask the owner to "
            "`trustyard trust delegation add`)"
        )

    @staticmethod
    def _allows(coll: Collection, role: str, name: str) -> bool:
        parent = coll.targets.get(m.parent_role(role))
        return (
            parent is not None
            and role in parent.delegations
            and parent.delegations[role].allows(name)
            and coll.allows(m.parent_role(role), name)
        )

    def remove_target(self, gun: str, name: str, roles: list[str] | None = None) -> list[str]:
        coll = self.fetch(gun)
        holding = [r for r, t in coll.targets.items() if name in t.targets]
        writable = set(self.writable_roles(coll))
        roles = roles or [r for r in holding if r in writable]
        if not roles:
            raise TrustError(f"{name!r} is not signed in a role this client can sign in {gun}")

        def remove(body: dict[str, Any]) -> None:
            body["targets"] = {k: v for k, v in (body.get("targets") or {}).items() if k != name}

        self.update(gun, dict.fromkeys(roles, remove), coll)
        return roles

    def add_delegation(
        self,
        gun: str,
        name: str,
        keys: list[PublicKey],
        paths: list[str],
        threshold: int = 1,
    ) -> str:
        role = delegation_role(name)
        if threshold < 1:
            raise TrustError("threshold must be at least 1")
        coll = self.fetch(gun)
        parent = m.parent_role(role)
        if parent not in coll.targets:
            raise TrustError(f"{parent} does not exist in {gun}")
        current = coll.targets[parent].delegations.get(role)
        keyids = list(
            dict.fromkeys([*(current.keys.keyids if current else ()), *(k.key_id for k in keys)])
        )
        if threshold > len(keyids):
            raise TrustError(f"threshold {threshold} is more than the {len(keyids)} keys of {role}")

        def change(body: dict[str, Any]) -> None:
            dele = dict(body.get("delegations") or {})
            dkeys = dict(dele.get("keys") or {})
            dkeys.update({k.key_id: k.to_json() for k in keys})
            others = [r for r in (dele.get("roles") or []) if r.get("name") != role]
            old_paths = list(current.paths) if current else []
            entry = {
                "keyids": keyids,
                "name": role,
                "paths": list(dict.fromkeys([*old_paths, *paths])),
                "threshold": threshold,
            }
            dele["keys"], dele["roles"] = dkeys, [*others, entry]
            body["delegations"] = dele

        self.update(gun, {parent: change}, coll)
        return role

    def remove_delegation(self, gun: str, name: str, key_ids: list[str] | None = None) -> str:
        """Remove a delegation, or only some of its keys (revoking one pusher's key)."""
        role = delegation_role(name)
        coll = self.fetch(gun)
        parent = m.parent_role(role)
        current = coll.targets.get(parent, None)
        if current is None or role not in current.delegations:
            raise TrustError(f"{role} is not a delegation of {gun}")
        dele_now = current.delegations[role]
        drop: set[str] = set()
        for want in key_ids or []:
            match = [
                k
                for k in dele_now.keys.keyids
                if k.startswith(want)
                or canonical_key_id(current.delegation_keys[k]).startswith(want)
            ]
            if not match:
                raise TrustError(f"{role} has no key {want}")
            drop |= set(match)

        def change(body: dict[str, Any]) -> None:
            dele = dict(body.get("delegations") or {})
            roles = []
            for r in dele.get("roles") or []:
                if r.get("name") == role:
                    if not key_ids:
                        continue
                    r = dict(r, keyids=[k for k in r["keyids"] if k not in drop])
                    if not r["keyids"]:
                        continue
                    r["threshold"] = min(int(r["threshold"]), len(r["keyids"]))
                roles.append(r)
            used = {k for r in roles for k in r["keyids"]}
            dele["roles"] = roles
            dele["keys"] = {k: v for k, v in (dele.get("keys") or {}).items() if k in used}
            body["delegations"] = dele

        self.update(gun, {parent: change}, coll)
        return role

    def lookup(self, gun: str, name: str) -> tuple[Collection, list[TargetHit]]:
        coll = self.fetch(gun)
        return coll, coll.lookup(name)


def import_root_pin(config: ClientConfig, data: bytes, source: str, gun: str) -> tuple[str, str]:
    """Pin a known-good root certificate or public key for a GUN (or `prefix*`)."""
    try:
        keyid, what = load_root_material(data, source)
    except PinningError as exc:
        raise TrustError(str(exc)) from None
    pins: dict[str, Any] = {"certs": {}}
    if config.pins_file.exists():
        pins = json.loads(config.pins_file.read_text())
    ids = pins.setdefault("certs", {}).setdefault(gun, [])
    if keyid not in ids:
        ids.append(keyid)
    config.pins_file.parent.mkdir(parents=True, exist_ok=True)
    config.pins_file.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
    return keyid, what


def generate_delegate_key(keys: KeyStore, name: str, out_dir: Path) -> tuple[str, Path]:
    """A delegate's own key (stored encrypted) and its self-signed certificate `NAME.crt`."""
    try:
        key = keys.generate("delegation", "")
    except KeyStoreError as exc:
        raise TrustError(str(exc)) from None
    cert = self_signed_cert(FileSigner(key), name, ROOT_LIFETIME)
    path = out_dir / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key.public.key_id, path


def sha256_b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()
