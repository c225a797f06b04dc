"""The trust client's private keys: encrypted files in the trust directory, or a PKCS#11 token.

Layout, as Notary's trust dir: `private/<keyid>.key` (PKCS#8 PEM, encrypted with the role's
passphrase) beside `private/<keyid>.json` ({"role", "gun"}); `<keyid>` is the canonical key ID
over the public key. Passphrases come from Notary's variables (`NOTARY_ROOT_PASSPHRASE`,
`NOTARY_TARGETS_PASSPHRASE`, `NOTARY_SNAPSHOT_PASSPHRASE`, `NOTARY_DELEGATION_PASSPHRASE`), else
from the caller's prompt. Private key material is never printed or logged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from trustyard.crypto.errors import SigningError
from trustyard.crypto.notary_keys import PrivateKey, PublicKey
from trustyard.crypto.pkcs11 import Pkcs11Signer, Pkcs11Uri
from trustyard.trust.client.pinning import public_key_of

PASSPHRASE_ENV = {
    "root": "NOTARY_ROOT_PASSPHRASE",
    "targets": "NOTARY_TARGETS_PASSPHRASE",
    "snapshot": "NOTARY_SNAPSHOT_PASSPHRASE",
    "delegation": "NOTARY_DELEGATION_PASSPHRASE",
}
Prompt = Callable[[str, bool], str | None]  # (what, creating) → passphrase or None


class KeyStoreError(Exception):
    """A key cannot be created, found or unlocked; the message never holds secrets."""


def passphrase_class(role: str) -> str:
    return role if role in ("root", "targets", "snapshot") else "delegation"


class NotarySigner(Protocol):
    """Signs Notary metadata: raw r‖s ECDSA over SHA-256, or Ed25519."""

    @property
    def public(self) -> PublicKey:
        """The plain public key (`ecdsa`, `rsa`, `ed25519`)."""

    @property
    def method(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class FileSigner:
    key: PrivateKey

    @property
    def public(self) -> PublicKey:
        return self.key.public

    @property
    def method(self) -> str:
        return self.key.method

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


class TokenSigner:
    """A PKCS#11 EC key, P-256 or P-384 (trustyard.crypto.pkcs11; Notary's own HSM roots are
    P-256): SHA-256 on the host whatever the curve, as Notary's `ecdsa` signs and verifies,
    CKM_ECDSA in the token, r‖s kept raw (two curve-size halves) as Notary wants it."""

    def __init__(self, uri: str | Pkcs11Uri) -> None:
        try:
            parsed = uri if isinstance(uri, Pkcs11Uri) else Pkcs11Uri.parse(uri)
            self._token = Pkcs11Signer(parsed)
            der = self._token.public_key_der()
        except SigningError as exc:
            raise KeyStoreError(str(exc)) from None
        self._public = PublicKey("ecdsa", der)
        self._size = (public_curve_bits(der) + 7) // 8

    @property
    def public(self) -> PublicKey:
        return self._public

    @property
    def method(self) -> str:
        return "ecdsa"

    def sign(self, message: bytes) -> bytes:
        try:
            der = self._token.sign_digest(hashlib.sha256(message).digest())
        except SigningError as exc:
            raise KeyStoreError(str(exc)) from None
        r, s = decode_dss_signature(der)
        return r.to_bytes(self._size, "big") + s.to_bytes(self._size, "big")

    def crypto_public(self) -> Any:
        return self._public.crypto_key()


def public_curve_bits(spki: bytes) -> int:
    key = serialization.load_der_public_key(spki)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyStoreError("PKCS#11 key is not an EC key")
    return int(key.curve.key_size)


def _wrap(key: Any) -> PrivateKey:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return PrivateKey("ed25519", key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return PrivateKey("ecdsa", key)
    raise KeyStoreError(f"unsupported private key type {type(key).__name__} (use EC or Ed25519)")


class KeyStore:
    def __init__(self, trust_dir: Path, prompt: Prompt | None = None) -> None:
        self.dir = trust_dir / "private"
        self._prompt = prompt
        self._cache: dict[str, PrivateKey] = {}

    def _passphrase(self, role: str, creating: bool) -> bytes:
        cls = passphrase_class(role)
        env = PASSPHRASE_ENV[cls]
        value = os.environ.get(env)
        if value is None and self._prompt is not None:
            value = self._prompt(f"{cls} key", creating)
        if not value:
            raise KeyStoreError(f"no passphrase for the {cls} key: set {env}")
        return value.encode()

    def _write(self, key: PrivateKey, role: str, gun: str) -> str:
        keyid = key.public.key_id
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        pem = key.encrypt(self._passphrase(role, creating=True))
        path = self.dir / f"{keyid}.key"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, path)
        info = {"role": role, "gun": gun}
        (self.dir / f"{keyid}.json").write_text(json.dumps(info, sort_keys=True) + "\n")
        self._cache[keyid] = key
        return keyid

    def generate(self, role: str, gun: str) -> PrivateKey:
        key = PrivateKey.generate("ecdsa")
        self._write(key, role, gun)
        return key

    def import_key(self, data: bytes, role: str, gun: str, source: str) -> PrivateKey:
        """Import a PEM (possibly encrypted with the role's passphrase) or DER private key."""
        loaded: Any = None
        for password in (None, "passphrase"):
            try:
                pw = None if password is None else self._passphrase(role, creating=False)
                if data.lstrip().startswith(b"-----"):
                    loaded = serialization.load_pem_private_key(data, password=pw)
                else:
                    loaded = serialization.load_der_private_key(data, password=pw)
                break
            except TypeError:  # encrypted, and no password given yet
                continue
            except ValueError:
                raise KeyStoreError(
                    f"cannot read private key {source}: wrong passphrase or not a private key"
                ) from None
        if loaded is None:
            raise KeyStoreError(f"cannot read private key {source}")
        key = _wrap(loaded)
        self._write(key, role, gun)
        return key

    def info(self, keyid: str) -> dict[str, str] | None:
        path = self.dir / f"{keyid}.json"
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def add_token(self, uri: str, role: str, gun: str) -> TokenSigner:
        """Use a key in a PKCS#11 token for `role`; the URI is kept without its pin-value (the
        PIN then comes from the role's passphrase variable, as Notary asks for a token PIN)."""
        parsed = Pkcs11Uri.parse(uri)
        if parsed.pin is None:
            parsed = replace(parsed, pin=self._passphrase(role, creating=False).decode())
        signer = TokenSigner(parsed)
        stored = re.sub(r"[;&?]?pin-value=[^;&]*", "", uri)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = {"role": role, "gun": gun, "pkcs11": stored}
        path = self.dir / f"{signer.public.key_id}.json"
        path.write_text(json.dumps(info, sort_keys=True) + "\n")
        return signer

    def ids(self, role: str | None = None) -> list[str]:
        if not self.dir.is_dir():
            return []
        found = []
        for path in sorted(self.dir.glob("*.json")):
            info = self.info(path.stem) or {}
            if not self.has(path.stem):
                continue
            if role is None or info.get("role") == role:
                found.append(path.stem)
        return found

    def has(self, keyid: str) -> bool:
        if (self.dir / f"{keyid}.key").exists():
            return True
        return "pkcs11" in (self.info(keyid) or {})

    def signer(self, keyid: str) -> NotarySigner:
        info = self.info(keyid) or {}
        if "pkcs11" in info and not (self.dir / f"{keyid}.key").exists():
            try:
                parsed = Pkcs11Uri.parse(info["pkcs11"])
            except SigningError as exc:
                raise KeyStoreError(str(exc)) from None
            if parsed.pin is None:
                role = info.get("role", "delegation")
                parsed = replace(parsed, pin=self._passphrase(role, creating=False).decode())
            return TokenSigner(parsed)
        if keyid in self._cache:
            return FileSigner(self._cache[keyid])
        path = self.dir / f"{keyid}.key"
        try:
            pem = path.read_bytes()
        except OSError:
            raise KeyStoreError(f"no private key {keyid} in {self.dir}") from None
        role = (self.info(keyid) or {}).get("role", "delegation")
        try:
            key = PrivateKey.decrypt(pem, self._passphrase(role, creating=False))
        except (ValueError, TypeError):
            cls = passphrase_class(role)
            raise KeyStoreError(
                f"wrong passphrase for the {cls} key {keyid[:12]} (check {PASSPHRASE_ENV[cls]})"
            ) from None
        self._cache[keyid] = key
        return FileSigner(key)


def plain_key(public: Any) -> PublicKey:
    return public_key_of(public)
