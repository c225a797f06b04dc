"""Signature policy on the pull (and optionally push) path: refuse what is not signed as required.

A small plug-in framework (docs/policy.md):

* a `SignatureCheck` has a `kind` and `async verify(repository, record, tag) -> Decision`;
* `register_kind(name, factory)` adds a kind; a factory builds a check from the rule's `require`
  table and a `PolicyContext` (blob and manifest readers, the trust store);
* kinds here: `notary` (Notary v1 trust data from our own trust store or any Notary server,
  verified with pinned CAs / root key IDs), `annotations` (ir-sign annotations verified with
  root-ca.pub), `any-of` and `all-of`; `cosign` and `simple-signing` live in
  policy_signatures.py, `authority` in policy_authority.py;
* rules match repositories by glob (first match wins), `mode = "enforce" | "warn"`, and
  `protect_tags` refuses pushes that move a matching tag to a manifest that does not verify.

Every decision is logged as a structlog `policy_decision` event.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import structlog

from trustyard.crypto.ecdsa import load_public_key
from trustyard.metadata.base import ManifestRecord
from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest
from trustyard.oci.errors import ErrorCode, RegistryError
from trustyard.oci.manifest import Descriptor, parse_manifest
from trustyard.signing.errors import SigningError
from trustyard.signing.image import check_manifest, verify_manifest
from trustyard.signing.layout import parse_json
from trustyard.telemetry import ALLOWED, DENIED, WARNED, NoTelemetry, Telemetry
from trustyard.trust.client.pinning import TrustPinning
from trustyard.trust.client.remote import (
    RemoteFiles,
    TrustedCopies,
    TrustServerUnreachable,
    fetch_verified,
)
from trustyard.trust.client.verify import Collection, VerifyError

log = structlog.get_logger("trustyard.policy")
MAX_CONFIG = 4 * 1024 * 1024
MAX_INDEX_BYTES = 4 * 1024 * 1024  # a signed target larger than this is no index we serve
MAX_PARENT_LOOKUPS = 256  # signed targets looked up as possible parents of a pulled child


class PolicyConfigError(ValueError):
    """A policy rule cannot be built; the message names the rule and the option."""


@dataclass(frozen=True)
class Decision:
    ok: bool
    reason: str
    signer: str | None = None


class SignatureCheck(Protocol):
    """One way of deciding whether a manifest is signed as required."""

    @property
    def kind(self) -> str: ...

    async def verify(self, repository: str, record: ManifestRecord, tag: str | None) -> Decision:
        """Decide for `record`, pulled (or pushed) by `tag`, or by digest when `tag` is None."""


@runtime_checkable
class UploadVetter(Protocol):
    """A check that judges simple signatures as they are uploaded (registry/signatures.py):
    one that names a key the check trusts must verify with it, or it is refused."""

    def names_trusted_key(self, key_ids: list[str]) -> bool:
        """Whether any of these (claimed, 16-hex) signer key IDs is a trusted key."""

    async def vet_upload(self, content: bytes) -> tuple[bool, str]:
        """(True, signer fingerprint) when a trusted key verifies `content`, else (False, why)."""


class TrustFiles(Protocol):
    async def get(self, gun: str, role: str) -> bytes | None:
        """The current metadata file of `role` in `gun`, or None."""


class MirroredTrust(Protocol):
    """Notary trust data of mirrored repositories (registry/mirror_notary.py): their signatures
    live in the upstream's trust server under the upstream's GUN, not in ours."""

    def gun(self, repository: str) -> str | None:
        """The upstream GUN of a mirrored `repository`; None when it is not mirrored."""

    async def collection(self, gun: str, pinning: TrustPinning) -> Collection:
        """The verified collection of `gun`; raises `VerifyError` or `TrustServerUnreachable`."""


@dataclass
class PolicyContext:
    """What checks may use: the registry's blobs and manifests, and the trust store."""

    read_blob: Callable[[Digest, int], Awaitable[bytes | None]]
    get_manifest: Callable[[str, Digest], Awaitable[ManifestRecord | None]]
    trust_files: TrustFiles | None = None
    # For signature kinds stored next to the image (registry/policy_signatures.py):
    # a manifest by tag (cosign's `sha256-<hex>.sig`), the referrers of a digest (with the
    # tag-schema fallback folded in) and the simple signatures of the extension API.
    get_tagged: Callable[[str, str], Awaitable[ManifestRecord | None]] | None = None
    referrers: Callable[[str, Digest], Awaitable[list[Descriptor]]] | None = None
    simple_signatures: Callable[[str, Digest], Awaitable[list[bytes]]] | None = None
    # Records every decision as an audit event (the trust audit table; trust/server/policy_audit.py).
    audit: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
    # The namespace authority's statements as the registry stores them (kind `authority`,
    # registry/policy_authority.py): raw JWS bytes, evaluated by the check against its roots.
    authority_statements: Callable[[], Awaitable[list[bytes]]] | None = None
    # A number that changes whenever a statement is added (the store is append-only: its count);
    # lets the kind re-evaluate at once instead of waiting for its cache to age out.
    authority_generation: Callable[[], Awaitable[int]] | None = None
    # A mirrored repository (registry/mirror_admission.py): the upstream repository names a
    # signature's identity may claim for it (`hub/alpine` -> `library/alpine`); empty for every
    # repository that is not mirrored, so their identity checks are unchanged.
    identity_aliases: Callable[[str], tuple[str, ...]] | None = None
    # Mirrored repositories: `notary` rules read the upstream's trust data (its GUN, pinned by
    # the rule's root keys / CA) instead of our trust store. None: no mirror has trust data.
    mirrored_trust: MirroredTrust | None = None

    def identity_names(self, repository: str) -> tuple[str, ...]:
        """`repository` and the upstream names it mirrors, as signature identities may name it."""
        if self.identity_aliases is None:
            return (repository,)
        return (repository, *self.identity_aliases(repository))


CheckFactory = Callable[[dict[str, Any], PolicyContext], SignatureCheck]
KINDS: dict[str, CheckFactory] = {}


def register_kind(name: str, factory: CheckFactory) -> None:
    """Make `require = {kind = name, …}` available in policy rules."""
    KINDS[name] = factory


def build_check(spec: dict[str, Any], ctx: PolicyContext) -> SignatureCheck:
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise PolicyConfigError(
            f"unknown signature kind {kind!r}; known: {', '.join(sorted(KINDS))}"
        )
    return KINDS[kind](spec, ctx)


def _str_list(spec: dict[str, Any], key: str) -> list[str]:
    value = spec.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyConfigError(f"{key} must be a string or a list of strings")
    return value


# -- notary ---------------------------------------------------------------------------------------
# The fetch and verification (remote servers read under size caps and deadlines, timestamp and
# snapshot required, trusted copies against rollback) live in trust/client_remote.py.
HttpTrustFiles = RemoteFiles  # the name this class had here


class NotaryCheck:
    """The tag must be a target of the GUN `gun_prefix + repository` with the manifest's
    digest and size, in trust data whose root is pinned (`ca` file or `root_keys`)."""

    kind = "notary"

    def __init__(self, spec: dict[str, Any], ctx: PolicyContext) -> None:
        self.ctx = ctx
        self.gun_prefix = str(spec.get("gun_prefix", ""))
        self.roles = _str_list(spec, "roles")
        root_keys = _str_list(spec, "root_keys")
        ca = spec.get("ca")
        if ca is not None and not isinstance(ca, str):
            raise PolicyConfigError("notary: ca must be the path of a PEM file")
        if ca is not None and not Path(ca).is_file():
            raise PolicyConfigError(f"notary: ca file {ca} does not exist")
        pinned = bool(root_keys or ca)
        self.root_keys = tuple(k.lower() for k in root_keys)
        self.ca = Path(ca) if ca else None
        self.pinning = TrustPinning(
            certs={self.gun_prefix + "*": tuple(k.lower() for k in root_keys)} if root_keys else {},
            ca={self.gun_prefix: Path(ca)} if ca else {},
            disable_tofu=pinned,
        )
        server = spec.get("server")
        if server is not None:
            self.files: TrustFiles | None = RemoteFiles(str(server), spec.get("server_ca"))
        else:
            self.files = ctx.trust_files
        if self.files is None:
            raise PolicyConfigError("notary: no trust store here; set server = URL")
        # A remote server is remembered against rollback; our own trust store is trusted.
        self.trusted = TrustedCopies() if server is not None else None

    def pinning_for(self, gun: str) -> TrustPinning:
        """The rule's pins applied to exactly `gun` (a mirror's upstream GUN, which the rule's
        `gun_prefix` does not describe); no pin: trust on first use, as for local GUNs."""
        return TrustPinning(
            certs={gun: self.root_keys} if self.root_keys else {},
            ca={gun: self.ca} if self.ca else {},
            disable_tofu=bool(self.root_keys or self.ca),
        )

    async def verify(self, repository: str, record: ManifestRecord, tag: str | None) -> Decision:
        mirrored = self.ctx.mirrored_trust
        upstream_gun = mirrored.gun(repository) if mirrored is not None else None
        gun = upstream_gun or self.gun_prefix + repository
        assert self.files is not None
        try:
            if mirrored is not None and upstream_gun is not None:
                coll = await mirrored.collection(upstream_gun, self.pinning_for(upstream_gun))
            else:
                coll = await fetch_verified(self.files, gun, self.pinning, self.trusted)
        except VerifyError as exc:
            return Decision(False, f"notary trust data of {gun}: {exc}")
        except TrustServerUnreachable as exc:
            return Decision(False, f"notary server unreachable for {gun}: {exc}")
        want = record.digest.hex if record.digest.algorithm == "sha256" else None
        if tag is not None:
            return self._by_tag(coll, gun, record, tag, want)
        if want is None:
            return Decision(False, f"{record.digest} is not a sha256 digest")
        found = [(n, h) for n, h in coll.by_digest(want) if not self.roles or h.role in self.roles]
        if found:
            name, hit = found[0]
            return Decision(True, f"signed as {name} in {hit.role}", ",".join(hit.signers))
        return await self._signed_parent(coll, gun, repository, record)

    def _by_tag(
        self, coll: Collection, gun: str, record: ManifestRecord, tag: str, want: str | None
    ) -> Decision:
        """A pull by tag: the tag must be signed (in `roles`) as exactly this manifest."""
        hits = [h for h in coll.lookup(tag) if not self.roles or h.role in self.roles]
        if not hits:
            return Decision(False, f"tag {tag} is not signed in {gun}")
        hit = hits[0]
        if hit.sha256 != want or hit.meta.length != record.size:
            return Decision(
                False,
                f"tag {tag} is signed in {gun} ({hit.role}) as sha256:{hit.sha256}, but the "
                f"registry holds {record.digest} (the tag moved after signing)",
            )
        return Decision(True, f"tag {tag} signed in {hit.role}", ",".join(hit.signers))

    async def _signed_parent(
        self, coll: Collection, gun: str, repository: str, record: ManifestRecord
    ) -> Decision:
        """A child of a signed index: the index's target must count under the same rules as a
        direct hit (the `roles` filter, the signed size), or an index signed in a role the
        rule ignores would admit its children."""
        looked = 0
        for role_name in sorted(coll.targets):
            if self.roles and role_name not in self.roles:
                continue
            for name, meta in coll.targets[role_name].targets.items():
                h = meta.hashes.get("sha256")
                if h is None or meta.length > MAX_INDEX_BYTES:
                    continue
                looked += 1
                if looked > MAX_PARENT_LOOKUPS:
                    return Decision(
                        False,
                        f"{record.digest} is not signed in {gun} (looked for a signed parent "
                        f"index among the first {MAX_PARENT_LOOKUPS} targets only)",
                    )
                parent = await self.ctx.get_manifest(repository, Digest("sha256", h.hex()))
                if (
                    parent is None
                    or parent.media_type not in mt.INDEXES
                    or parent.size != meta.length
                ):
                    continue
                try:
                    index = parse_manifest(parent.content, parent.media_type, schema1_ok=True)
                except RegistryError:
                    continue
                if any(c.digest == record.digest for c in index.children):
                    signers = ",".join(coll.signers[role_name])
                    return Decision(
                        True,
                        f"child of signed index {parent.digest} ({name} in {role_name})",
                        signers,
                    )
        return Decision(False, f"{record.digest} is not signed in {gun}")


# -- annotations (ir-sign) ------------------------------------------------------------------------
class AnnotationsCheck:
    """ir-sign annotations: the vendor key is endorsed by `root_ca_pub` and signs the config."""

    kind = "annotations"

    def __init__(self, spec: dict[str, Any], ctx: PolicyContext) -> None:
        self.ctx = ctx
        path = spec.get("root_ca_pub")
        if not isinstance(path, str):
            raise PolicyConfigError("annotations: root_ca_pub (path of root-ca.pub) is required")
        try:
            self.root_pub = load_public_key(Path(path).read_bytes(), path)
        except OSError as exc:
            raise PolicyConfigError(f"annotations: cannot read {path}: {exc.strerror}") from None
        except SigningError as exc:
            raise PolicyConfigError(f"annotations: {exc}") from None

    async def verify(self, repository: str, record: ManifestRecord, tag: str | None) -> Decision:
        digest = str(record.digest)
        try:
            manifest = parse_json(record.content, f"manifest {digest}")
            config = check_manifest(manifest, digest)
            config_digest = Digest.parse(str(config.get("digest")))
        except (SigningError, RegistryError) as exc:
            return Decision(False, f"not a signable image manifest: {exc}")
        data = await self.ctx.read_blob(config_digest, MAX_CONFIG)

        def config_sha384() -> bytes:
            if data is None:
                raise SigningError(f"config blob {config_digest} is not in the registry")
            actual = hashlib.new(config_digest.algorithm, data).hexdigest()
            if actual != config_digest.hex or len(data) != config.get("size"):
                raise SigningError(f"config blob does not match {config_digest}")
            return hashlib.sha384(data).digest()

        report = verify_manifest(digest, manifest, config, config_sha384, self.root_pub)
        if report.ok:
            return Decision(
                True, "ir-sign signature endorsed by root CA", ",".join(report.verified)
            )
        failed = [c.text for c in report.checks if c.status != "ok"]
        return Decision(False, "; ".join(failed) or "not signed")


# -- any-of ---------------------------------------------------------------------------------------
class AnyOfCheck:
    kind = "any-of"

    def __init__(self, spec: dict[str, Any], ctx: PolicyContext) -> None:
        specs = spec.get("of")
        if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
            raise PolicyConfigError("any-of: `of` must be a non-empty list of requirements")
        self.checks = [build_check(s, ctx) for s in specs]

    async def verify(self, repository: str, record: ManifestRecord, tag: str | None) -> Decision:
        reasons = []
        for check in self.checks:
            decision = await check.verify(repository, record, tag)
            if decision.ok:
                return Decision(True, f"{check.kind}: {decision.reason}", decision.signer)
            reasons.append(f"{check.kind}: {decision.reason}")
        return Decision(False, " | ".join(reasons))


# -- all-of ---------------------------------------------------------------------------------------
class AllOfCheck:
    """Every requirement must hold (e.g. a cosign signature *and* an authorized signer)."""

    kind = "all-of"

    def __init__(self, spec: dict[str, Any], ctx: PolicyContext) -> None:
        specs = spec.get("of")
        if not isinstance(specs, list) or not specs or not all(isinstance(s, dict) for s in specs):
            raise PolicyConfigError("all-of: `of` must be a non-empty list of requirements")
        self.checks = [build_check(s, ctx) for s in specs]

    async def verify(self, repository: str, record: ManifestRecord, tag: str | None) -> Decision:
        reasons, signers = [], []
        for check in self.checks:
            decision = await check.verify(repository, record, tag)
            if not decision.ok:
                return Decision(False, f"{check.kind}: {decision.reason}")
            reasons.append(f"{check.kind}: {decision.reason}")
            if decision.signer:
                signers.append(decision.signer)
        return Decision(True, " & ".join(reasons), ",".join(signers) or None)


register_kind("notary", NotaryCheck)
register_kind("annotations", AnnotationsCheck)
register_kind("any-of", AnyOfCheck)
register_kind("all-of", AllOfCheck)


# -- rules ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    name: str
    repositories: tuple[str, ...]
    check: SignatureCheck
    mode: str = "enforce"
    protect_tags: tuple[str, ...] = ()

    def matches(self, repository: str) -> bool:
        return any(fnmatch.fnmatchcase(repository, p) for p in self.repositories)


@dataclass
class Policy:
    rules: list[Rule] = field(default_factory=list)
    audit: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
    telemetry: Telemetry = field(default_factory=NoTelemetry)  # http.app sets the real one

    def rule_for(self, repository: str) -> Rule | None:
        return next((r for r in self.rules if r.matches(repository)), None)

    async def _decide(
        self, rule: Rule, action: str, repository: str, record: ManifestRecord, tag: str | None
    ) -> None:
        try:
            decision = await rule.check.verify(repository, record, tag)
        except Exception as exc:  # a broken check must deny, never let through silently
            log.exception("policy_check_failed", rule=rule.name)
            decision = Decision(False, f"check failed: {exc.__class__.__name__}")
        event = {
            "action": action,
            "repository": repository,
            "reference": tag or str(record.digest),
            "digest": str(record.digest),
            "policy": rule.name,
            "kind": rule.check.kind,
            "mode": rule.mode,
            "allowed": decision.ok,
            "reason": decision.reason,
            "signer": decision.signer,
        }
        log.info("policy_decision", **event)
        outcome = ALLOWED if decision.ok else DENIED if rule.mode == "enforce" else WARNED
        self.telemetry.policy_decision(rule.name, action, outcome)
        if self.audit is not None:
            try:
                await self.audit(repository, event)
            except Exception:  # the structlog event above still records the decision
                log.exception("policy_audit_failed", policy=rule.name, repository=repository)
        if not decision.ok and rule.mode == "enforce":
            what = f"{repository}:{tag}" if tag else f"{repository}@{record.digest}"
            raise RegistryError(
                ErrorCode.DENIED,
                f"{action} of {what} denied by signature policy {rule.name!r} "
                f"(requires {rule.check.kind}): {decision.reason}",
                detail={"policy": rule.name, "reason": decision.reason},
            )

    def upload_vetters(self, repository: str) -> list[UploadVetter]:
        """The checks of `repository`'s rule that vet simple-signature uploads."""
        rule = self.rule_for(repository)
        found: list[UploadVetter] = []
        todo: list[SignatureCheck] = [rule.check] if rule is not None else []
        while todo:
            check = todo.pop(0)
            if isinstance(check, AnyOfCheck | AllOfCheck):
                todo.extend(check.checks)
            elif isinstance(check, UploadVetter):
                found.append(check)
        return found

    async def on_pull(self, repository: str, tag: str | None, record: ManifestRecord) -> None:
        rule = self.rule_for(repository)
        if rule is not None:
            await self._decide(rule, "pull", repository, record, tag)

    async def on_push(self, repository: str, tags: list[str], record: ManifestRecord) -> None:
        rule = self.rule_for(repository)
        if rule is None or not rule.protect_tags:
            return
        for tag in tags:
            if any(fnmatch.fnmatchcase(tag, p) for p in rule.protect_tags):
                await self._decide(rule, "push", repository, record, tag)


def build_policy(rules: list[dict[str, Any]], ctx: PolicyContext) -> Policy:
    built = []
    for i, raw in enumerate(rules):
        name = str(raw.get("name") or f"rule-{i + 1}")
        try:
            check = build_check(dict(raw.get("require") or {}), ctx)
        except PolicyConfigError as exc:
            raise PolicyConfigError(f"policy rule {name!r}: {exc}") from None
        built.append(
            Rule(
                name=name,
                repositories=tuple(raw.get("repositories") or ("*",)),
                check=check,
                mode=str(raw.get("mode", "enforce")),
                protect_tags=tuple(raw.get("protect_tags") or ()),
            )
        )
    return Policy(built, audit=ctx.audit)


# -- side-effect-free evaluation (the web UI's policy view) ---------------------------------------
@dataclass(frozen=True)
class Verdict:
    """What a pull of one manifest would meet: the rule that applies (None: no rule, served),
    its decision, and each signature check's own decision (any-of / all-of opened up)."""

    served: bool
    rule: str | None = None
    mode: str | None = None
    kind: str | None = None
    decision: Decision | None = None
    checks: tuple[tuple[str, Decision], ...] = ()


def _leaves(check: SignatureCheck) -> list[SignatureCheck]:
    if isinstance(check, AnyOfCheck | AllOfCheck):
        return [leaf for child in check.checks for leaf in _leaves(child)]
    return [check]


async def _verify(
    check: SignatureCheck, repository: str, record: ManifestRecord, tag: str | None
) -> Decision:
    try:
        return await check.verify(repository, record, tag)
    except Exception as exc:  # as `Policy._decide`: a broken check denies
        return Decision(False, f"check failed: {exc.__class__.__name__}")


async def evaluate(
    policy: Policy | None, repository: str, record: ManifestRecord, tag: str | None
) -> Verdict:
    """Would a pull of `record` (by `tag`, or by digest) be served, by which rule, and why?
    Runs the same checks as `Policy.on_pull` but logs, audits and raises nothing."""
    rule = policy.rule_for(repository) if policy is not None else None
    if rule is None:
        return Verdict(served=True)
    decision = await _verify(rule.check, repository, record, tag)
    leaves = _leaves(rule.check)
    checks: list[tuple[str, Decision]] = []
    if leaves != [rule.check]:
        for leaf in leaves:
            checks.append((leaf.kind, await _verify(leaf, repository, record, tag)))
    else:
        checks.append((rule.check.kind, decision))
    served = decision.ok or rule.mode != "enforce"
    return Verdict(served, rule.name, rule.mode, rule.check.kind, decision, tuple(checks))
