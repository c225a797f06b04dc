"""EC P-256 and P-384 keys held in a PKCS#11 token (an HSM, a smart card, SoftHSM2), via python-pkcs11.

A key is named by an RFC 7512 URI wherever a private key file is accepted:
    pkcs11:token=vendor;object=vendor-key?pin-value=1234
    pkcs11:token=vendor;id=%01?pin-source=file:/run/secrets/pin&module-path=/usr/lib/…so
Path attributes (`;`-separated): token, object, id, serial, manufacturer, model, type (must be
`private` if given), slot-id. Query attributes (`&`-separated): pin-value, pin-source (a
`file:` URI or a path; its first line is the PIN), module-path. For convenience pin-value,
pin-source and module-path are also accepted among the path attributes. The module is
`module-path`, else `$PKCS11_MODULE`, else SoftHSM2's usual location.

Curves: P-256 (secp256r1) and P-384 (secp384r1), the NIST curves every HSM, Notary and cosign
share; any other key is refused naming these two. Signing uses CKM_ECDSA over a digest computed
on the host (each format picks the hash: ir-sign SHA-384 and P-384 only, cosign the curve's hash,
Notary SHA-256); the token returns raw r‖s, which is re-encoded as a DER ECDSA-Sig-Value. The
public key comes from the matching public key object, as SPKI DER.

Every call into the module is followed by clearing OpenSSL's error queue (`_clear_openssl_errors`):
a module linked against the same libcrypto as Python's `ssl` (SoftHSM2 is) leaves errors there
that `ssl` would otherwise report on the next unrelated TLS read (issue 19 item 4).
"""

from __future__ import annotations

import ctypes
import os
import re
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes, urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trustyard.crypto.ecdsa import public_key_to_der
from trustyard.crypto.errors import KeyFormatError, TokenError

SCHEME = "pkcs11:"
DEFAULT_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
# The curves a token key may be on, with the hash that goes with each where a format lets the
# curve decide (JWS ES256/ES384, cosign). Notary's `ecdsa` always hashes with SHA-256.
CURVE_HASHES = {"secp256r1": "sha256", "secp384r1": "sha384"}
SUPPORTED = "P-256 (secp256r1) or P-384 (secp384r1)"
_PATH_ATTRS = {"token", "object", "id", "serial", "manufacturer", "model", "type", "slot-id"}
_QUERY_ATTRS = {"pin-value", "pin-source", "module-path", "module-name"}


@dataclass(frozen=True)
class Pkcs11Uri:
    token: str | None = None
    object: str | None = None
    id: bytes | None = None
    serial: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    slot_id: int | None = None
    pin: str | None = None
    module: str | None = None

    @classmethod
    def parse(cls, uri: str, *, key: bool = True) -> Pkcs11Uri:
        """Parse an RFC 7512 URI naming a private key (or, with `key=False`, a token, which
        may still name a key: the caller decides); say exactly what is wrong."""
        if not uri.startswith(SCHEME):
            raise KeyFormatError(f"{uri!r} is not a pkcs11: URI")
        path, _, query = uri[len(SCHEME) :].partition("?")
        raw: dict[str, str] = {}
        for part, sep in ((path, ";"), (query, "&")):
            for item in filter(None, part.split(sep)):
                name, eq, value = item.partition("=")
                if not eq:
                    raise KeyFormatError(f"{_redact(uri)}: attribute {name!r} has no value")
                if name not in _PATH_ATTRS | _QUERY_ATTRS:
                    raise KeyFormatError(
                        f"{_redact(uri)}: unknown attribute {name!r}; use token, object, id, "
                        "pin-value, pin-source, module-path (RFC 7512)"
                    )
                if name in raw:
                    raise KeyFormatError(f"{_redact(uri)}: attribute {name!r} given twice")
                raw[name] = value
        if "type" in raw and raw["type"] != "private":
            raise KeyFormatError(f"{_redact(uri)}: type={raw['type']}; a signing key is private")
        if key and "object" not in raw and "id" not in raw:
            raise KeyFormatError(f"{_redact(uri)}: name the key with object=LABEL and/or id=%XX")
        if "pin-value" in raw and "pin-source" in raw:
            raise KeyFormatError(f"{_redact(uri)}: give pin-value or pin-source, not both")
        pin = unquote(raw["pin-value"]) if "pin-value" in raw else None
        if "pin-source" in raw:
            pin = _read_pin(unquote(raw["pin-source"]))
        slot_id = None
        if "slot-id" in raw:
            if not raw["slot-id"].isdigit():
                raise KeyFormatError(f"{_redact(uri)}: slot-id must be a decimal number")
            slot_id = int(raw["slot-id"])
        if "module-name" in raw and "module-path" not in raw:
            raise KeyFormatError(f"{_redact(uri)}: use module-path=/path/to/module.so")
        return cls(
            token=_text(raw, "token"),
            object=_text(raw, "object"),
            id=unquote_to_bytes(raw["id"]) if "id" in raw else None,
            serial=_text(raw, "serial"),
            manufacturer=_text(raw, "manufacturer"),
            model=_text(raw, "model"),
            slot_id=slot_id,
            pin=pin,
            module=_text(raw, "module-path"),
        )

    def describe(self) -> str:
        """The URI without its PIN, for messages."""
        parts = [
            f"{k}={v}" for k, v in (("token", self.token), ("object", self.object)) if v is not None
        ]
        if self.id is not None:
            parts.append("id=" + "".join(f"%{b:02x}" for b in self.id))
        return SCHEME + ";".join(parts)


def _text(raw: dict[str, str], name: str) -> str | None:
    return unquote(raw[name]) if name in raw else None


def _redact(uri: str) -> str:
    """A URI as it may appear in a message: the pin-value replaced."""
    return re.sub(r"pin-value=[^;&]*", "pin-value=***", uri)


def _read_pin(source: str) -> str:
    path = urlsplit(source).path if source.startswith("file:") else source
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise KeyFormatError(f"cannot read pin-source {path}: {exc.strerror or exc}") from None
    return lines[0] if lines else ""


def find_module(explicit: str | None) -> str:
    """The PKCS#11 module to load: module-path, else $PKCS11_MODULE, else SoftHSM2's."""
    if explicit:
        return explicit
    if os.environ.get("PKCS11_MODULE"):
        return os.environ["PKCS11_MODULE"]
    for candidate in DEFAULT_MODULES:
        if Path(candidate).exists():
            return candidate
    raise TokenError(
        "no PKCS#11 module found: pass module-path=… in the URI or set PKCS11_MODULE "
        "(SoftHSM2: apt-get install softhsm2)"
    )


def _find_err_clear_error() -> Callable[[], None] | None:
    """OpenSSL's `ERR_clear_error` from the libcrypto Python's `ssl` module uses, or None.

    Looked up through the `_ssl` extension's own handle: dlsym on it searches `_ssl` and then
    its dependencies, so this is the libcrypto whose (per-thread) error queue `ssl` reads, not
    merely some libcrypto on the library path. If `_ssl` carries a static OpenSSL whose symbols
    are hidden, nothing is found, and a module cannot share that queue anyway.
    """
    try:
        func = ctypes.CDLL(ssl._ssl.__file__).ERR_clear_error  # type: ignore[attr-defined]
    except (OSError, AttributeError):
        return None
    func.argtypes, func.restype = [], None
    return func


_ERR_CLEAR_ERROR = _find_err_clear_error()


def _clear_openssl_errors() -> None:
    """Drop whatever the PKCS#11 module left on this thread's OpenSSL error queue.

    Why clearing and not a worker process for the module: the queue is per thread, and this runs
    on the thread that called the module, right after the call and before control goes back to
    code that may read a TLS socket, so a stale error can no longer be misread by `ssl` (OpenSSL's
    SSL_get_error looks at the queue first, and a non-blocking read that merely wants more data
    then looks like a protocol failure). It keeps the module in-process, where SoftHSM2 reads its
    configuration and the PIN never crosses a pipe, at no measurable cost per call.
    """
    if _ERR_CLEAR_ERROR is not None:
        _ERR_CLEAR_ERROR()


def curve_of(spki_der: bytes, source: str) -> ec.EllipticCurvePublicKey:
    """The token's public key, if it is on a supported curve; otherwise say which curves are."""
    try:
        key = serialization.load_der_public_key(spki_der)
    except (ValueError, UnsupportedAlgorithm):
        raise TokenError(f"{source}: the token's public key cannot be read") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyFormatError(f"{source}: not an EC key; PKCS#11 keys must be {SUPPORTED}")
    if key.curve.name not in CURVE_HASHES:
        raise KeyFormatError(
            f"{source}: key is on curve {key.curve.name}; PKCS#11 keys must be {SUPPORTED}"
        )
    return key


def _import_pkcs11() -> Any:
    try:
        import pkcs11
    except ImportError:  # pragma: no cover - python-pkcs11 is a dependency
        raise TokenError("PKCS#11 keys need the python-pkcs11 package") from None
    return pkcs11


class Pkcs11Token:
    """One token in one PKCS#11 module, found by the URI's token attributes, logged into with
    the URI's PIN: the module loading, token lookup and login that every token user shares
    (the signing toolkit's `Pkcs11Signer`, the trust server's key store)."""

    def __init__(self, uri: Pkcs11Uri) -> None:
        self.uri = uri
        self.pkcs11 = _import_pkcs11()
        module = find_module(uri.module)
        try:
            self._lib = self.pkcs11.lib(module)
        except Exception as exc:  # python-pkcs11 raises bare RuntimeError/OSError subclasses
            raise TokenError(f"cannot load PKCS#11 module {module}: {exc}") from None
        finally:
            _clear_openssl_errors()  # C_Initialize: SoftHSM2 sets up its OpenSSL here
        try:
            self._token = self._find_token()
        finally:
            _clear_openssl_errors()

    def _find_token(self) -> Any:
        p11 = self.pkcs11
        try:
            slots = self._lib.get_slots(token_present=True)
        except p11.PKCS11Error as exc:
            raise TokenError(f"PKCS#11 module failed to list slots: {exc!r}") from None
        found, seen = [], []
        for slot in slots:
            token = slot.get_token()
            if token.label.strip():
                seen.append(token.label.strip())
            if self.uri.slot_id is not None and slot.slot_id != self.uri.slot_id:
                continue
            checks = (
                (self.uri.token, token.label),
                (self.uri.serial, _decode(token.serial)),
                (self.uri.manufacturer, token.manufacturer_id),
                (self.uri.model, token.model),
            )
            if all(want is None or want == have.strip() for want, have in checks):
                found.append(token)
        if not found:
            listing = ", ".join(repr(label) for label in seen) or "none"
            raise TokenError(f"{self.uri.describe()}: no such token (tokens present: {listing})")
        if len(found) > 1:
            raise TokenError(f"{self.uri.describe()}: several tokens match; add serial=…")
        return found[0]

    @contextmanager
    def session(self, *, rw: bool = False) -> Iterator[Any]:
        """A logged-in session (read-write with `rw`), closed again on exit. Every module call
        belongs inside one: on exit OpenSSL's error queue is cleared (`_clear_openssl_errors`)."""
        p11 = self.pkcs11
        if self.uri.pin is None:
            raise TokenError(
                f"{self.uri.describe()}: no PIN; add pin-value=… or pin-source=file:… to the URI"
            )
        try:
            session = self._token.open(rw=rw, user_pin=self.uri.pin)
        except (p11.PinIncorrect, p11.PinLenRange, p11.PinInvalid):
            raise TokenError(f"{self.uri.describe()}: wrong PIN") from None
        except p11.PKCS11Error as exc:
            raise TokenError(f"{self.uri.describe()}: cannot log in ({exc!r})") from None
        finally:
            _clear_openssl_errors()
        try:
            yield session
        finally:
            try:
                session.close()
            finally:
                _clear_openssl_errors()


class Pkcs11Signer:
    """A `Signer` whose private key never leaves the token: EC P-256 or P-384 (`curve`); the
    caller hashes with what its format asks for.

    A session is opened per operation (a CLI signs a handful of digests), so nothing stays
    logged in after a call returns.
    """

    def __init__(self, uri: Pkcs11Uri) -> None:
        self.uri = uri
        self._token = Pkcs11Token(uri)
        self._pkcs11 = self._token.pkcs11
        self._public: bytes | None = None
        self._key: ec.EllipticCurvePublicKey | None = None

    @classmethod
    def from_uri(cls, uri: str) -> Pkcs11Signer:
        return cls(Pkcs11Uri.parse(uri))

    def _find(self, session: Any, object_class: Any) -> Any:
        p11 = self._pkcs11
        attrs: dict[Any, Any] = {
            p11.Attribute.CLASS: object_class,
            p11.Attribute.KEY_TYPE: p11.KeyType.EC,
        }
        if self.uri.object is not None:
            attrs[p11.Attribute.LABEL] = self.uri.object
        if self.uri.id is not None:
            attrs[p11.Attribute.ID] = self.uri.id
        found = list(session.get_objects(attrs))
        if len(found) == 1:
            return found[0]
        kind = "private" if object_class == p11.ObjectClass.PRIVATE_KEY else "public"
        if not found:
            labels = sorted(
                str(o.label)
                for o in session.get_objects({p11.Attribute.CLASS: p11.ObjectClass.PRIVATE_KEY})
            )
            raise TokenError(
                f"{self.uri.describe()}: no EC {kind} key with that object/id in token "
                f"{self.uri.token or ''} (private keys: {', '.join(labels) or 'none'})"
            )
        raise TokenError(f"{self.uri.describe()}: {len(found)} {kind} keys match; add id=…")

    def public_key_der(self) -> bytes:
        if self._public is None:
            p11 = self._pkcs11
            with self._token.session() as session:
                self._find(session, p11.ObjectClass.PRIVATE_KEY)  # name the missing key first
                pub = self._find(session, p11.ObjectClass.PUBLIC_KEY)
                der = p11.util.ec.encode_ec_public_key(pub)
            # normalises the encoding and refuses curves other than P-256 and P-384
            self._key = curve_of(der, self.uri.describe())
            self._public = public_key_to_der(self._key)
        return self._public

    def public_key(self) -> ec.EllipticCurvePublicKey:
        self.public_key_der()
        assert self._key is not None
        return self._key

    @property
    def curve(self) -> str:
        """`secp256r1` or `secp384r1`."""
        return str(self.public_key().curve.name)

    def sign_digest(self, digest: bytes) -> bytes:
        self.public_key_der()  # checks the curve before anything is signed
        p11 = self._pkcs11
        with self._token.session() as session:
            key = self._find(session, p11.ObjectClass.PRIVATE_KEY)
            try:
                raw = bytes(key.sign(digest, mechanism=p11.Mechanism.ECDSA))
            except p11.PKCS11Error as exc:
                raise TokenError(f"{self.uri.describe()}: CKM_ECDSA failed ({exc!r})") from None
        return raw_to_der(raw)


def raw_to_der(raw: bytes) -> bytes:
    """PKCS#11 CKM_ECDSA's r‖s (two equal-length big-endian integers) → DER ECDSA-Sig-Value."""
    if not raw or len(raw) % 2:
        raise TokenError(f"token returned a {len(raw)} byte ECDSA signature; expected r||s")
    half = len(raw) // 2
    return encode_dss_signature(
        int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    )


def _decode(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
