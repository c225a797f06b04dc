"""A small real PKI for the token-chain tests: CAs, intermediates and leaves built with
`cryptography`, each with exactly the extensions a test names."""

from __future__ import annotations

import base64
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def now() -> dt.datetime:
    """The current time (certificates are built relative to it when the test runs)."""
    return dt.datetime.now(dt.UTC)


HOUR = dt.timedelta(hours=1)
DEFAULT = object()  # "the usual extension for this kind of certificate"


def key_usage(*, sign: bool = False, cert_sign: bool = False, encipher: bool = False) -> Any:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=encipher,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Cert:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: Key

    @property
    def der_b64(self) -> str:
        return base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def issue(self, cn: str, **kwargs: Any) -> Cert:
        return make_cert(cn, issuer=self, **kwargs)


def make_cert(
    cn: str,
    *,
    issuer: Cert | None = None,
    ca: bool | None = False,
    path_length: int | None = None,
    usage: Any = DEFAULT,
    tls_server: bool = False,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key: Key | None = None,
    subject: x509.Name | None = None,
) -> Cert:
    """`ca=None` leaves BasicConstraints out; `usage=None` leaves KeyUsage out."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now() - HOUR)
        .not_valid_after(not_after or now() + 24 * HOUR)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is not None:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        builder = builder.add_extension(aki, False)
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca, path_length), critical=True)
    if usage is DEFAULT:
        usage = key_usage(cert_sign=True) if ca else key_usage(sign=True, encipher=tls_server)
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if tls_server:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False
        ).add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{cn}.example")]), False)
    digest = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return Cert(builder.sign(signer, digest), key)


def claims(
    *, issuer: str = "trustyard", service: str = "trustyard", subject: str = "mallory"
) -> dict[str, Any]:
    """What a forger asks for: the catalog and push everywhere it names."""
    now = int(time.time())
    return {
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "exp": now + 300,
        "nbf": now - 1,
        "iat": now,
        "jti": f"forged-{now}",
        "access": [
            {"type": "registry", "name": "catalog", "actions": ["*"]},
            {"type": "repository", "name": "alice/app", "actions": ["pull", "push"]},
        ],
    }


def token_with_chain(signer: Cert, chain: list[Cert], *, alg: str = "ES256", **header: Any) -> str:
    """A token signed by `signer`'s key with x5c = `chain` (leaf first) and extra headers."""
    return jwt.encode(
        claims(), signer.key, algorithm=alg, headers={"x5c": [c.der_b64 for c in chain], **header}
    )
