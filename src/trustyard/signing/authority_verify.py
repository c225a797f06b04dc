"""Client side of `trustyard verify --authority-roots`: every signature of a remote image, judged
against the authority's statements (fetched from the registry, or read from a directory for
offline use) evaluated with roots the user chose.

The signatures are found as `trustyard signatures` finds them (cosign_remote for cosign, the
extension API for simple signatures, the manifest itself for JWS and ir-sign annotations);
the judging is `signing/authority_match.py`, shared with the registry's policy kind.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from trustyard.authority.statements import Root, evaluate
from trustyard.crypto.jws import JwsError, verify_schema1
from trustyard.oci import mediatypes as mt
from trustyard.remote.bounded import BodyError, loads_json, read_body
from trustyard.signing import annotations as ann
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
from trustyard.signing.errors import RemoteError, SigningError
from trustyard.signing.registry_client import RemoteRef

STATEMENTS_PATH = "/extensions/v2/_authority/statements"
MAX_STATEMENT_PAGES = 1000  # pages followed through Link headers before giving up
MAX_PAGE = 16 * 1024 * 1024
MAX_STATEMENT_FILE = 64 * 1024 * 1024
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def read_statements(directory: Path) -> list[bytes]:
    """Statements saved for offline use: every line of every file in `directory` that is not
    blank (compact JWS are one line each, so files may hold one or many)."""
    if not directory.is_dir():
        raise SigningError(f"statements: {directory} is not a directory")
    out = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.stat().st_size > MAX_STATEMENT_FILE:
            raise SigningError(f"statements: {path} is over {MAX_STATEMENT_FILE} bytes")
        out += [line.strip() for line in path.read_bytes().splitlines() if line.strip()]
    return out


class AuthorityClient(ArtifactClient):
    """An artifact client that also reads the registry's authority statements."""

    def __enter__(self) -> AuthorityClient:
        return self

    def statements(self, repo: str) -> list[bytes]:
        """Every statement the registry serves (`GET /extensions/v2/_authority/statements`,
        following `Link: <…>; rel="next"` pages); `repo` scopes the pull token."""
        out: list[bytes] = []
        path: str | None = f"{STATEMENTS_PATH}?n=1000"
        for _ in range(MAX_STATEMENT_PAGES):
            if path is None:
                return out
            with self._request("GET", repo, path) as r:
                if r.status_code == 404:
                    raise RemoteError(f"{self.host} serves no authority statements")
                if r.status_code != 200:
                    raise self._fail(r, "cannot list authority statements")
                data = read_body(r, MAX_PAGE, "authority statements")
                link = _NEXT.search(r.headers.get("Link", ""))
            try:
                doc = loads_json(data, "authority statements")
            except BodyError as exc:
                raise RemoteError(str(exc)) from None
            entries = doc.get("statements") if isinstance(doc, dict) else None
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise RemoteError("authority statements: the answer has no list of statements")
            out += [e.encode() for e in entries]
            path = None
            if link is not None:
                target = urlsplit(urljoin(STATEMENTS_PATH, link.group(1)))
                path = target.path + (f"?{target.query}" if target.query else "")
        raise RemoteError(f"authority statements: more than {MAX_STATEMENT_PAGES} pages")


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
) -> tuple[str, list[Verdict]]:
    """(manifest digest, a verdict for every signature found on it)."""
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
    return digest, verdicts
