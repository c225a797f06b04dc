"""Delegation paths along the whole chain, attacked through a running `trustyard serve`.

A nested delegation must not be able to widen what the roles above it allow: a delegated
role's paths are those its parent gives it restricted by every ancestor (notary's
`RestrictDelegationPathPrefixes` on the `GetDelegationRole` walk), and the stored ancestors
must still be delegated and signed by the keys delegated to them. Each upload below is signed
with the real keys of the role it claims to be; the refused ones change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.server import ServerProcess
from tests.trust.helpers import Repo
from trustyard.crypto.notary_keys import PrivateKey
from trustyard.trust.server.validation import restrict_paths

A, B, C = "targets/a", "targets/a/b", "targets/a/b/c"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("chain") / "data").start()
    yield srv
    srv.stop()


@dataclass
class Collection:
    """One GUN on the server: the owner's keys, one key per delegation, current versions."""

    srv: ServerProcess
    gun: str
    repo: Repo = field(default_factory=Repo)
    keys: dict[str, PrivateKey] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"{self.srv.url}/v2/{self.gun}/_trust/tuf"

    def key(self, role: str) -> PrivateKey:
        return self.keys.setdefault(role, PrivateKey.generate("ecdsa"))

    def body(
        self,
        role: str,
        targets: dict[str, bytes] | None = None,
        delegations: list[tuple[str, list[str]]] = (),  # type: ignore[assignment]
        *,
        key: PrivateKey | None = None,
    ) -> bytes:
        """`role`'s next version, signed with its own key (the owner's for `targets`)."""
        version = self.versions.get(role, 0) + 1
        return self.repo.targets(
            targets or {},
            role=role,
            version=version,
            delegations=[(name, self.key(name), paths) for name, paths in delegations],
            key=key or (None if role == "targets" else self.key(role)),
        )

    def post(self, files: dict[str, bytes]) -> httpx.Response:
        parts = [
            ("files", (role, data, "application/octet-stream")) for role, data in files.items()
        ]
        return httpx.post(f"{self.base}/", files=parts, timeout=30)

    def publish(self, files: dict[str, bytes]) -> None:
        r = self.post(files)
        assert r.status_code == 200, r.text
        for role in files:
            self.versions[role] = self.versions.get(role, 0) + 1

    def refused(self, files: dict[str, bytes], *words: str) -> str:
        before = {role: self.current(role) for role in ("targets", A, B, C, "snapshot")}
        r = self.post(files)
        assert r.status_code == 400, r.text
        err = r.json()["errors"][0]
        assert err["code"] == "INVALID_UPDATE", err
        assert err["detail"]["Name"] == "ErrBadTargets", err
        msg: str = err["detail"]["Error"]["Msg"]
        for word in words:
            assert word in msg, msg
        assert {role: self.current(role) for role in before} == before  # nothing stored
        return msg

    def current(self, role: str) -> bytes | None:
        r = httpx.get(f"{self.base}/{role}.json", timeout=30)
        return r.content if r.status_code == 200 else None


def collection(srv: ServerProcess, name: str, a_paths: list[str] | None = None) -> Collection:
    """A GUN whose root lets the server sign snapshots; targets delegates `targets/a`."""
    coll = Collection(srv, f"127.0.0.1/chain/{name}")
    ts: dict[str, Any] = httpx.get(f"{coll.base}/timestamp.key", timeout=30).json()
    snap: dict[str, Any] = httpx.get(f"{coll.base}/snapshot.key", timeout=30).json()
    root = coll.repo.root(ts, snapshot_key=snap)
    targets = coll.body("targets", delegations=[(A, a_paths if a_paths is not None else [""])])
    coll.publish({"root": root, "targets": targets})
    return coll


def nested(srv: ServerProcess, name: str) -> Collection:
    """targets -> a [""] -> b [""], both published while the chain allowed everything; then
    the owner narrows targets/a to ["a/"]."""
    coll = collection(srv, name)
    coll.publish({A: coll.body(A, delegations=[(B, [""])])})
    coll.publish({B: coll.body(B, {"anything": b"1"})})
    coll.publish({"targets": coll.body("targets", delegations=[(A, ["a/"])])})
    return coll


def test_a_stored_wide_child_cannot_sign_outside_its_narrowed_parent(
    server: ServerProcess,
) -> None:
    coll = nested(server, "narrowed")
    # b's own entry in a still says [""], but a now holds only "a/": restricted along the
    # chain, b's [""] is not within "a/" and is dropped (notary), so b may sign nothing.
    coll.refused({B: coll.body(B, {"evil": b"x"})}, B, "outside its delegated paths", "evil")
    coll.refused({B: coll.body(B, {"a/inside-a": b"x"})}, "a/inside-a")
    coll.refused({B: coll.body(B, {"": b"x"})}, "outside its delegated paths")
    # What b signed while the chain allowed it may stay as it is (clients ignore it, and the
    # notary client cannot remove it), but not be pointed at new content or joined by more.
    coll.refused({B: coll.body(B, {"anything": b"new content"})}, "anything")
    coll.refused({B: coll.body(B, {"anything": b"1", "more": b"2"})}, "more")
    coll.publish({B: coll.body(B, {"anything": b"1"})})
    # Nor can it pass the wide delegation further down.
    coll.refused({B: coll.body(B, delegations=[(C, [""])])}, C, "outside those of", B)
    coll.refused({B: coll.body(B, delegations=[(C, ["a/"])])}, C, "outside those of", B)
    # a itself cannot re-publish the wide delegation of b, and b cannot ride along with it.
    coll.refused({A: coll.body(A, delegations=[(B, [""])])}, B, "outside those of", A)
    huge = coll.refused({A: coll.body(A, delegations=[(B, ["z" * 20_000] * 9)])}, "...")
    assert len(huge) < 1000  # the message names a few, shortened
    coll.refused(
        {A: coll.body(A, delegations=[(B, [""])]), B: coll.body(B, {"evil": b"x"})},
        "outside those of",
    )
    # Once a narrows b to what it holds itself, b signs inside that and nothing else.
    coll.publish({A: coll.body(A, delegations=[(B, ["a/b/"])])})
    coll.publish({B: coll.body(B, {"a/b/1": b"1"})})
    coll.refused({B: coll.body(B, {"a/c/1": b"1"})}, "a/c/1", "['a/b/']")
    coll.refused({B: coll.body(B, {"evil": b"1", "a/b/2": b"2"})}, "evil")


def test_the_owner_narrowing_and_the_child_in_one_upload(server: ServerProcess) -> None:
    coll = collection(server, "same-request")
    coll.publish({A: coll.body(A, delegations=[(B, [""])])})
    # The attacker cannot use the old parent while the same upload narrows it, and the paths
    # are taken from the upload, not from what is stored.
    coll.refused(
        {
            "targets": coll.body("targets", delegations=[(A, ["a/"])]),
            B: coll.body(B, {"evil": b"x"}),
        },
        "evil",
    )
    # A fresh chain in one upload: targets -> a ["a/"] -> b ["a/b/"] -> c [""] is too wide.
    coll.refused(
        {
            "targets": coll.body("targets", delegations=[(A, ["a/"])]),
            A: coll.body(A, delegations=[(B, ["a/b/"])]),
            B: coll.body(B, delegations=[(C, [""])]),
        },
        C,
        "outside those of",
    )
    coll.publish(
        {
            "targets": coll.body("targets", delegations=[(A, ["a/"])]),
            A: coll.body(A, delegations=[(B, ["a/b/"])]),
            B: coll.body(B, {"a/b/ok": b"1"}, delegations=[(C, ["a/b/c/"])]),
        }
    )
    coll.publish({C: coll.body(C, {"a/b/c/ok": b"1"})})


def test_three_levels_restricted_by_the_grandparent(server: ServerProcess) -> None:
    coll = collection(server, "three", a_paths=["a/"])
    coll.publish({A: coll.body(A, delegations=[(B, ["a/"])])})
    coll.publish({B: coll.body(B, delegations=[(C, ["a/"])])})
    coll.publish({C: coll.body(C, {"a/y/1": b"1"})})
    # The owner narrows a to "a/x/": b's "a/" and so c's are no longer within the chain.
    coll.publish({"targets": coll.body("targets", delegations=[(A, ["a/x/"])])})
    coll.refused({C: coll.body(C, {"a/y/2": b"2"})}, C, "a/y/2")
    coll.refused({C: coll.body(C, {"a/x/1": b"2"})}, "a/x/1")


def test_a_broken_chain_delegates_nothing(server: ServerProcess) -> None:
    coll = collection(server, "broken")
    coll.publish({A: coll.body(A, delegations=[(B, [""])])})
    coll.publish({B: coll.body(B, {"one": b"1"})})
    # The owner gives targets/a to a new key: the stored a, signed with the old one, no longer
    # delegates anything.
    old_a = coll.keys.pop(A)
    coll.publish({"targets": coll.body("targets", delegations=[(A, [""])])})
    assert coll.key(A).public.key_id != old_a.public.key_id
    coll.refused({B: coll.body(B, {"two": b"2"})}, "no longer signed", A)
    # ...until the new key holder re-publishes a.
    coll.publish({A: coll.body(A, delegations=[(B, [""])])})
    coll.publish({B: coll.body(B, {"two": b"2"})})
    # The owner removes targets/a altogether: its stored delegations go with it.
    coll.publish({"targets": coll.body("targets")})
    coll.refused({B: coll.body(B, {"three": b"3"})}, A, "is not delegated")
    coll.refused({A: coll.body(A, delegations=[(B, [""])])}, A, "is not delegated by targets")


@given(
    parent=st.lists(st.text("ab/", max_size=4), max_size=4).map(tuple),
    child=st.lists(st.text("ab/", max_size=5), max_size=4).map(tuple),
    target=st.text("ab/", max_size=6),
)
def test_restricted_paths_never_allow_more_than_the_parent(
    parent: tuple[str, ...], child: tuple[str, ...], target: str
) -> None:
    restricted = restrict_paths(parent, child)
    assert set(restricted) <= set(child)
    if any(target.startswith(p) for p in restricted):
        assert any(target.startswith(p) for p in parent)
        assert any(target.startswith(p) for p in child)


def test_restrict_paths_is_notarys() -> None:
    assert restrict_paths(("",), ("a/", "")) == ("a/", "")
    assert restrict_paths(("a/",), ("",)) == ()
    assert restrict_paths(("a/x/",), ("a/",)) == ()  # dropped, not narrowed
    assert restrict_paths(("a/", "b/"), ("a/1", "c/", "b/")) == ("a/1", "b/")
    assert restrict_paths(("a/",), ()) == ()
