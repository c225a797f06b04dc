"""The GC marking rules (registry/gc_mark.py) on hand-built snapshots: no database involved."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from trustyard.metadata.base import (
    GcBlob,
    GcHistory,
    GcLink,
    GcManifest,
    GcPlan,
    GcRef,
    GcSnapshot,
    GcTag,
)
from trustyard.registry.gc_mark import attachment_subject, mark

CUTOFF = 1000.0
OLD, NEW = 10.0, 2000.0


def d(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


@dataclass
class Snap:
    """A snapshot builder: every item is old unless told otherwise."""

    manifests: list[GcManifest] = field(default_factory=list)
    refs: list[GcRef] = field(default_factory=list)
    tags: list[GcTag] = field(default_factory=list)
    links: list[GcLink] = field(default_factory=list)
    blobs: list[GcBlob] = field(default_factory=list)

    def manifest(
        self,
        repo: str,
        name: str,
        *,
        at: float = OLD,
        subject: str | None = None,
        layers: tuple[str, ...] = (),
        children: tuple[str, ...] = (),
    ) -> str:
        digest = d(name)
        self.manifests.append(GcManifest(repo, digest, d(subject) if subject else None, at))
        self.refs += [GcRef(repo, digest, d(c), "manifest") for c in children]
        self.refs += [GcRef(repo, digest, d(b), "blob") for b in layers]
        return digest

    def blob(self, repo: str, name: str, *, at: float = OLD) -> str:
        digest = d(name)
        self.links.append(GcLink(repo, digest, at))
        if all(b.digest != digest for b in self.blobs):
            self.blobs.append(GcBlob(digest, 7, at))
        return digest

    def tag(self, repo: str, tag: str, name: str) -> None:
        self.tags.append(GcTag(repo, tag, d(name)))

    def plan(self, cutoff: float = CUTOFF) -> GcPlan:
        snapshot = GcSnapshot(self.manifests, self.refs, self.tags, self.links, self.blobs)
        return mark(snapshot, cutoff)


def dead_manifests(plan: GcPlan) -> set[tuple[str, str]]:
    return {(repo, str(digest)) for repo, digest in plan.manifests}


def test_tagged_root_and_its_blobs_stay() -> None:
    s = Snap()
    s.blob("r", "layer")
    s.manifest("r", "m", layers=("layer",))
    s.tag("r", "v1", "m")
    s.manifest("r", "untagged")
    plan = s.plan()
    assert dead_manifests(plan) == {("r", d("untagged"))}
    assert plan.links == [] and plan.blobs == [] and plan.tags == []


def test_grace_period_keeps_recent_manifests_links_and_blobs() -> None:
    s = Snap()
    s.manifest("r", "fresh", at=NEW, layers=("old-layer",))
    s.blob("r", "old-layer")
    s.blob("r", "fresh-upload", at=NEW)
    s.blob("r", "stale")
    plan = s.plan()
    assert plan.manifests == []
    assert [(r, str(x)) for r, x in plan.links] == [("r", d("stale"))]
    assert [str(x) for x, _ in plan.blobs] == [d("stale")]
    assert plan.freed_bytes == 7
    # the same snapshot with a cutoff before everything collects nothing
    empty = s.plan(cutoff=0.0)
    assert empty.manifests == [] and empty.links == [] and empty.blobs == []


def test_index_children_kept_while_the_index_lives() -> None:
    s = Snap()
    s.manifest("r", "amd64")
    s.manifest("r", "arm64")
    s.manifest("r", "index", children=("amd64", "arm64"))
    s.tag("r", "latest", "index")
    assert s.plan().manifests == []
    s.tags.clear()
    assert dead_manifests(s.plan()) == {("r", d(n)) for n in ("amd64", "arm64", "index")}


def test_referrers_kept_only_while_subject_lives() -> None:
    s = Snap()
    s.manifest("r", "image")
    s.manifest("r", "sbom", subject="image")
    s.manifest("r", "sig-of-sbom", subject="sbom")
    s.tag("r", "v1", "image")
    assert s.plan().manifests == []
    s.tags.clear()
    assert dead_manifests(s.plan()) == {("r", d(n)) for n in ("image", "sbom", "sig-of-sbom")}


def test_attachment_tags_follow_their_subject() -> None:
    s = Snap()
    image = s.manifest("r", "image")
    s.manifest("r", "sig")
    sig_tag = image.replace(":", "-") + ".sig"
    s.tag("r", sig_tag, "sig")
    s.tag("r", "v1", "image")
    plan = s.plan()
    assert plan.manifests == [] and plan.tags == []  # the tag does not keep itself alive ...
    s.tags = [t for t in s.tags if t.name != "v1"]
    plan = s.plan()
    assert dead_manifests(plan) == {("r", d("image")), ("r", d("sig"))}
    assert plan.tags == [("r", sig_tag)]  # ... and goes with its subject


def test_attachment_tag_of_a_subject_never_pushed_goes() -> None:
    s = Snap()
    s.manifest("r", "sig", at=NEW)  # the signature itself is young
    tag = d("absent").replace(":", "-")
    s.tag("r", tag, "sig")
    plan = s.plan()
    assert plan.manifests == [] and plan.tags == [("r", tag)]


def test_attachment_subject_grammar() -> None:
    hexd = "a" * 64
    assert attachment_subject(f"sha256-{hexd}") == f"sha256:{hexd}"
    assert attachment_subject(f"sha256-{hexd}.att") == f"sha256:{hexd}"
    assert attachment_subject(f"sha512-{'b' * 128}.sbom") == f"sha512:{'b' * 128}"
    for ordinary in ("latest", f"sha256-{hexd}.other", f"sha256-{hexd[:-1]}", f"SHA256-{hexd}"):
        assert attachment_subject(ordinary) is None


def test_blob_kept_while_linked_elsewhere_or_named_by_a_live_manifest() -> None:
    s = Snap()
    shared = s.blob("a", "shared")
    s.blob("b", "shared")
    s.manifest("b", "user", layers=("shared",))
    s.tag("b", "v1", "user")
    plan = s.plan()
    assert [(r, str(x)) for r, x in plan.links] == [("a", shared)]  # a's link is unused
    assert plan.blobs == []  # b still links it
    # the link deleted through the API: the live manifest still names the blob
    s.links = [link for link in s.links if link.repository != "b"]
    plan = s.plan()
    assert plan.blobs == []


def test_fresh_link_keeps_an_unreferenced_blob() -> None:
    s = Snap()
    s.blob("r", "uploaded", at=NEW)
    plan = s.plan()
    assert plan.links == [] and plan.blobs == []


def test_blob_with_recent_last_seen_but_no_link_stays() -> None:
    s = Snap()
    s.blobs.append(GcBlob(d("remounted"), 3, NEW))
    assert s.plan().blobs == []


def test_repositories_are_isolated() -> None:
    s = Snap()
    s.manifest("a", "child")
    s.manifest("a", "index", children=("child",))
    s.tag("a", "v1", "index")
    s.manifest("b", "child")  # same digest in another repository: not kept by a's index
    s.manifest("b", "ref", subject="index")  # a subject only in another repository
    s.blob("b", "layer")
    s.manifest("a", "user", layers=("layer",))
    s.tag("a", "v2", "user")
    plan = s.plan()
    assert dead_manifests(plan) == {("b", d("child")), ("b", d("ref"))}
    assert [(r, str(x)) for r, x in plan.links] == [("b", d("layer"))]
    assert plan.blobs == []  # a's live manifest names the digest


def test_cycles_terminate_and_die_together() -> None:
    s = Snap()
    s.manifest("r", "x", subject="y")
    s.manifest("r", "y", subject="x")
    s.manifest("r", "z", children=("z",))
    assert dead_manifests(s.plan()) == {("r", d(n)) for n in ("x", "y", "z")}
    s.tag("r", "keep", "x")
    assert dead_manifests(s.plan()) == {("r", d("z"))}


def test_dangling_references_are_ignored() -> None:
    s = Snap()
    s.tag("r", "v1", "never-pushed")
    s.manifest("r", "index", children=("missing",), layers=("no-blob-row",))
    s.tag("r", "v2", "index")
    plan = s.plan()
    assert plan.manifests == [] and plan.blobs == []


# -- property: nothing reachable from a root is ever in the plan ------------------------------

NAMES = [f"m{i}" for i in range(8)]
REPOS = ["a", "b"]


@st.composite
def snapshots(draw: st.DrawFn) -> Snap:
    s = Snap()
    for repo in REPOS:
        for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES))):
            s.manifest(
                repo,
                name,
                at=draw(st.sampled_from([OLD, NEW])),
                subject=draw(st.none() | st.sampled_from(NAMES)),
                children=tuple(draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3))),
                layers=tuple(draw(st.lists(st.sampled_from(["l0", "l1", "l2"]), unique=True))),
            )
        for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3)):
            s.tag(repo, f"t-{name}", name)
        # cosign attachment tags: (subject it is named after, manifest it points at)
        for subject, name in draw(st.lists(st.tuples(*[st.sampled_from(NAMES)] * 2), max_size=3)):
            s.tag(repo, d(subject).replace(":", "-") + ".sig", name)
        for layer in draw(st.lists(st.sampled_from(["l0", "l1", "l2"]), unique=True)):
            s.blob(repo, layer, at=draw(st.sampled_from([OLD, NEW])))
    return s


def _reachable(s: Snap) -> set[tuple[str, str]]:
    """The liveness definition written the slow, obvious way (fixpoint over all rules)."""
    present = {(m.repository, m.digest) for m in s.manifests}
    live = {(t.repository, t.digest) for t in s.tags if not t.name.endswith(".sig")} & present
    live |= {(m.repository, m.digest) for m in s.manifests if m.touched_at >= CUTOFF}
    while True:
        more = {
            (r.repository, r.child)
            for r in s.refs
            if r.kind == "manifest" and (r.repository, r.parent) in live
        }
        more |= {(m.repository, m.digest) for m in s.manifests if (m.repository, m.subject) in live}
        more |= {
            (t.repository, t.digest)
            for t in s.tags
            if t.name.endswith(".sig") and (t.repository, _named_after(t.name)) in live
        }
        more &= present
        if more <= live:
            return live
        live |= more


def _named_after(tag: str) -> str:
    return tag.removesuffix(".sig").replace("-", ":", 1)


@settings(max_examples=100, deadline=None)
@given(snapshots())
def test_nothing_reachable_is_collected_and_everything_else_is(s: Snap) -> None:
    plan = s.plan()
    live = _reachable(s)
    present = {(m.repository, m.digest) for m in s.manifests}
    assert dead_manifests(plan) == present - live
    named = {
        (r.repository, r.child)
        for r in s.refs
        if r.kind == "blob" and (r.repository, r.parent) in live
    }
    assert not {(repo, str(x)) for repo, x in plan.links} & named
    assert not {str(x) for x, _ in plan.blobs} & {blob for _, blob in named}
    gone_tags = {
        (t.repository, t.name)
        for t in s.tags
        if t.name.endswith(".sig") and (t.repository, _named_after(t.name)) not in live
    }
    assert set(plan.tags) == gone_tags


def test_tag_history_targets_kept_within_the_window() -> None:
    s = Snap()
    s.blob("r", "old-layer")
    s.manifest("r", "before", layers=("old-layer",))
    s.manifest("r", "after")
    s.tag("r", "latest", "after")
    snapshot = GcSnapshot(
        s.manifests, s.refs, s.tags, s.links, s.blobs, history=[GcHistory("r", d("before"), 500.0)]
    )
    # moved off within the window: kept, with its blobs
    kept = mark(snapshot, CUTOFF, history_since=400.0)
    assert kept.manifests == [] and kept.blobs == []
    # moved off before the window (or no window): collected
    for since in (600.0, None):
        plan = mark(snapshot, CUTOFF, history_since=since)
        assert dead_manifests(plan) == {("r", d("before"))}
        assert [str(x) for x, _ in plan.blobs] == [d("old-layer")]
