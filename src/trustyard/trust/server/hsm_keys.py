"""Server-managed timestamp/snapshot keys held in a PKCS#11 token (an HSM, SoftHSM2).

Selected by `[trust] key_store = "pkcs11:token=LABEL?pin-value=…&module-path=…"` (RFC 7512, the
same URI syntax and session handling as `trustyard.crypto.pkcs11`; the PIN may also come from
`key_store_pin`, the module from `$PKCS11_MODULE`). New keys are ECDSA P-256 key pairs generated
inside the token (CKM_EC_KEY_PAIR_GEN, private halves sensitive and never extractable); each gets
a random 16-byte CKA_ID and the label `trustyard-trust`. The metadata store keeps, in the
`private` column where a passphrase-encrypted PEM would otherwise be, only a reference
`pkcs11:id=<hex>`: nothing secret leaves the token.

Signing uses CKM_ECDSA over a SHA-256 digest computed on the host; the token returns raw r‖s,
which is exactly Notary's ECDSA signature encoding. A stored key may also be P-384 (Notary's
`ecdsa` takes both, with SHA-256); other curves are refused naming the supported two.

Ed25519 is not used: SoftHSM2 2.6 implements CKM_EDDSA, but python-pkcs11 0.10 has no
encoder for CKK_EC_EDWARDS public keys and Notary's ed25519 keytype is the raw 32-byte key, so
ECDSA P-256 is the interoperable choice (Notary's own signer uses ECDSA keys in HSMs too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from trustyard.crypto.ecdsa import public_key_to_der
from trustyard.crypto.errors import KeyFormatError, SigningError, TokenError
from trustyard.crypto.notary_keys import KeyError_, PublicKey, Signer
from trustyard.crypto.pkcs11 import Pkcs11Token, Pkcs11Uri, curve_of

REFERENCE_PREFIX = b"pkcs11:id="
LABEL = "trustyard-trust"


class KeyStoreError(Exception):
    """The PKCS#11 key store is misconfigured or the token refused an operation."""


class HeldKey(Signer, Protocol):
    """A key generated in a key store; `reference` is what the metadata store keeps."""

    @property
    def reference(self) -> bytes: ...


class ServerKeyStore(Protocol):
    """Where new server keys are made and stored keys are found (`TokenKeyStore`)."""

    def generate(self) -> HeldKey: ...

    def load(self, reference: bytes, expected: PublicKey) -> Signer: ...


def is_token_reference(private: bytes) -> bool:
    return private.startswith(REFERENCE_PREFIX)


def parse_store_uri(uri: str, pin: str | None = None) -> Pkcs11Uri:
    """A `pkcs11:` URI naming a token (no key), parsed by `crypto.pkcs11`'s parser."""
    if not uri.startswith("pkcs11:"):
        raise KeyStoreError("trust.key_store must be a pkcs11: URI naming a token")
    try:
        parsed = Pkcs11Uri.parse(uri, key=False)
    except KeyFormatError as exc:
        raise KeyStoreError(f"trust.key_store: {exc}") from None
    if parsed.object is not None or parsed.id is not None:
        raise KeyStoreError("trust.key_store names a token, not a key: drop object=/id=")
    if pin is not None:
        parsed = dataclasses.replace(parsed, pin=pin)
    if parsed.pin is None:
        raise KeyStoreError(
            f"trust.key_store {parsed.describe()}: no PIN; add pin-value=…/pin-source=… to the "
            "URI or set TRUSTYARD_TRUST__KEY_STORE_PIN"
        )
    return parsed


class TokenKey:
    """One ECDSA key (P-256 when made here) in the token; signs like `keys.PrivateKey` (`public`, `method`,
    `sign`)."""

    algorithm = "ecdsa"
    method = "ecdsa"

    def __init__(self, store: TokenKeyStore, key_id: bytes, public: PublicKey) -> None:
        self._store, self.token_id, self.public = store, key_id, public

    @property
    def reference(self) -> bytes:
        return REFERENCE_PREFIX + self.token_id.hex().encode()

    def sign(self, message: bytes) -> bytes:
        digest = hashlib.sha256(message).digest()
        return self._store.sign_digest(self.token_id, digest)


class TokenKeyStore:
    """Generates, finds and signs with keys in one token. Thread-safe (a lock per store)."""

    def __init__(self, uri: str, pin: str | None = None) -> None:
        parsed = parse_store_uri(uri, pin)
        try:
            # Loads the module and finds the token, with crypto.pkcs11's messages.
            self._token = Pkcs11Token(parsed)
        except TokenError as exc:
            raise KeyStoreError(f"trust.key_store: {exc}") from None
        self._p11: Any = self._token.pkcs11
        self._lock = threading.Lock()
        self.describe = parsed.describe()
        with self._session():
            pass  # a wrong PIN or a locked token fails at startup, not at the first publish

    @contextmanager
    def _session(self, rw: bool = False) -> Iterator[Any]:
        """A logged-in session, one at a time (crypto.pkcs11's login and messages)."""
        with self._lock:
            try:
                with self._token.session(rw=rw) as session:
                    yield session
            except TokenError as exc:
                raise KeyStoreError(f"trust.key_store: {exc}") from None

    def _find(self, session: Any, object_class: Any, key_id: bytes) -> Any:
        p11 = self._p11
        found = list(
            session.get_objects(
                {
                    p11.Attribute.CLASS: object_class,
                    p11.Attribute.KEY_TYPE: p11.KeyType.EC,
                    p11.Attribute.ID: key_id,
                }
            )
        )
        if len(found) != 1:
            raise KeyStoreError(
                f"trust.key_store {self.describe}: {len(found)} keys with id {key_id.hex()} "
                "(was the token replaced or the key deleted?)"
            )
        return found[0]

    def _public(self, pub: Any) -> PublicKey:
        der = self._p11.util.ec.encode_ec_public_key(pub)
        try:
            key = curve_of(der, f"trust.key_store: key {pub.label!r}")
        except SigningError as exc:
            raise KeyStoreError(str(exc)) from None
        return PublicKey("ecdsa", public_key_to_der(key))

    def generate(self) -> TokenKey:
        p11 = self._p11
        from pkcs11.util.ec import encode_named_curve_parameters

        key_id = os.urandom(16)
        with self._session(rw=True) as session:
            params = session.create_domain_parameters(
                p11.KeyType.EC,
                {p11.Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
                local=True,
            )
            try:
                pub, _priv = params.generate_keypair(
                    store=True,
                    label=LABEL,
                    id=key_id,
                    private_template={
                        p11.Attribute.SENSITIVE: True,
                        p11.Attribute.EXTRACTABLE: False,
                    },
                )
            except p11.PKCS11Error as exc:
                raise KeyStoreError(
                    f"trust.key_store {self.describe}: cannot generate a P-256 key ({exc!r})"
                ) from None
            public = self._public(pub)
        return TokenKey(self, key_id, public)

    def load(self, reference: bytes, expected: PublicKey) -> TokenKey:
        """The token key a stored reference names; its public half must match the record."""
        if not is_token_reference(reference):
            raise KeyStoreError("not a PKCS#11 key reference")
        try:
            key_id = bytes.fromhex(reference[len(REFERENCE_PREFIX) :].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise KeyStoreError(f"malformed PKCS#11 key reference {reference!r}") from None
        with self._session() as session:
            public = self._public(self._find(session, self._p11.ObjectClass.PUBLIC_KEY, key_id))
        if public.key_id != expected.key_id:
            raise KeyStoreError(
                f"trust.key_store {self.describe}: key {key_id.hex()} in the token is not the "
                f"stored key {expected.key_id}"
            )
        return TokenKey(self, key_id, public)

    def sign_digest(self, key_id: bytes, digest: bytes) -> bytes:
        p11 = self._p11
        with self._session() as session:
            key = self._find(session, p11.ObjectClass.PRIVATE_KEY, key_id)
            try:
                raw = bytes(key.sign(digest, mechanism=p11.Mechanism.ECDSA))
            except p11.PKCS11Error as exc:
                raise KeyStoreError(
                    f"trust.key_store {self.describe}: CKM_ECDSA failed ({exc!r})"
                ) from None
        if len(raw) not in (64, 96):
            raise KeyError_(
                f"token returned a {len(raw)} byte signature; expected P-256/P-384 r||s"
            )
        return raw
