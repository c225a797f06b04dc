"""GC marking rules as pure code: a snapshot of the metadata rows in, a plan of what to remove out.

No I/O here, so the rules are testable on hand-built snapshots; the metadata backend reads the
snapshot and applies the plan inside one exclusive write transaction (see registry/gc.py).

Live manifests: tagged ones, ones pushed after `cutoff` (an in-flight multi-arch push uploads
children before the index that tags them), children of live indexes (never break multi-arch
images, distribution#3004) and referrers of live manifests, all within one repository. Cosign
attachment tags (`sha256-<hex>[.sig|.att|.sbom]`) do not keep anything alive: they follow the
subject they are named after, and go when it goes. Digests a tag pointed at before a move
within the tag-history window are roots too (`trustyard tag restore` needs them). Live blob links: named by a live manifest of
the repository, or linked after `cutoff`. A blob goes when no live link, no live manifest and no
recent upload names it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from trustyard.metadata.base import GcPlan, GcSnapshot
from trustyard.oci.digest import Digest

# cosign-style attachment tags (`sha256-<hex>`, `.sig`, `.att`, `.sbom`)
_ATTACHMENT_TAG = re.compile(r"^(sha256-[a-f0-9]{64}|sha512-[a-f0-9]{128})(\.sig|\.att|\.sbom)?$")

Key = tuple[str, str]  # (repository, digest)


@dataclass(slots=True)
class _Graph:
    manifests: set[Key]
    # manifest -> manifest digests of the same repository it keeps alive (children, referrers)
    edges: dict[Key, list[str]] = field(default_factory=dict)
    # manifest -> blob digests it names (config, layers)
    blobs: dict[Key, list[str]] = field(default_factory=dict)


def attachment_subject(tag: str) -> str | None:
    """The digest a cosign attachment tag is named after, or None for an ordinary tag."""
    found = _ATTACHMENT_TAG.match(tag)
    return found.group(1).replace("-", ":", 1) if found else None


def _graph(snapshot: GcSnapshot) -> _Graph:
    graph = _Graph({(m.repository, m.digest) for m in snapshot.manifests})
    for ref in snapshot.refs:
        target = graph.edges if ref.kind == "manifest" else graph.blobs
        target.setdefault((ref.repository, ref.parent), []).append(ref.child)
    for m in snapshot.manifests:
        if m.subject:
            graph.edges.setdefault((m.repository, m.subject), []).append(m.digest)
    return graph


def _roots(
    snapshot: GcSnapshot, cutoff: float, graph: _Graph
) -> tuple[set[Key], list[tuple[str, str, str]]]:
    """Tagged and recent manifests; attachment tags become edges from their subject instead.

    Returns the roots and the attachment tags as (repository, tag, subject)."""
    roots: set[Key] = set()
    attachments: list[tuple[str, str, str]] = []
    for tag in snapshot.tags:
        subject = attachment_subject(tag.name)
        if subject is None:
            roots.add((tag.repository, tag.digest))
        else:  # live exactly when the subject it is named after is live
            graph.edges.setdefault((tag.repository, subject), []).append(tag.digest)
            attachments.append((tag.repository, tag.name, subject))
    roots.update((m.repository, m.digest) for m in snapshot.manifests if m.touched_at >= cutoff)
    return roots, attachments


def _reach(roots: set[Key], graph: _Graph) -> set[Key]:
    """Every existing manifest reachable from an existing root (cycles are harmless)."""
    live: set[Key] = set()
    stack = [key for key in roots if key in graph.manifests]
    while stack:
        key = stack.pop()
        if key in live:
            continue
        live.add(key)
        repository = key[0]
        for child in graph.edges.get(key, ()):
            nxt = (repository, child)
            if nxt in graph.manifests and nxt not in live:
                stack.append(nxt)
    return live


def _sweep_blobs(
    snapshot: GcSnapshot, live: set[Key], graph: _Graph, cutoff: float, plan: GcPlan
) -> None:
    """Fill the plan's dead links and dead blobs."""
    live_links = {(key[0], blob) for key in live for blob in graph.blobs.get(key, ())}
    dead_links: set[Key] = set()
    for link in snapshot.links:
        key = (link.repository, link.digest)
        if key not in live_links and link.linked_at < cutoff:
            dead_links.add(key)
    still_linked = {
        link.digest for link in snapshot.links if (link.repository, link.digest) not in dead_links
    }
    # A blob a live manifest names is kept even if its link was deleted through the API.
    referenced = {blob for _, blob in live_links}
    plan.links = [(repo, Digest.parse(digest)) for repo, digest in sorted(dead_links)]
    plan.blobs = [
        (Digest.parse(blob.digest), int(blob.size))
        for blob in sorted(snapshot.blobs)
        if blob.digest not in still_linked
        and blob.digest not in referenced
        and blob.last_seen < cutoff
    ]


def mark(snapshot: GcSnapshot, cutoff: float, history_since: float | None = None) -> GcPlan:
    """What a GC pass with this cutoff removes from this snapshot (a `GcMarker` once
    `history_since` is bound: tag-history targets moved off at or after it are kept)."""
    graph = _graph(snapshot)
    roots, attachments = _roots(snapshot, cutoff, graph)
    if history_since is not None:
        roots.update(
            (h.repository, h.digest) for h in snapshot.history if h.moved_at >= history_since
        )
    live = _reach(roots, graph)
    plan = GcPlan()
    plan.manifests = [(repo, Digest.parse(d)) for repo, d in sorted(graph.manifests - live)]
    # attachment tags named after a subject that is gone
    plan.tags = [(repo, tag) for repo, tag, subject in attachments if (repo, subject) not in live]
    _sweep_blobs(snapshot, live, graph, cutoff, plan)
    return plan
