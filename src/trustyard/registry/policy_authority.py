"""Policy kind `authority` (issue 20 part 2): a signature of any kind counts only when the
namespace authority granted its key for the repository.

`require = {kind = "authority", roots = ["/etc/trustyard/authority-root.pem", …]}`. The
statements the registry stores (`PolicyContext.authority_statements`) are evaluated against
the rule's roots (`authority/statements.evaluate`) into a `Graph`; every signature found on the
manifest (JWS schema 1 signers, ir-sign annotations, cosign in all its shapes, simple signatures,
the keys of the Notary roles that sign it in our trust store) is judged by `signing/authority_match.py`, the module `trustyard verify` uses too.

The evaluated Graph is cached per rule: statements change rarely and evaluating them checks
every x509 chain and JWS signature. It is evaluated again when the store's generation (its
statement count: the store is append-only) changes, so a new grant or revocation takes effect on
the next pull on every replica, and at least every `GRAPH_TTL` seconds, for certificates that
expire with time alone; a grant's own expiry is checked on every decision.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trustyard.authority.roots import RootsError, load_root_files
from trustyard.authority.statements import evaluate
from trustyard.crypto.jws import JwsError, verify_schema1
from trustyard.crypto.keyid import libtrust_kid, spki_der
from trustyard.crypto.notary_keys import KeyError_ as NotaryKeyError
from trustyard.metadata.base import ManifestRecord
from trustyard.oci import jsonbounds
from trustyard.oci import mediatypes as mt
from trustyard.oci.digest import Digest
from trustyard.oci.errors import RegistryError
from trustyard.registry.policy import (
    MAX_CONFIG,
    Decision,
    PolicyConfigError,
    PolicyContext,
    register_kind,
)
from trustyard.registry.policy_signatures import MAX_COSIGN_ENTRIES, cosign_entries
from trustyard.registry.signature_artifacts import signature_artifact_problem
from trustyard.signing import annotations as ann
from trustyard.signing.authority_match import (
    GrantedKeys,
    Verdict,
    judge_annotations,
    judge_cosign,
    judge_jws,
    judge_simple,
    statement_keys,
    summarize,
)
from trustyard.trust.client.pinning import TrustPinning
from trustyard.trust.client.remote import TrustServerUnreachable, fetch_verified
from trustyard.trust.client.verify import Collection, VerifyError

GRAPH_TTL = 60.0  # seconds an evaluated Graph is reused at most (see the module docstring)
MAX_KEY_CHECKS = 65536  # cosign signature checks (entries x keys) per decision
MIN_COSIGN_ENTRIES = 64  # cosign entries looked at however many keys there are
MAX_SIMPLE = 64  # simple signatures judged per decision (gpg runs only for granted keys)


class GraphCache:
    """The last evaluated Graph (as GrantedKeys), reused until the statements' generation
    changes or it is `ttl` seconds old (certificates and grants expire with time alone);
    one evaluation at a time."""

    def __init__(
        self,
        load: Callable[[], Awaitable[GrantedKeys]],
        generation: Callable[[], Awaitable[int]] | None = None,
        ttl: float = GRAPH_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.load, self.generation, self.ttl, self.clock = load, generation, ttl, clock
        self._keys: tuple[float, int | None, GrantedKeys] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> GrantedKeys:
        async with self._lock:
            gen = await self.generation() if self.generation is not None else None
            cached = self._keys
            if cached is None or cached[1] != gen or self.clock() - cached[0] >= self.ttl:
                cached = self._keys = (self.clock(), gen, await self.load())
            return cached[2]


class AuthorityCheck:
    """At least one signature on the manifest is by a key the authority granted for the
    repository's namespace, and verifies with that key."""

    kind = "authority"

    def __init__(self, spec: dict[str, Any], ctx: PolicyContext) -> None:
        paths = spec.get("roots")
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise PolicyConfigError("authority: roots must be a non-empty list of PEM files")
        try:
            self.roots = load_root_files([Path(p) for p in paths])
        except RootsError as exc:
            raise PolicyConfigError(f"authority: {exc}") from None
        if ctx.authority_statements is None:
            raise PolicyConfigError("authority: this registry serves no authority statements")
        if ctx.get_tagged is None or ctx.referrers is None or ctx.simple_signatures is None:
            raise PolicyConfigError("authority: this registry gives policies no signature readers")
        self.ctx = ctx
        self.graphs = GraphCache(self._evaluate, ctx.authority_generation)
        gun_prefix = spec.get("gun_prefix", "")
        if not isinstance(gun_prefix, str):
            raise PolicyConfigError("authority: gun_prefix must be a string")
        self.gun_prefix = gun_prefix
        # Notary: our own trust store, trusted as the `notary` kind trusts it (first use); which
        # delegation keys count is the authority's decision, not a pin's.
        self.pinning = TrustPinning(certs={}, ca={}, disable_tofu=False)

    async def _evaluate(self) -> GrantedKeys:
        assert self.ctx.authority_statements is not None
        statements = await self.ctx.authority_statements()

        def evaluated() -> GrantedKeys:
            graph = evaluate(statements, self.roots, datetime.now(UTC))
            return GrantedKeys(graph, statement_keys(statements))

        return await asyncio.to_thread(evaluated)

    async def verify(self, repository: str, record: ManifestRecord, tag: str | None) -> Decision:
        if await signature_artifact_problem(self.ctx, record) is None:
            return Decision(True, "a cosign signature artifact (exempt)")
        return await self.decide(repository, record, await self.graphs.get(), tag)

    async def decide(
        self, repository: str, record: ManifestRecord, keys: GrantedKeys, tag: str | None = None
    ) -> Decision:
        """Judge every signature kind in turn, cheapest first, until one is authorized."""
        verdicts: list[Verdict] = []
        for kind in (self._jws, self._annotations, self._cosign, self._simple, self._notary):
            verdicts += await kind(repository, record, keys, tag)
            if any(v.authorized for v in verdicts):
                break
        ok, reason, signer = summarize(verdicts)
        return Decision(ok, reason, signer)

    async def _jws(
        self, repository: str, record: ManifestRecord, keys: GrantedKeys, tag: str | None
    ) -> list[Verdict]:
        if record.media_type not in mt.SCHEMA1:
            return []
        where = "schema 1 manifest"
        try:
            signers = verify_schema1(record.content)
        except JwsError as exc:
            return [Verdict("jws", where, None, False, f"JWS signature: {exc}")]
        return judge_jws(keys, signers, repository, where)

    async def _annotations(
        self, repository: str, record: ManifestRecord, keys: GrantedKeys, tag: str | None
    ) -> list[Verdict]:
        try:
            doc = jsonbounds.loads(record.content, what="manifest")
        except jsonbounds.JSONBoundsError:
            return []
        notes = doc.get("annotations") if isinstance(doc, dict) else None
        if not isinstance(notes, dict) or not ann.slots(notes):
            return []
        config = doc.get("config") if isinstance(doc.get("config"), dict) else {}
        sha384 = None
        try:
            digest = Digest.parse(str(config.get("digest")))
            data = await self.ctx.read_blob(digest, MAX_CONFIG)
        except RegistryError:
            data = None
        if (
            data is not None
            and hashlib.new(digest.algorithm, data).hexdigest() == digest.hex
            and len(data) == config.get("size")
        ):
            sha384 = hashlib.sha384(data).digest()
        return judge_annotations(keys, notes, sha384, repository, "manifest annotations")

    async def _cosign(
        self, repository: str, record: ManifestRecord, keys: GrantedKeys, tag: str | None
    ) -> list[Verdict]:
        failures: list[str] = []
        out = []
        ec_keys = keys.ec_keys()
        # Each entry is tried with every key the statements name: bound the verifications.
        limit = min(
            MAX_COSIGN_ENTRIES, max(MIN_COSIGN_ENTRIES, MAX_KEY_CHECKS // len(ec_keys or [0]))
        )
        entries = cosign_entries(self.ctx, repository, record, ec_keys, None, failures, limit)
        async for entry in entries:
            verdict = judge_cosign(keys, entry.check, entry.where, repository)
            out.append(verdict)
            if verdict.authorized:
                await entries.aclose()
                break
        out += [Verdict("cosign", "cosign signatures", None, False, f) for f in failures[:2]]
        return out

    async def _simple(
        self, repository: str, record: ManifestRecord, keys: GrantedKeys, tag: str | None
    ) -> list[Verdict]:
        assert self.ctx.simple_signatures is not None
        signatures = await self.ctx.simple_signatures(repository, record.digest)
        out = []
        for i, content in enumerate(signatures[:MAX_SIMPLE]):
            where = f"simple signature {i + 1}"
            verdict = await asyncio.to_thread(
                judge_simple, keys, content, str(record.digest), repository, where
            )
            out.append(verdict)
            if verdict.authorized:
                break
        return out

    async def _notary(
        self, repository: str, record: ManifestRecord, keys: GrantedKeys, tag: str | None
    ) -> list[Verdict]:
        """The keys of each Notary role that signs this manifest (the tag's target, or a target
        with this digest when pulled by digest) in GUN `gun_prefix + repository`; the trust
        data verified as a whole first. Nothing when the store holds no trust data for it."""
        files = self.ctx.trust_files
        gun = self.gun_prefix + repository
        if files is None or record.digest.algorithm != "sha256":
            return []
        if await files.get(gun, "root") is None:
            return []
        try:
            coll = await fetch_verified(files, gun, self.pinning)
        except (VerifyError, TrustServerUnreachable) as exc:
            return [Verdict("notary", gun, None, False, f"notary trust data: {exc}")]
        return notary_verdicts(coll, gun, repository, record.digest.hex, record.size, tag, keys)


def notary_verdicts(
    coll: Collection,
    gun: str,
    repository: str,
    sha256_hex: str,
    size: int,
    tag: str | None,
    keys: GrantedKeys,
) -> list[Verdict]:
    """A verified Notary collection's roles that sign this manifest (the tag's target, or any
    target with the digest when `tag` is None), each signing key judged. Shared with
    `trustyard verify` (the signing row cannot read trust.client, hence here)."""
    if tag is not None:
        hits = [(tag, h) for h in coll.lookup(tag)]
    else:
        hits = coll.by_digest(sha256_hex)
    out = []
    for name, hit in hits:
        where = f"notary {gun}:{name} ({hit.role})"
        if hit.sha256 != sha256_hex or hit.meta.length != size:
            why = f"signs sha256:{hit.sha256} ({hit.meta.length} bytes), not this manifest"
            out.append(Verdict("notary", where, None, False, why))
            continue
        for signer in hit.signers:
            public = coll.keys.get(hit.role, {}).get(signer)
            try:
                key = public.crypto_key() if public is not None else None
            except NotaryKeyError:
                key = None
            if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
                why = f"role key {signer[:16]} is no EC or RSA key"
                out.append(Verdict("notary", where, None, True, why))
                continue
            kid = libtrust_kid(key)
            out.append(keys.judge("notary", where, kid, repository, spki_der(key)))
    return out


register_kind("authority", AuthorityCheck)
