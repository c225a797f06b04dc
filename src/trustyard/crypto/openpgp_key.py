"""The v4 fingerprint of an OpenPGP public key (RFC 4880 §12.2), from armored or binary bytes.

Hand-written because no dependency of ours parses OpenPGP keys (gpg is a subprocess, and the
authority's statement checks are meant to run without it): we only unarmor, find the first
packet and hash it, with no signature verification. A v4 fingerprint is SHA-1 over 0x99, the
two-byte body length and the public-key packet body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

ARMOR_BEGIN = b"-----BEGIN PGP PUBLIC KEY BLOCK-----"
_TAG_PUBLIC_KEY = 6


class OpenPgpKeyError(ValueError):
    """Not an OpenPGP v4 public key; the message says what was found."""


def unarmor(data: bytes) -> bytes:
    """The binary packets of an ASCII-armored public key block (binary input is returned as is)."""
    start = data.find(ARMOR_BEGIN)
    if start < 0:
        return data
    lines = data[start + len(ARMOR_BEGIN) :].splitlines()
    body: list[bytes] = []
    in_headers = True
    for raw in lines:
        line = raw.strip()
        if line.startswith(b"-----END"):
            break
        if in_headers:
            if not line:
                in_headers = False
            elif b":" not in line:  # no armor headers at all: this is already data
                in_headers = False
                body.append(line)
            continue
        if line.startswith(b"="):  # CRC-24 line
            break
        body.append(line)
    try:
        return base64.b64decode(b"".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise OpenPgpKeyError("the armored OpenPGP key is not valid base64") from None


def _first_packet(data: bytes) -> tuple[int, bytes]:
    if not data or not data[0] & 0x80:
        raise OpenPgpKeyError("not an OpenPGP public key (no packet header)")
    first = data[0]
    if first & 0x40:  # new format
        tag = first & 0x3F
        if len(data) < 2:
            raise OpenPgpKeyError("truncated OpenPGP packet")
        o1 = data[1]
        if o1 < 192:
            length, pos = o1, 2
        elif o1 < 224 and len(data) >= 3:
            length, pos = ((o1 - 192) << 8) + data[2] + 192, 3
        elif o1 == 255 and len(data) >= 6:
            length, pos = int.from_bytes(data[2:6], "big"), 6
        else:
            raise OpenPgpKeyError("unsupported OpenPGP packet length for a public key")
    else:
        tag = (first >> 2) & 0x0F
        size = {0: 1, 1: 2, 2: 4}.get(first & 0x03)
        if size is None or len(data) < 1 + size:
            raise OpenPgpKeyError("unsupported OpenPGP packet length for a public key")
        length, pos = int.from_bytes(data[1 : 1 + size], "big"), 1 + size
    body = data[pos : pos + length]
    if len(body) != length:
        raise OpenPgpKeyError("truncated OpenPGP packet")
    return tag, body


def fingerprint(data: bytes) -> str:
    """The primary key's v4 fingerprint, 40 upper-case hex digits."""
    tag, body = _first_packet(unarmor(data))
    if tag != _TAG_PUBLIC_KEY:
        raise OpenPgpKeyError(
            f"the first OpenPGP packet has tag {tag}, not a public key (6); export the key with "
            "`gpg --export --armor KEY`"
        )
    if not body or body[0] != 4:
        version = body[0] if body else "?"
        raise OpenPgpKeyError(f"OpenPGP key version {version}; only v4 keys are supported")
    if len(body) > 0xFFFF:
        raise OpenPgpKeyError("OpenPGP public key packet too large")
    framed = b"\x99" + len(body).to_bytes(2, "big") + body
    return hashlib.sha1(framed, usedforsecurity=False).hexdigest().upper()


def is_openpgp(data: bytes) -> bool:
    """Whether the bytes look like an OpenPGP key (armored, or a binary public-key packet)."""
    if ARMOR_BEGIN in data:
        return True
    return bool(data) and data[0] in (0x99, 0xC6, 0x98)
