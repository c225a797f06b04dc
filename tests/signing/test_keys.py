"""Keys and plain signatures: byte-compatible with openssl in both directions."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from trustyard.crypto import ecdsa as keys
from trustyard.crypto.signer import open_signer
from trustyard.signing.errors import KeyFormatError, SignatureFormatError, VerificationError

from .helpers import Keys, openssl_keypair, openssl_sign, run, sh


def test_gen_key_is_sec1_der_secp384r1_that_openssl_reads(tmp_path: Path) -> None:
    key = tmp_path / "k.prv"
    result = run("gen-key", "-o", key)
    assert result.exit_code == 0, result.output
    text = sh("openssl", "ec", "-in", key, "-inform", "DER", "-noout", "-text").decode()
    assert "ASN1 OID: secp384r1" in text
    # openssl re-encoding the key as SEC1 DER gives back the very same bytes
    reencoded = sh("openssl", "ec", "-in", key, "-inform", "DER", "-outform", "DER")
    assert reencoded == key.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_gen_key_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    key = tmp_path / "k.prv"
    assert run("gen-key", "-o", key).exit_code == 0
    before = key.read_bytes()
    result = run("gen-key", "-o", key)
    assert result.exit_code == 1
    assert "refusing to overwrite" in result.output
    assert key.read_bytes() == before
    assert run("gen-key", "-o", key, "--force").exit_code == 0
    assert key.read_bytes() != before


def test_extract_public_matches_openssl_byte_for_byte(tmp_path: Path, keyset: Keys) -> None:
    ours = tmp_path / "ours.pub"
    assert run("extract-public", "-i", keyset.vendor_prv, "-o", ours).exit_code == 0
    assert ours.read_bytes() == keyset.vendor_pub.read_bytes()
    # and a trustyard key gives openssl's public key too
    key, pub = tmp_path / "t.prv", tmp_path / "t.pub"
    assert run("gen-key", "-o", key).exit_code == 0
    assert run("extract-public", "-i", key, "-o", pub).exit_code == 0
    theirs = sh("openssl", "ec", "-in", key, "-inform", "DER", "-pubout", "-outform", "DER")
    assert pub.read_bytes() == theirs


def test_pem_keys_are_accepted(tmp_path: Path, keyset: Keys) -> None:
    pem = tmp_path / "vendor.pem"
    sh("openssl", "ec", "-in", keyset.vendor_prv, "-inform", "DER", "-out", pem)
    pkcs8 = tmp_path / "vendor.p8"
    sh("openssl", "pkcs8", "-topk8", "-nocrypt", "-in", pem, "-out", pkcs8, "-outform", "DER")
    for source in (pem, pkcs8):
        out = tmp_path / f"{source.name}.pub"
        result = run("extract-public", "-i", source, "-o", out)
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == keyset.vendor_pub.read_bytes()


def test_trustyard_signature_verifies_with_openssl(tmp_path: Path, keyset: Keys) -> None:
    data, sig = tmp_path / "data.bin", tmp_path / "data.sig"
    data.write_bytes(b"payload " * 1000)
    assert run("sign", "-k", keyset.root_prv, "-f", data, "-s", sig).exit_code == 0
    out = sh(
        "openssl",
        "dgst",
        "-sha384",
        "-verify",
        keyset.root_pub,
        "-keyform",
        "DER",
        "-signature",
        sig,
        data,
    )
    assert out.strip() == b"Verified OK"


def test_openssl_signature_verifies_with_trustyard(tmp_path: Path, keyset: Keys) -> None:
    result = run(
        "verify", "-p", keyset.root_pub, "-f", keyset.vendor_pub, "-s", keyset.vendor_pub_sig
    )
    assert result.exit_code == 0, result.output
    assert "Verified OK" in result.output


def test_verify_rejects_a_signature_over_other_bytes(tmp_path: Path, keyset: Keys) -> None:
    other = tmp_path / "other.pub"
    other.write_bytes(keyset.qa_pub.read_bytes())
    result = run("verify", "-p", keyset.root_pub, "-f", other, "-s", keyset.vendor_pub_sig)
    assert result.exit_code == 1
    assert "signature does not verify" in result.output
    assert "Traceback" not in result.output


def test_wrong_curve_is_refused_naming_both_curves(tmp_path: Path) -> None:
    openssl_keypair(tmp_path, "p256", curve="prime256v1")
    result = run("extract-public", "-i", tmp_path / "p256.prv", "-o", tmp_path / "x.pub")
    assert result.exit_code == 1
    assert "secp256r1" in result.output and "expected an EC secp384r1" in result.output
    assert not (tmp_path / "x.pub").exists()
    result = run(
        "verify",
        "-p",
        tmp_path / "p256.pub",
        "-f",
        tmp_path / "p256.pub",
        "-s",
        tmp_path / "p256.pub",
    )
    assert result.exit_code == 1 and "secp256r1" in result.output


def test_wrong_key_type_is_refused(tmp_path: Path) -> None:
    rsa = tmp_path / "rsa.der"
    sh(
        "openssl",
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-outform",
        "DER",
        "-out",
        rsa,
    )
    result = run("sign", "-k", rsa, "-f", rsa, "-s", tmp_path / "sig")
    assert result.exit_code == 1
    assert "got a RSA key, expected an EC secp384r1 private key" in result.output
    assert not (tmp_path / "sig").exists()


def test_public_key_where_private_expected_and_vice_versa(tmp_path: Path, keyset: Keys) -> None:
    result = run("sign", "-k", keyset.vendor_pub, "-f", keyset.vendor_pub, "-s", tmp_path / "s")
    assert result.exit_code == 1 and "this is a public key" in result.output
    result = run(
        "verify", "-p", keyset.root_prv, "-f", keyset.vendor_pub, "-s", keyset.vendor_pub_sig
    )
    assert result.exit_code == 1 and "this is a private key" in result.output


def test_garbage_and_encrypted_keys_say_what_was_expected(tmp_path: Path, keyset: Keys) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x30\x03\x02\x01\x01")
    result = run("extract-public", "-i", junk, "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert "expected an EC secp384r1 private key in SEC1 DER" in result.output
    enc = tmp_path / "enc.pem"
    sh(
        "openssl",
        "ec",
        "-in",
        keyset.vendor_prv,
        "-inform",
        "DER",
        "-aes256",
        "-passout",
        "pass:x",
        "-out",
        enc,
    )
    result = run("extract-public", "-i", enc, "-o", tmp_path / "o")
    assert result.exit_code == 1 and "password-protected" in result.output


def test_signature_not_der_is_named(tmp_path: Path, keyset: Keys) -> None:
    raw = tmp_path / "raw.sig"
    raw.write_bytes(b"\x01" * 96)  # r||s as PKCS#11 returns it
    result = run("verify", "-p", keyset.root_pub, "-f", keyset.vendor_pub, "-s", raw)
    assert result.exit_code == 1
    assert "not a DER ECDSA signature (raw r||s? PEM?)" in result.output


def test_missing_file_is_one_line(tmp_path: Path) -> None:
    result = run("extract-public", "-i", tmp_path / "nope", "-o", tmp_path / "o")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: cannot read")
    assert len(result.output.strip().splitlines()) == 1


def test_unit_sign_and_verify_digest_roundtrip() -> None:
    signer = keys.FileKeySigner(keys.generate_private_key())
    digest = keys.sha384_bytes(b"config")
    sig = signer.sign_digest(digest)
    pub = keys.load_public_key(signer.public_key_der(), "pub")
    keys.verify_digest(pub, sig, digest, "sig")
    with pytest.raises(VerificationError):
        keys.verify_digest(pub, sig, keys.sha384_bytes(b"other"), "sig")
    with pytest.raises(SignatureFormatError):
        keys.check_signature_der(b"not der", "sig")


def test_unit_key_id_and_pkcs11_uri_routing(keyset: Keys) -> None:
    der = keyset.vendor_pub.read_bytes()
    kid = keys.key_id(der)
    assert len(kid) == 16 and int(kid, 16) >= 0
    assert sh("sha256sum", keyset.vendor_pub).decode().startswith(kid)
    # a pkcs11: argument is a URI, never a file name; a URI naming no key is refused up front
    with pytest.raises(KeyFormatError, match="name the key with object=LABEL"):
        open_signer("pkcs11:token=t")


def test_openssl_signature_over_file_made_by_trustyard_key(tmp_path: Path) -> None:
    key, pub, data, sig = (tmp_path / n for n in ("k.prv", "k.pub", "d", "d.sig"))
    assert run("gen-key", "-o", key).exit_code == 0
    assert run("extract-public", "-i", key, "-o", pub).exit_code == 0
    data.write_bytes(b"x" * 3_000_000)  # over one read chunk: exercises streaming hashing
    openssl_sign(key, data, sig)
    result = run("verify", "-p", pub, "-f", data, "-s", sig)
    assert result.exit_code == 0 and "Verified OK" in result.output


def test_pem_public_key_accepted_for_verify(tmp_path: Path, keyset: Keys) -> None:
    pem = tmp_path / "root.pub.pem"
    sh("openssl", "ec", "-in", keyset.root_pub, "-inform", "DER", "-pubin", "-pubout", "-out", pem)
    result = run("verify", "-p", pem, "-f", keyset.vendor_pub, "-s", keyset.vendor_pub_sig)
    assert result.exit_code == 0, result.output


def test_console_script_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["trustyard", "sign", "extract-public", "-i", str(tmp_path / "missing"), "-o", "x"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot read") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
