"""Keys in a PKCS#11 token (SoftHSM2): every place a key file goes takes a pkcs11: URI."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustyard.crypto.pkcs11 import Pkcs11Uri, raw_to_der
from trustyard.crypto.signer import open_signer
from trustyard.signing.errors import KeyFormatError, TokenError

from .helpers import Keys, blob, manifest_of, openssl_sign, run, sh
from .hsm import PIN, TOKEN, Token


def openssl_verify(pub: Path, sig: Path, data: Path) -> str:
    return sh(
        "openssl", "dgst", "-sha384", "-verify", pub, "-keyform", "DER", "-signature", sig, data
    ).decode()


def test_token_key_signs_what_openssl_verifies(hsm: Token, tmp_path: Path) -> None:
    pub, data, sig = tmp_path / "vendor.pub", tmp_path / "data", tmp_path / "data.sig"
    data.write_bytes(b"payload " * 1000)
    assert run("extract-public", "-i", hsm.uri(), "-o", pub).exit_code == 0
    # the public key is a P-384 SPKI DER, as openssl ec -pubout -outform DER writes it
    text = sh("openssl", "pkey", "-pubin", "-inform", "DER", "-in", pub, "-noout", "-text")
    assert b"secp384r1" in text
    result = run("sign", "-k", hsm.uri(), "-f", data, "-s", sig)
    assert result.exit_code == 0, result.output
    # CKM_ECDSA's raw r||s was wrapped in DER: openssl parses and verifies it
    r, s = decode_dss_signature(sig.read_bytes())
    assert r > 0 and s > 0
    assert "Verified OK" in openssl_verify(pub, sig, data)
    assert run("verify", "-p", pub, "-f", data, "-s", sig).exit_code == 0
    # a different file does not verify: the token signed this digest, not any
    other = tmp_path / "other"
    other.write_bytes(b"payload")
    assert run("verify", "-p", pub, "-f", other, "-s", sig).exit_code == 1


def test_sign_image_with_token_vendor_key_and_openssl_root(
    hsm: Token, keyset: Keys, registry: Path, tmp_path: Path
) -> None:
    """Realistic flow: the CA (openssl, files) endorses the token's vendor key."""
    pub, pubsig = tmp_path / "vendor.pub", tmp_path / "vendor.pub.sig"
    assert run("extract-public", "-i", hsm.uri(), "-o", pub).exit_code == 0
    openssl_sign(keyset.root_prv, pub, pubsig)
    args = ("-r", registry, "-a", "app", "-d", "1.0")
    result = run("sign-image", *args, "-v", hsm.uri(), "-s", pubsig, "-c", keyset.root_pub)
    assert result.exit_code == 0, result.output
    result = run("verify-image", *args, "-c", keyset.root_pub)
    assert result.exit_code == 0, result.output
    # check the config signature by hand with openssl
    _desc, manifest = manifest_of(registry / "app", "1.0")
    ann = manifest["annotations"]
    assert bytes.fromhex(ann["com.samsung.islet.image.vendorpub"]) == pub.read_bytes()
    sig = tmp_path / "config.sig"
    sig.write_bytes(bytes.fromhex(ann["com.samsung.islet.image.signature"]))
    config = blob(registry / "app", manifest["config"]["digest"])
    assert "Verified OK" in openssl_verify(pub, sig, config)


def test_root_ca_key_in_token_simplified_flow(hsm: Token, registry: Path, tmp_path: Path) -> None:
    root_pub = tmp_path / "root.pub"
    assert run("extract-public", "-i", hsm.uri("root"), "-o", root_pub).exit_code == 0
    args = ("-r", registry, "-a", "app", "-d", "2.0")
    result = run("sign-image", *args, "-v", hsm.uri(), "-x", hsm.uri("root"))
    assert result.exit_code == 0, result.output
    result = run("verify-image", *args, "-c", root_pub)
    assert result.exit_code == 0, result.output
    assert "endorsed by the root CA" in result.output


def test_pin_source_file(hsm: Token, tmp_path: Path) -> None:
    pin = tmp_path / "pin"
    pin.write_text(PIN + "\n")
    uri = f"pkcs11:token={TOKEN};object=vendor?pin-source=file:{pin}"
    pub = tmp_path / "vendor.pub"
    assert run("extract-public", "-i", uri, "-o", pub).exit_code == 0
    assert pub.read_bytes() == open_signer(hsm.uri()).public_key_der()
    # pin-value among the path attributes, as often written, works as well
    same = open_signer(f"pkcs11:token={TOKEN};object=vendor;pin-value={PIN}")
    assert same.public_key_der() == pub.read_bytes()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (f"pkcs11:token={TOKEN};object=vendor?pin-value=0000", "wrong PIN"),
        (f"pkcs11:token={TOKEN};object=nope?pin-value={PIN}", "private keys: p256, root, vendor"),
        (f"pkcs11:token=absent;object=vendor?pin-value={PIN}", f"tokens present: '{TOKEN}'"),
        (f"pkcs11:token={TOKEN};object=vendor", "no PIN"),
        (f"pkcs11:token={TOKEN};object=p256?pin-value={PIN}", "curve secp256r1"),
        (f"pkcs11:token={TOKEN};object=vendor;color=red?pin-value={PIN}", "unknown attribute"),
    ],
)
def test_bad_token_uris_fail_clearly(hsm: Token, tmp_path: Path, uri: str, message: str) -> None:
    data, sig = tmp_path / "data", tmp_path / "sig"
    data.write_bytes(b"x")
    result = run("sign", "-k", uri, "-f", data, "-s", sig)
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert "0000" not in result.output  # a PIN never appears in a message
    assert not sig.exists()


def test_uri_parsing() -> None:
    uri = Pkcs11Uri.parse(
        "pkcs11:token=My%20Token;id=%01%ff;type=private?pin-value=12%3B4&module-path=/x/y.so"
    )
    assert (uri.token, uri.id, uri.pin, uri.module) == ("My Token", b"\x01\xff", "12;4", "/x/y.so")
    assert uri.describe() == "pkcs11:token=My Token;id=%01%ff"
    for bad, why in [
        ("pkcs11:token=t;type=public;object=o", "a signing key is private"),
        ("pkcs11:token=t", "object=LABEL"),
        ("pkcs11:object=o;object=p", "given twice"),
        ("pkcs11:object=o?pin-value=1&pin-source=/p", "not both"),
        ("pkcs11:object", "has no value"),
    ]:
        with pytest.raises(KeyFormatError, match=why):
            Pkcs11Uri.parse(bad)


def test_raw_signature_to_der() -> None:
    r, s = 2**383 + 5, 7
    raw = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    assert decode_dss_signature(raw_to_der(raw)) == (r, s)
    with pytest.raises(TokenError):
        raw_to_der(b"\x01" * 95)
