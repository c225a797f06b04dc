"""One typed, frozen settings object. The only module that reads the environment.

Precedence, highest first: command-line flags, `TRUSTYARD_*` environment variables, the TOML
config file (`--config` or `TRUSTYARD_CONFIG`), built-in defaults.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trustyard.oci.platforms import IndexPlatforms

ENV_PREFIX = "TRUSTYARD_"
# The resolved settings, handed from `trustyard serve` to its worker processes.
_WORKER_ENV = "TRUSTYARD__RESOLVED_SETTINGS"

MiB = 1024 * 1024

RouteGroup = Literal["registry", "trust", "token"]
ROUTE_GROUPS: tuple[RouteGroup, ...] = ("registry", "trust", "token")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "trustyard"


PRIVATE_DIR_MODE = 0o700
"""The data dir holds metadata.db (password hashes, encrypted trust keys) and key files."""
SECRET_FILE_MODE = 0o600


def create_data_dir(path: Path) -> Path:
    """Create the data dir owner-only (whatever the umask); an existing one keeps its mode.

    Changing an existing directory's mode behind an operator's back could break a deliberate
    setup (a backup user's group): `trustyard serve` warns instead, naming the chmod to run.
    """
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


def _json_from_env(value: Any, refusal: str) -> Any:
    """A list setting given as one string (a `TRUSTYARD_*` variable) is JSON; `refusal` is the
    message when it does not parse. Anything else passes through to the model's own checks."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise ValueError(refusal) from None
    return value


class ConfigError(ValueError):
    """The configuration is unusable; the message says which setting and why."""


class TokenAuthSettings(BaseModel):
    """`auth.token`: Distribution-compatible verifier keys plus our issuer's settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Verifier (Distribution's auth.token keys)
    realm: str | None = Field(default=None, description="None: this server's /auth/token")
    service: str = "trustyard"
    issuer: str = "trustyard"
    rootcertbundle: Path | None = None
    jwks: Path | None = None
    signingalgorithms: tuple[str, ...] | None = None
    # Issuer (`/auth/token` on this server)
    issue: bool = True
    signing_key: Path | None = Field(default=None, description="None: generated in data_dir/auth")
    signing_cert: Path | None = None
    algorithm: Literal["ES256", "RS256", "EdDSA"] = "ES256"
    kid_format: Literal["libtrust", "rfc7638", "jwks"] = "libtrust"
    x5c: bool = True
    expiration_seconds: int = Field(default=300, ge=60, le=86400)
    refresh_expiration_seconds: int = Field(default=30 * 86400, ge=60)


class AuthSettings(BaseModel):
    """`auth`: none (default), htpasswd (Basic) or token (Docker token spec)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["none", "htpasswd", "token"] = "none"
    htpasswd: Path | None = None
    basic_realm: str = "trustyard"
    bcrypt_cost: int = Field(default=12, ge=4, le=16)
    max_failed_logins: int = Field(default=5, ge=1)
    max_failed_logins_per_client: int = Field(default=20, ge=1)
    failed_login_window_seconds: float = Field(default=300.0, gt=0)
    max_authorization_bytes: int = Field(default=8192, ge=256)
    token: TokenAuthSettings = Field(default_factory=lambda: TokenAuthSettings())

    @field_validator("mode", mode="before")
    @classmethod
    def _lower_mode(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class TrustSettings(BaseModel):
    """`trust`: the Notary-compatible trust server (docs/trust.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    # Algorithm of the server-managed timestamp/snapshot keys.
    key_algorithm: Literal["ed25519", "ecdsa"] = "ed25519"
    # Encrypts server private keys at rest (TRUSTYARD_TRUST__KEY_PASSPHRASE). None: a random
    # passphrase is generated once into data_dir/trust/passphrase (mode 0600).
    key_passphrase: str | None = Field(default=None, repr=False)
    # Generate new server keys (ECDSA P-256) in a PKCS#11 token instead, e.g.
    # "pkcs11:token=trust?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/pin"
    # (TRUSTYARD_TRUST__KEY_STORE); the PIN may instead be given as key_store_pin
    # (TRUSTYARD_TRUST__KEY_STORE_PIN). None: keys encrypted with key_passphrase in the database.
    key_store: str | None = Field(default=None, repr=False)
    key_store_pin: str | None = Field(default=None, repr=False)
    timestamp_expiry_days: float = Field(default=14.0, gt=0)
    snapshot_expiry_days: float = Field(default=3 * 365.0, gt=0)
    # A timestamp with less time than this left is re-signed when fetched.
    timestamp_refresh_hours: float = Field(default=24.0, ge=0)
    max_upload_bytes: int = Field(default=16 * MiB, ge=1024)
    # `host[:port]/` before repository names in GUNs (how clients reach this registry, e.g.
    # "registry.example.com/"): ACLs and users' namespaces follow a repository into its GUN.
    # None: this server's own `host:port/` (TRUSTYARD_TRUST__GUN_PREFIXES, comma-separated).
    gun_prefixes: tuple[str, ...] | None = None

    @field_validator("key_algorithm", mode="before")
    @classmethod
    def _lower_algorithm(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("gun_prefixes", mode="before")
    @classmethod
    def _split_prefixes(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


class PolicyRuleSettings(BaseModel):
    """One `[[policy.rules]]` entry (docs/policy.md); `require` is checked by its kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    repositories: tuple[str, ...] = ("*",)
    mode: Literal["enforce", "warn"] = "enforce"
    require: dict[str, Any]
    protect_tags: tuple[str, ...] = ()


class PolicySettings(BaseModel):
    """`policy`: signature requirements on the pull path (TRUSTYARD_POLICY__RULES = JSON list)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: tuple[PolicyRuleSettings, ...] = ()

    @field_validator("rules", mode="before")
    @classmethod
    def _json_rules(cls, value: Any) -> Any:
        return _json_from_env(value, "policy.rules must be a JSON list of rules")


class AuditSettings(BaseModel):
    """`audit`: the audit log (docs/operations.md, "Audit log")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    # Manifest GETs: "off", "all", or "sample:N" (one pull in N per worker is recorded).
    pull: str = "sample:100"
    retention_days: float = Field(default=90.0, ge=0, description="0 keeps everything")
    purge_interval_seconds: float = Field(default=3600.0, gt=0)
    # Networks (CIDR) of reverse proxies whose X-Forwarded-For is believed; empty: none is.
    trusted_proxies: tuple[str, ...] = ()
    flush_interval_seconds: float = Field(default=1.0, gt=0, le=60)

    @field_validator("pull")
    @classmethod
    def _pull(cls, value: str) -> str:
        if value in ("off", "all"):
            return value
        kind, _, n = value.partition(":")
        if kind != "sample" or not n.isdigit() or int(n) < 1:
            raise ValueError('audit.pull must be "off", "all" or "sample:N" with N >= 1')
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(
                    f"audit.trusted_proxies: {net!r} is not an address or CIDR"
                ) from None
        return value


class ImmutableTagRule(BaseModel):
    """One `[[lifecycle.immutable]]` entry: tags matching `tags` in matching repositories."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repository: str = Field(min_length=1)
    tags: tuple[str, ...] = Field(min_length=1)


class RetentionRuleSettings(BaseModel):
    """One `[[lifecycle.retention]]` rule (docs/operations.md, "Tag lifecycle")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repository: str = Field(min_length=1)
    tags: tuple[str, ...] = Field(("*",), min_length=1)
    keep_last: Annotated[int, Field(ge=0)] | None = None
    keep_pulled_days: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _keeps_something(self) -> RetentionRuleSettings:
        if self.keep_last is None and self.keep_pulled_days is None:
            raise ValueError(
                f"retention rule for {self.repository!r} sets neither keep_last nor "
                "keep_pulled_days, so it would delete every tag it matches"
            )
        return self


class QuotaSettings(BaseModel):
    """One `[[lifecycle.quotas]]` entry: a namespace's byte limit."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(min_length=1)
    bytes: Annotated[int, Field(gt=0)]


class LifecycleSettings(BaseModel):
    """`lifecycle`: immutable tags and tag history (docs/operations.md, "Tag lifecycle")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    immutable: tuple[ImmutableTagRule, ...] = ()
    # GC keeps manifests a tag pointed at before a move this recent (`trustyard tag restore`);
    # 0 (the default) keeps GC as it was: what no tag names goes after the grace period
    history_keep_days: Annotated[float, Field(ge=0)] = 0.0
    retention: tuple[RetentionRuleSettings, ...] = ()
    # The server applies the retention rules this often (one replica at a time); 0: never
    retention_interval_seconds: Annotated[float, Field(ge=0)] = 0.0
    # Byte quotas per namespace (the first `namespace_depth` components of a repository name)
    quotas: tuple[QuotaSettings, ...] = ()
    default_quota_bytes: Annotated[int, Field(ge=0)] = 0  # namespaces not listed; 0: no limit
    namespace_depth: Annotated[int, Field(ge=1)] = 1

    @field_validator("immutable", "retention", "quotas", mode="before")
    @classmethod
    def _json_rules(cls, value: Any) -> Any:
        return _json_from_env(value, "lifecycle rules must be a JSON list of tables")


class S3Settings(BaseModel):
    """S3-compatible object storage for blobs (`storage_backend = "s3"`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str
    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = None
    prefix: str = ""
    redirect: bool = Field(True, description="blob GETs answer 307 to a presigned URL")
    presign_seconds: int = Field(1200, ge=60, le=7 * 86400)
    part_size: int = Field(8 * MiB, ge=5 * MiB, le=512 * MiB)
    sse: Literal["AES256", "aws:kms"] | None = None
    kms_key_id: str | None = None


class EventEndpointSettings(BaseModel):
    """One `[[events.endpoints]]` webhook (docs/operations.md, Events)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")
    url: str = Field(pattern=r"^https?://[^\s]+$")
    # HMAC-SHA256 of the body, sent as `X-Trustyard-Signature: sha256=<hex>`
    secret: str | None = Field(default=None, repr=False)
    headers: dict[str, str] = {}
    timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    # Empty: every action except pull. Pull events need `pulls = true` as well.
    actions: tuple[str, ...] = ()
    repositories: tuple[str, ...] = ()  # glob patterns (fnmatch); empty: every repository
    media_types: tuple[str, ...] = ()  # of the target; events without a media type pass
    pulls: bool = False
    max_attempts: int = Field(default=12, ge=1, le=1000)  # then dead-lettered


class EventsSettings(BaseModel):
    """`events`: durable webhooks from the outbox table (docs/operations.md, Events)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoints: tuple[EventEndpointSettings, ...] = ()
    poll_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    batch_size: int = Field(default=50, ge=1, le=1000)  # events per envelope (per POST)
    backoff_initial_seconds: float = Field(default=2.0, gt=0)
    backoff_max_seconds: float = Field(default=3600.0, gt=0)
    keep_delivered_seconds: float = Field(default=7 * 86400.0, ge=0, description="0 keeps them")

    @field_validator("endpoints", mode="before")
    @classmethod
    def _json_endpoints(cls, value: Any) -> Any:
        return _json_from_env(value, "events.endpoints must be a JSON list of endpoints")

    @model_validator(mode="after")
    def _unique_names(self) -> EventsSettings:
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError("events.endpoints: every endpoint needs its own name")
        return self


# -- pull-through mirrors (docs/mirror.md) ---------------------------------------------------------
_MIRROR_PREFIX = (
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)


class MirrorSettings(BaseModel):
    """One `[[mirrors]]` table: local repositories under `prefix` mirror `upstream`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prefix: str = Field(min_length=1, max_length=200, pattern=_MIRROR_PREFIX)
    upstream: str = Field(pattern=r"^https?://[^\s/]+/?$")
    # Local `prefix/x` is upstream `upstream_prefix/x` ("" maps it to `x`)
    upstream_prefix: str = Field(default="", pattern=r"^$|" + _MIRROR_PREFIX)
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    password_file: Path | None = None
    password_env: str | None = None
    tls_verify: bool = True
    ca_file: Path | None = None
    ttl_seconds: float = Field(default=300.0, ge=0, description="0: check the upstream every pull")
    fallbacks: tuple[str, ...] = ()  # further upstream base URLs, tried in order
    timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Verified admission (docs/mirror.md): where the upstream's simple signatures are, when not
    # behind its extension API (containers lookaside layout), and which kinds are fetched.
    lookaside: str | None = Field(default=None, pattern=r"^https?://\S+$")
    signatures: tuple[Literal["cosign", "simple-signing"], ...] = ("cosign", "simple-signing")
    # Notary rules (docs/mirror.md): the upstream's trust server (None: `upstream`, where
    # trustyard serves it) and the GUN prefix of its repositories (None: "upstream-host/").
    trust_server: str | None = Field(default=None, pattern=r"^https?://[^\s/]+/?$")
    trust_gun_prefix: str | None = Field(default=None, max_length=255, pattern=r"^[^\s]*$")

    def notary_gun_prefix(self) -> str:
        """What goes before the upstream repository in its GUN (`127.0.0.1:5001/`)."""
        if self.trust_gun_prefix is not None:
            return self.trust_gun_prefix
        return self.upstream.split("://", 1)[1].rstrip("/") + "/"

    @field_validator("fallbacks")
    @classmethod
    def _urls(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for url in value:
            if not url.startswith(("http://", "https://")) or " " in url:
                raise ValueError(f"fallback {url[:100]!r} is not an http(s):// base URL")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> MirrorSettings:
        given = [
            k for k in ("password", "password_file", "password_env") if getattr(self, k) is not None
        ]
        if len(given) > 1:
            raise ValueError(f"mirror {self.prefix!r}: give only one of {', '.join(given)}")
        if given and self.username is None:
            raise ValueError(f"mirror {self.prefix!r}: {given[0]} needs a username")
        return self

    def secret(self) -> str | None:
        """The upstream password, read from the file or the environment variable named."""
        if self.password_env is not None:
            if self.password_env not in os.environ:
                raise ConfigError(
                    f"mirror {self.prefix!r}: password_env names {self.password_env}, which is not set"
                )
            return os.environ[self.password_env]
        if self.password_file is not None:
            try:
                return self.password_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"mirror {self.prefix!r}: cannot read password_file {self.password_file}: "
                    f"{exc.strerror or exc}"
                ) from None
        return self.password


def _mirror_prefixes(mirrors: tuple[MirrorSettings, ...]) -> tuple[MirrorSettings, ...]:
    """No repository may fall under two mirrors: prefixes must not nest or repeat."""
    for i, a in enumerate(mirrors):
        for b in mirrors[i + 1 :]:
            short, long = sorted((a.prefix, b.prefix), key=len)
            if long == short or long.startswith(short + "/"):
                raise ValueError(
                    f"mirror prefixes {a.prefix!r} and {b.prefix!r} overlap: every repository "
                    "must belong to at most one mirror"
                )
    return mirrors


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(5000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    workers: int = Field(1, ge=1, le=64)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Registry behaviour
    delete_enabled: bool = True
    max_manifest_bytes: int = Field(4 * MiB, ge=1024)
    # Children of a pushed index that must already exist: "all", "none" or "linux/amd64,…"
    # (Distribution's validation.manifests.indexes.platforms; trustyard.oci.platforms)
    index_platforms: str = "all"
    max_blob_bytes: int = Field(64 * 1024 * MiB, ge=0, description="0 means no limit")
    # Docker schema 1 manifests (docs/schema1.md): "refuse" them with a clear message, or
    # "verify" every JWS signature and accept them (TRUSTYARD_SCHEMA1=verify)
    schema1: Literal["refuse", "verify"] = "refuse"
    fsync: bool = True
    # Upload bytes, and the uncached chunks of a blob's first read, bypass the page cache
    # (O_DIRECT) where the filesystem allows it (storage/appender.py, storage/blob_reader.py)
    direct_io: bool = True
    # Simple-signing signatures stored through the extension API (docs/signatures.md)
    max_signature_bytes: int = Field(64 * 1024, ge=1024, le=4 * MiB)
    max_signatures_per_manifest: int = Field(64, ge=1, le=1000)  # by keys no policy trusts
    max_signatures_per_signer: int = Field(8, ge=1, le=1000)
    # Scale-out backends (docs/deployment.md); None keeps the embedded default
    database_url: str | None = Field(None, description="postgresql://user:pass@host/db")
    storage_backend: Literal["filesystem", "s3"] = "filesystem"
    s3: S3Settings | None = None
    redis_url: str | None = Field(
        None, description="redis://host:6379/0: shared cache, locks, limits"
    )
    # Garbage collection and upload expiry
    gc_grace_seconds: float = Field(3600.0, ge=0)
    # Online GC inside the server on a timer (one replica at a time with Redis, under the same
    # lock as `trustyard gc`); 0, the default, leaves GC to the CLI (cron).
    gc_interval_seconds: float = Field(0.0, ge=0, description="0 disables")
    upload_max_age_seconds: float = Field(86400.0, ge=0)
    upload_purge_interval_seconds: float = Field(3600.0, ge=0, description="0 disables")
    # Scheduled scrub inside the server (docs/backup.md): re-hash blobs and manifests, quarantine
    # corrupt blobs. Off by default (`trustyard scrub` from cron does the same); with Redis, one
    # replica at a time.
    scrub_interval_seconds: float = Field(0.0, ge=0, description="0 disables")
    scrub_rate_mbps: float = Field(
        50.0, ge=0, description="MB/s a scheduled scrub reads; 0: no cap"
    )
    # Operator endpoints (docs/operations.md): /healthz and /readyz always; /metrics (Prometheus
    # text format, every worker counted) unless this is off
    metrics: bool = True
    # Authentication and authorization (docs/auth.md)
    auth: AuthSettings = Field(default_factory=lambda: AuthSettings())
    # Notary-compatible trust server (docs/trust.md)
    trust: TrustSettings = Field(default_factory=lambda: TrustSettings())
    # Signature policy on the pull path (docs/policy.md)
    policy: PolicySettings = Field(default_factory=lambda: PolicySettings())
    # Route groups this process serves (`trustyard serve --only token`); empty: all of them
    only: tuple[RouteGroup, ...] = ()
    # Audit log (docs/operations.md)
    audit: AuditSettings = Field(default_factory=lambda: AuditSettings())
    # Durable webhooks (docs/operations.md, Events)
    events: EventsSettings = Field(default_factory=lambda: EventsSettings())
    # Tag lifecycle: immutable tags, tag history (docs/operations.md)
    lifecycle: LifecycleSettings = Field(default_factory=lambda: LifecycleSettings())
    # Web UI at /ui/ (docs/ui.md): on by default; a login session lasts this long
    ui: bool = True
    ui_session_seconds: int = Field(8 * 3600, ge=60, le=30 * 86400)
    # Pull-through mirrors of upstream registries (docs/mirror.md); TRUSTYARD_MIRRORS is JSON
    mirrors: tuple[MirrorSettings, ...] = ()

    @field_validator("mirrors", mode="before")
    @classmethod
    def _json_mirrors(cls, value: Any) -> Any:
        return _json_from_env(value, "mirrors must be a JSON list of mirror tables")

    @field_validator("mirrors")
    @classmethod
    def _check_mirrors(cls, value: tuple[MirrorSettings, ...]) -> tuple[MirrorSettings, ...]:
        return _mirror_prefixes(value)

    @field_validator("only", mode="before")
    @classmethod
    def _split_only(cls, value: Any) -> Any:
        return _route_groups(value)

    @model_validator(mode="before")
    @classmethod
    def _token_only_implies_token_auth(cls, data: Any) -> Any:
        """`only = ["token"]` runs the issuer alone: token auth is implied unless set otherwise."""
        if not isinstance(data, dict) or set(_route_groups(data.get("only")) or ()) != {"token"}:
            return data
        auth = data.get("auth")
        if isinstance(auth, AuthSettings):
            if auth.mode == "none":
                data = {**data, "auth": auth.model_copy(update={"mode": "token"})}
        elif auth is None or isinstance(auth, dict):
            auth = dict(auth or {})
            if str(auth.get("mode", "none")).lower() == "none":
                data = {**data, "auth": {**auth, "mode": "token"}}
        return data

    @model_validator(mode="after")
    def _token_group_needs_issuer(self) -> Settings:
        if "token" in self.only and (self.auth.mode != "token" or not self.auth.token.issue):
            raise ValueError(
                "only includes 'token' (the token issuer) but auth.mode is "
                f"{self.auth.mode!r} and auth.token.issue is {self.auth.token.issue}: set "
                "auth.mode = 'token' and keep auth.token.issue = true"
            )
        return self

    @property
    def route_groups(self) -> frozenset[str]:
        """What this process mounts: `only`, or every group when `only` is empty."""
        return frozenset(self.only or ROUTE_GROUPS)

    @field_validator("index_platforms", mode="before")
    @classmethod
    def _index_platforms(cls, value: Any) -> Any:
        if isinstance(value, str | list | tuple):
            return str(IndexPlatforms.parse(value))
        return value

    @field_validator("log_level", "schema1", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _backend_settings(self) -> Settings:
        if self.storage_backend == "s3" and self.s3 is None:
            raise ValueError("storage_backend = 's3' needs an [s3] table with at least 'bucket'")
        return self

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "metadata.db"

    @property
    def metadata_target(self) -> Path | str:
        """Where metadata lives: `database_url` (PostgreSQL) or the embedded SQLite file."""
        return self.database_url or self.database_path


def _route_groups(value: Any) -> Any:
    """`"token"`, `"token,registry"` or a list: a tuple of group names (validated by pydantic)."""
    if isinstance(value, str):
        return tuple(part.strip().lower() for part in value.split(",") if part.strip())
    return value


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in Settings.model_fields:
        key = ENV_PREFIX + field.upper()
        if key in environ:
            values[field] = environ[key]
    # Nested settings: TRUSTYARD_AUTH__MODE, TRUSTYARD_AUTH__TOKEN__REALM, TRUSTYARD_S3__BUCKET, ...
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or "__" not in key[len(ENV_PREFIX) :]:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        if path[0] not in Settings.model_fields or not all(path):
            continue
        target = values.setdefault(path[0], {})
        for part in path[1:-1]:
            if not isinstance(target, dict):
                break
            target = target.setdefault(part, {})
        if isinstance(target, dict):
            target[path[-1]] = value
    return values


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    """Update `base` with `extra`, merging nested tables rather than replacing them."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _from_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from defaults, file, environment and `overrides` (None values ignored)."""
    environ = dict(os.environ)
    values: dict[str, Any] = {}
    file = config_file or (
        Path(environ[ENV_PREFIX + "CONFIG"]) if ENV_PREFIX + "CONFIG" in environ else None
    )
    if file is not None:
        values.update(_from_file(file))
    _merge(values, _from_env(environ))
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def export_for_workers(settings: Settings) -> None:
    """Pass the resolved settings to worker processes started after this call."""
    os.environ[_WORKER_ENV] = settings.model_dump_json()


def settings_for_worker() -> Settings:
    """Settings in a worker process: what `export_for_workers` passed, else the usual sources."""
    raw = os.environ.get(_WORKER_ENV)
    return Settings.model_validate_json(raw) if raw else load_settings()
