"""Root trust decisions: Notary's certificate rules, certs/ca pins, disable_tofu, rotation."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.trust_client.certs import NOW, cert, key
from trustyard.crypto.notary_keys import PrivateKey
from trustyard.trust import model as m
from trustyard.trust.client.documents import envelope
from trustyard.trust.client.keys import FileSigner
from trustyard.trust.client.pinning import (
    PinningError,
    TrustPinning,
    canonical_key_id,
    cert_key,
    check_root,
    load_root_material,
)
from trustyard.trust.client.verify import VerifyError, verify_collection, verify_root_update

GUN = "registry.example/team/app"


def root_file(leaf_pem_certs: list[Any], signer_key: Any, version: int = 1) -> bytes:
    root_pub = cert_key(leaf_pem_certs)
    other = PrivateKey.generate("ecdsa").public
    keys = {root_pub.key_id: root_pub.to_json(), other.key_id: other.to_json()}
    roles = {
        r: {"keyids": [other.key_id], "threshold": 1} for r in ("targets", "snapshot", "timestamp")
    }
    roles["root"] = {"keyids": [root_pub.key_id], "threshold": 1}
    body = {
        "_type": "Root",
        "consistent_snapshot": False,
        "expires": m.format_time(NOW + dt.timedelta(days=3650)),
        "keys": keys,
        "roles": roles,
        "version": version,
    }
    return envelope(body, [(root_pub.key_id, FileSigner(PrivateKey("ecdsa", signer_key)))])


def test_self_signed_root_tofu_and_disable_tofu_message() -> None:
    k = key()
    root = m.parse_root(root_file([cert(GUN, k)], k))
    assert check_root(GUN, root, TrustPinning(), tofu_ok=True, now=NOW).how == "tofu"
    with pytest.raises(PinningError, match=r"disable_tofu.*trustyard trust key import"):
        check_root(GUN, root, TrustPinning(disable_tofu=True), tofu_ok=False, now=NOW)


def test_cn_must_be_the_gun_and_cert_current() -> None:
    k = key()
    with pytest.raises(PinningError, match="CN 'other' is not the GUN"):
        check_root(
            GUN,
            m.parse_root(root_file([cert("other", k)], k)),
            TrustPinning(),
            tofu_ok=True,
            now=NOW,
        )
    old = cert(GUN, k, start=NOW - dt.timedelta(days=400), days=30)
    with pytest.raises(PinningError, match="expired"):
        check_root(GUN, m.parse_root(root_file([old], k)), TrustPinning(), tofu_ok=True, now=NOW)


def test_pinned_canonical_id_covers_every_certificate_of_one_key() -> None:
    k = key()
    a, b = cert(GUN, k), cert(GUN, k)
    assert cert_key([a]).key_id != cert_key([b]).key_id
    canonical = canonical_key_id(cert_key([a]))
    assert canonical == canonical_key_id(cert_key([b]))
    pins = TrustPinning(certs={"registry.example/team/*": (canonical,)}, disable_tofu=True)
    assert (
        check_root(GUN, m.parse_root(root_file([b], k)), pins, tofu_ok=False, now=NOW).how
        == "certs"
    )
    k2 = key()
    with pytest.raises(PinningError, match="not among the keys pinned"):
        check_root(GUN, m.parse_root(root_file([cert(GUN, k2)], k2)), pins, tofu_ok=False, now=NOW)


def test_ca_pin_chain_and_expired_ca(tmp_path: Path) -> None:
    ca_key, k = key(), key()
    ca = cert("org CA", ca_key, ca=True)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pins = TrustPinning(ca={"registry.example/": tmp_path / "ca.pem"}, disable_tofu=True)
    leaf = cert(GUN, k, issuer=(ca, ca_key))
    assert (
        check_root(GUN, m.parse_root(root_file([leaf], k)), pins, tofu_ok=False, now=NOW).how
        == "ca"
    )
    with pytest.raises(PinningError, match="not issued by the CA pinned"):
        check_root(GUN, m.parse_root(root_file([cert(GUN, k)], k)), pins, tofu_ok=False, now=NOW)
    old_ca = cert("old CA", ca_key, ca=True, start=NOW - dt.timedelta(days=800), days=30)
    (tmp_path / "old.pem").write_bytes(old_ca.public_bytes(serialization.Encoding.PEM))
    old_pins = TrustPinning(ca={GUN: tmp_path / "old.pem"})
    leaf2 = cert(GUN, k, issuer=(old_ca, ca_key))
    with pytest.raises(PinningError, match="pinned CA 'old CA' expired"):
        check_root(GUN, m.parse_root(root_file([leaf2], k)), old_pins, tofu_ok=False, now=NOW)


def test_rotation_must_be_signed_by_the_previous_root() -> None:
    k1, k2 = key(), key()
    old = m.parse_root(root_file([cert(GUN, k1)], k1))
    new = m.parse_root(root_file([cert(GUN, k2)], k2, version=2))
    with pytest.raises(VerifyError, match="not signed by the previously trusted root"):
        verify_root_update(old, new)
    with pytest.raises(VerifyError, match="rollback"):
        verify_root_update(new, old)


def test_collection_without_targets_and_config_parsing(tmp_path: Path) -> None:
    k = key()
    data = root_file([cert(GUN, k)], k)
    with pytest.raises(VerifyError, match="no timestamp metadata"):
        verify_collection(GUN, {"root": data}, TrustPinning(), now=NOW)
    pins = TrustPinning.from_json(
        json.loads('{"certs": {"a/*": ["AB"]}, "ca": {"a/b": "ca.pem"}, "disable_tofu": true}'),
        tmp_path,
    )
    assert pins.pinned_ids("a/x") == ("ab",) and pins.ca_file("a/b/c") == tmp_path / "ca.pem"
    with pytest.raises(PinningError, match="disable_tofu must be"):
        TrustPinning.from_json({"disable_tofu": "yes"})


def test_load_root_material_forms() -> None:
    k = key()
    c = cert(GUN, k)
    pem = c.public_bytes(serialization.Encoding.PEM)
    der = c.public_bytes(serialization.Encoding.DER)
    pub = k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ids = {load_root_material(x, "x")[0] for x in (pem, der, pub)}
    assert ids == {canonical_key_id(cert_key([c]))}
    with pytest.raises(PinningError, match="not a certificate or public key"):
        load_root_material(b"junk", "junk.pem")
