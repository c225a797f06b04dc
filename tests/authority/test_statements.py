"""Statements of the namespace authority: issued, then judged against chosen roots and a clock."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.auth.pki import HOUR, Cert, key_usage, make_cert, now
from tests.signatures.gpg import make_key, stop_agent
from trustyard.authority.statements import (
    KeySigner,
    Root,
    StatementError,
    evaluate,
    issue_grant,
    issue_revocation,
    parse,
)
from trustyard.crypto.keyid import libtrust_kid

DAY = dt.timedelta(days=1)


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class Pki:
    def __init__(self, name: str = "Authority Root") -> None:
        self.root = make_cert(name, ca=True)
        self.inter = self.root.issue(f"{name} Intermediate", ca=True)
        self.leaf = self.inter.issue(f"{name} Statements")

    @property
    def chain(self) -> list[x509.Certificate]:
        return [self.leaf.cert, self.inter.cert]

    def signer(self, leaf: Cert | None = None) -> KeySigner:
        key = (leaf or self.leaf).key
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return KeySigner(key)

    def roots(self, enabled: bool = True) -> list[Root]:
        return [Root("corp.pem", self.root.cert, enabled)]


@pytest.fixture
def pki() -> Pki:
    return Pki()


@pytest.fixture
def user_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _grant(pki: Pki, key: ec.EllipticCurvePrivateKey, **kw: object) -> bytes:
    args: dict[str, object] = {"user": "alice", "namespaces": ["team/*"]} | kw
    return issue_grant(pki.signer(), pki.chain, _pem(key), **args)  # type: ignore[arg-type]


def _reasons(graph: object) -> list[str]:
    return [r.reason for r in graph.refused]  # type: ignore[attr-defined]


def test_grant_verifies(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    statement = _grant(pki, user_key)
    header = json.loads(base64.urlsafe_b64decode(statement.split(b".")[0] + b"=="))
    assert header["typ"] == "trustyard-authority+jws" and header["alg"] == "ES256"
    assert len(header["x5c"]) == 2
    graph = evaluate([statement], pki.roots(), now())
    assert graph.refused == ()
    (grant,) = graph.grants
    assert grant.key_id == libtrust_kid(user_key.public_key())
    assert grant.key_type == "pkix" and grant.user == "alice"
    assert grant.authority == "CN=Authority Root Statements"
    assert [g.user for g in graph.keys_for("team/app")] == ["alice"]
    assert graph.keys_for("other/app") == []
    assert "not for other/app" in graph.why_not(grant.key_id, "other/app")


def test_p384_signer_and_exact_issue_fields(user_key: ec.EllipticCurvePrivateKey) -> None:
    root = make_cert("Root", ca=True, key=ec.generate_private_key(ec.SECP384R1()))
    leaf = root.issue("Leaf", key=ec.generate_private_key(ec.SECP384R1()))
    assert isinstance(leaf.key, ec.EllipticCurvePrivateKey)
    expires = now() + 30 * DAY
    statement = issue_grant(
        KeySigner(leaf.key), [leaf.cert], _pem(user_key), "bob", ["a/b", "c/*"], expires=expires
    )
    parsed = parse(statement)
    assert parsed.type == "grant" and parsed.namespaces == ("a/b", "c/*")
    assert parsed.expires == expires.replace(microsecond=0)
    graph = evaluate([statement], [Root("r", root.cert)], now())
    assert [g.user for g in graph.grants] == ["bob"]


def test_expired_grant(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    statement = _grant(pki, user_key, expires=now() + HOUR)
    graph = evaluate([statement], pki.roots(), now() + 2 * HOUR)
    assert graph.grants == ()
    assert _reasons(graph)[0].startswith("expired on ")


def test_revoked_by_statement_id(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    grant = _grant(pki, user_key)
    gid = parse(grant).id
    revoke = issue_revocation(pki.signer(), pki.chain, statement_id=gid, reason="laptop lost")
    # order does not matter, and replaying the grant does not undo the revocation
    graph = evaluate([revoke, grant, grant], pki.roots(), now())
    assert graph.grants == ()
    (refusal,) = graph.refused
    assert refusal.statement == gid
    assert refusal.reason.startswith(f"revoked by {parse(revoke).id} on ")
    assert refusal.reason.endswith("laptop lost")
    kid = libtrust_kid(user_key.public_key())
    assert "revoked by" in graph.why_not(kid, "team/app")
    assert [r.revokes_statement for r in graph.revocations] == [gid]


def test_revoked_by_key_id_only_earlier_grants(
    pki: Pki, user_key: ec.EllipticCurvePrivateKey
) -> None:
    t0 = now()
    old = _grant(pki, user_key, now=t0 - 2 * HOUR)
    kid = libtrust_kid(user_key.public_key())
    revoke = issue_revocation(
        pki.signer(), pki.chain, key_id=kid, reason="key leaked", now=t0 - HOUR
    )
    graph = evaluate([old, revoke], pki.roots(), t0)
    assert graph.grants == ()
    assert graph.refused[0].reason.startswith(f"key {kid} revoked by ")
    regrant = _grant(pki, user_key, now=t0 - 0.5 * HOUR)
    graph = evaluate([old, revoke, regrant], pki.roots(), t0)
    assert [g.statement for g in graph.grants] == [parse(regrant).id]


def test_grant_for_another_namespace(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    graph = evaluate([_grant(pki, user_key, namespaces=["team/app"])], pki.roots(), now())
    assert len(graph.keys_for("team/app")) == 1
    assert graph.keys_for("team/app2") == [] and graph.keys_for("team/app/sub") == []


def test_disabled_root(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    other = make_cert("Other Root", ca=True)
    roots = [Root("other.pem", other.cert), *pki.roots(enabled=False)]
    graph = evaluate([_grant(pki, user_key)], roots, now())
    assert graph.grants == ()
    assert _reasons(graph) == ["chain ends at root corp.pem, which is disabled"]


def test_unknown_root(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    other = Pki("Other")
    graph = evaluate([_grant(pki, user_key)], other.roots(), now())
    assert _reasons(graph)[0].startswith("chain does not end at an enabled root")
    graph = evaluate([_grant(pki, user_key)], [], now())
    assert "no enabled root" in _reasons(graph)[0]


def test_replayed_statement_counts_once(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    statement = _grant(pki, user_key)
    graph = evaluate([statement, statement + b"\n", statement], pki.roots(), now())
    assert len(graph.grants) == 1 and graph.refused == ()


def _tamper_payload(statement: bytes, change: dict[str, object]) -> bytes:
    header, payload, sig = statement.split(b".")
    doc = json.loads(base64.urlsafe_b64decode(payload + b"=="))
    doc |= change
    new = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=")
    return b".".join([header, new, sig])


def test_tampered_payload(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    bad = _tamper_payload(_grant(pki, user_key), {"namespaces": ["*"]})
    graph = evaluate([bad], pki.roots(), now())
    assert graph.grants == ()
    assert _reasons(graph)[0].startswith("malformed: signature invalid")
    with pytest.raises(StatementError, match="signature invalid"):
        parse(bad)


@pytest.mark.parametrize(
    ("x5c", "message"),
    [
        (None, "no x5c certificate chain"),
        ([], "no x5c certificate chain"),
        (["!!!"], r"x5c\[0\] is not a base64 DER certificate"),
        ([base64.b64encode(b"garbage").decode()], r"x5c\[0\] is not a base64 DER"),
    ],
)
def test_x5c_missing_or_garbage(
    pki: Pki, user_key: ec.EllipticCurvePrivateKey, x5c: object, message: str
) -> None:
    header_b64, payload, sig = _grant(pki, user_key).split(b".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + b"=="))
    if x5c is None:
        del header["x5c"]
    else:
        header["x5c"] = x5c
    new = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=")
    with pytest.raises(StatementError, match=message):
        parse(b".".join([new, payload, sig]))


@pytest.mark.parametrize(
    "garbage", [b"", b"hello", b"a.b.c", b"\xff\xfe", b"x" * 70000, b"e30.e30.e30"]
)
def test_garbage_is_malformed(pki: Pki, garbage: bytes) -> None:
    graph = evaluate([garbage], pki.roots(), now())
    assert graph.grants == ()
    assert graph.refused[0].reason.startswith("malformed: ")
    assert graph.refused[0].statement.startswith("sha256:")


def test_leaf_without_digital_signature(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    leaf = pki.inter.issue("No Sign", usage=key_usage(encipher=True))
    with pytest.raises(StatementError, match="digitalSignature"):
        issue_grant(pki.signer(leaf), [leaf.cert], _pem(user_key), "alice", ["a/*"])


def test_certificate_expired_at_now(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    statement = _grant(pki, user_key)
    graph = evaluate([statement], pki.roots(), now() + 3 * DAY)
    assert graph.grants == ()
    assert "Authority Root Statements expired on" in _reasons(graph)[0]


def test_leaf_that_is_not_signed_by_a_ca(user_key: ec.EllipticCurvePrivateKey) -> None:
    root = make_cert("Root", ca=True)
    not_ca = root.issue("Plain Leaf")  # CA:FALSE cannot issue
    leaf = not_ca.issue("Grandchild")
    statement = issue_grant(
        KeySigner(leaf.key),  # type: ignore[arg-type]
        [leaf.cert, not_ca.cert],
        _pem(user_key),
        "alice",
        ["a/*"],
    )
    graph = evaluate([statement], [Root("r", root.cert)], now())
    assert _reasons(graph)[0].startswith("chain does not end at an enabled root")


def test_signer_must_own_the_leaf(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    with pytest.raises(StatementError, match="does not belong to the certificate"):
        issue_grant(KeySigner(user_key), pki.chain, _pem(user_key), "alice", ["a/*"])


def test_issued_in_the_future(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    statement = _grant(pki, user_key, now=now() + 2 * HOUR)
    graph = evaluate([statement], pki.roots(), now())
    assert _reasons(graph)[0].startswith("issued in the future")


def test_private_key_refused(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    private = user_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(StatementError, match="private key"):
        issue_grant(pki.signer(), pki.chain, private, "alice", ["a/*"])


def test_openpgp_key_fingerprint(pki: Pki, tmp_path: Path) -> None:
    gpg_key = make_key(tmp_path, "dev")
    try:
        binary = gpg_key.public.read_bytes()
        statement = issue_grant(pki.signer(), pki.chain, binary, "dev", ["dev/*"])
        (grant,) = evaluate([statement], pki.roots(), now()).grants
        assert grant.key_type == "openpgp"
        assert grant.key_id == gpg_key.fingerprint.upper()
        assert grant.public.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    finally:
        stop_agent(gpg_key)


def test_roots_directory(pki: Pki, user_key: ec.EllipticCurvePrivateKey, tmp_path: Path) -> None:
    from trustyard.authority import roots as rootsdir

    src = tmp_path / "corp-root.pem"
    src.write_bytes(pki.root.pem)
    d = tmp_path / "roots"
    rootsdir.add_root(d, src)
    with pytest.raises(rootsdir.RootsError, match="already exists"):
        rootsdir.add_root(d, src)
    statement = _grant(pki, user_key)
    assert len(evaluate([statement], rootsdir.load_roots(d), now()).grants) == 1
    rootsdir.set_enabled(d, "corp-root", False)
    assert (d / "corp-root.pem.disabled").exists()
    graph = evaluate([statement], rootsdir.load_roots(d), now())
    assert _reasons(graph) == ["chain ends at root corp-root.pem, which is disabled"]
    rootsdir.set_enabled(d, "corp-root.pem", True)
    assert len(evaluate([statement], rootsdir.load_roots(d), now()).grants) == 1
    rootsdir.remove_root(d, "corp-root.pem")
    assert rootsdir.load_roots(d) == []
    (d / "junk.pem").write_bytes(b"nope")
    with pytest.raises(rootsdir.RootsError, match="no PEM certificate"):
        rootsdir.load_roots(d)


def test_deeply_nested_json_is_refused(pki: Pki) -> None:
    deep = base64.urlsafe_b64encode(b"[" * 20000 + b"]" * 20000).rstrip(b"=")
    with pytest.raises(StatementError, match=r"nested \d+ levels deep"):
        parse(deep + b".e30.AAAA")


def test_an_id_that_is_a_path_is_refused(pki: Pki, user_key: ec.EllipticCurvePrivateKey) -> None:
    from trustyard.authority import statements

    good = parse(_grant(pki, user_key))
    payload = {
        "id": "../../evil",
        "type": "revoke",
        "issued": "2026-01-01T00:00:00Z",
        "expires": None,
        "revokes": {"statement": good.id},
        "reason": "x",
    }
    signed = statements._sign(pki.signer(), pki.chain, payload)
    with pytest.raises(StatementError, match=r"id '\.\./\.\./evil' must be"):
        parse(signed)


def test_an_rsa_authority_rs256(user_key: ec.EllipticCurvePrivateKey) -> None:
    """Statements are issued with EC keys; an RSA authority's RS256 statements verify too."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from trustyard.authority import statements

    root = make_cert("RSA Root", ca=True)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = root.issue("RSA Authority", key=rsa_key)
    kind, kid, public = statements.describe_key(_pem(user_key))
    payload = {
        "id": "rsa-1",
        "type": "grant",
        "issued": "2026-01-01T00:00:00Z",
        "expires": None,
        "key": {"type": kind, "id": kid, "public": public.decode()},
        "user": "erin",
        "namespaces": ["erin/*"],
    }
    header = {"alg": "RS256", "typ": statements.TYP, "x5c": [leaf.der_b64]}

    def b64(doc: object) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=")

    signing_input = b64(header) + b"." + b64(payload)
    signature = rsa_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    jws = signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")
    graph = evaluate([jws], [Root("rsa.pem", root.cert)], now())
    assert [g.user for g in graph.grants] == ["erin"], graph.refused
    header["alg"] = "ES256"  # alg and key disagree
    forged = b64(header) + b"." + b64(payload) + b"." + jws.split(b".")[2]
    with pytest.raises(StatementError, match="alg ES256 does not match the key"):
        parse(forged)
