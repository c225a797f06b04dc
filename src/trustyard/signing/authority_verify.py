"""Client side of `trustyard verify --authority-roots`: every signature of a remote image, judged
against the authority's statements (fetched from the registry, or read from a directory for
offline use) evaluated with roots the user chose.

The signatures are found as `trustyard signatures` finds them (cosign_remote for cosign, the
extension API for simple signatures, the manifest itself for JWS and ir-sign annotations);
the judging is `signing/authority_match.py`, shared with the registry's policy kind.
"""

from __future__ import annotations

from datetime import UTC, datetime

from trustyard.authority.statements import Root, evaluate
from trustyard.crypto.jws import JwsError, verify_schema1
from trustyard.oci import mediatypes as mt
from trustyard.signing import annotations as ann
from trustyard.signing.authority_client import AuthorityClient
from trustyard.signing.authority_match import (
    GrantedKeys,
    Verdict,
    judge_annotations,
    judge_cosign,
    judge_jws,
    judge_simple,
    statement_keys,
)
from trustyard.signing.cosign_remote import ArtifactClient, find_and_verify
from trustyard.signing.errors import RemoteError
from trustyard.signing.registry_client import RemoteRef


class VerifyClient(ArtifactClient, AuthorityClient):
    """Reads an image's signatures and the registry's authority statements."""

    def __enter__(self) -> VerifyClient:
        return self


def granted_keys(
    statements: list[bytes], roots: list[Root], now: datetime | None = None
) -> GrantedKeys:
    """The statements evaluated against `roots` at `now`, ready to judge signatures with."""
    graph = evaluate(statements, roots, now or datetime.now(UTC))
    return GrantedKeys(graph, statement_keys(statements))


def judge_remote(
    client: ArtifactClient,
    ref: RemoteRef,
    keys: GrantedKeys,
) -> tuple[str, int, list[Verdict]]:
    """(manifest digest, its size, a verdict for every signature found on it but Notary's)."""
    repo = ref.repository
    fetched = client.get_manifest(repo, ref.digest or str(ref.tag))
    if ref.digest and fetched.digest != ref.digest:
        raise RemoteError(f"{ref}: registry answered {fetched.digest}")
    digest = fetched.digest
    verdicts: list[Verdict] = []
    if fetched.media_type in mt.SCHEMA1:
        try:
            verdicts += judge_jws(keys, verify_schema1(fetched.data), repo, "schema 1 manifest")
        except JwsError as exc:
            verdicts.append(Verdict("jws", "schema 1 manifest", None, False, str(exc)))
    notes = fetched.doc.get("annotations")
    if isinstance(notes, dict) and ann.slots(notes):
        config = fetched.doc.get("config")
        try:
            sha384 = client.hash_blob(repo, config if isinstance(config, dict) else {}, "sha384")
        except RemoteError:
            sha384 = None
        verdicts += judge_annotations(keys, notes, sha384, repo, "manifest annotations")
    for found in find_and_verify(client, repo, digest, keys.ec_keys()):
        verdicts.append(judge_cosign(keys, found.check, f"{found.kind} {found.artifact}", repo))
    for i, content in enumerate(client.extension_signatures(repo, digest) or []):
        verdicts.append(judge_simple(keys, content, digest, repo, f"simple signature {i + 1}"))
    return digest, len(fetched.data), verdicts
