"""Just enough OpenPGP (RFC 4880) to look inside a containers "simple signing" signature.

A simple signature is what `gpg --sign` makes: a binary OpenPGP message, usually one compressed
data packet holding a one-pass signature, the literal data (the JSON payload) and the signature.
This module parses that structure without any cryptography, to answer: is this an OpenPGP signed
message at all, what payload does it carry, and which key ID / fingerprint does it claim? The
cryptographic check is left to gpg (simplesign.verify_with_gpg). Decompression is bounded, so a
small upload cannot expand into gigabytes.
"""

from __future__ import annotations

import bz2
import zlib
from dataclasses import dataclass, field

from trustyard.signing.errors import SignatureFormatError

TAG_SIGNATURE = 2
TAG_ONE_PASS = 4
TAG_COMPRESSED = 8
TAG_LITERAL = 11
TAG_MARKER = 10
_MAX_DEPTH = 4


@dataclass
class SignedMessage:
    """What a signed message claims (nothing here is verified)."""

    literal: bytes = b""
    key_ids: list[str] = field(default_factory=list)  # 16 upper-case hex digits
    fingerprints: list[str] = field(default_factory=list)  # 40 upper-case hex digits
    literals: int = 0
    signatures: int = 0


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    """Split a packet sequence into (tag, body); partial body lengths are joined."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        pos += 1
        if not first & 0x80:
            raise SignatureFormatError(
                f"not an OpenPGP message: byte {pos - 1} is 0x{first:02x}, not a packet header "
                "(simple signatures are binary `gpg --sign` output, not armored or clear-signed)"
            )
        if first & 0x40:  # new format
            tag = first & 0x3F
            body = bytearray()
            while True:
                if pos >= len(data):
                    raise SignatureFormatError("truncated OpenPGP packet header")
                o1 = data[pos]
                if o1 < 192:
                    length, pos, partial = o1, pos + 1, False
                elif o1 < 224:
                    if pos + 1 >= len(data):
                        raise SignatureFormatError("truncated OpenPGP packet header")
                    length, pos, partial = ((o1 - 192) << 8) + data[pos + 1] + 192, pos + 2, False
                elif o1 == 255:
                    if pos + 5 > len(data):
                        raise SignatureFormatError("truncated OpenPGP packet header")
                    length, pos, partial = (
                        int.from_bytes(data[pos + 1 : pos + 5], "big"),
                        pos + 5,
                        False,
                    )
                else:
                    length, pos, partial = 1 << (o1 & 0x1F), pos + 1, True
                if pos + length > len(data):
                    raise SignatureFormatError("truncated OpenPGP packet")
                body += data[pos : pos + length]
                pos += length
                if not partial:
                    break
            out.append((tag, bytes(body)))
            continue
        tag = (first >> 2) & 0x0F
        kind = first & 0x03
        if kind == 3:
            length = len(data) - pos
        else:
            width = (1, 2, 4)[kind]
            if pos + width > len(data):
                raise SignatureFormatError("truncated OpenPGP packet header")
            length = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        if pos + length > len(data):
            raise SignatureFormatError("truncated OpenPGP packet")
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


def _decompress(body: bytes, limit: int) -> bytes:
    if not body:
        raise SignatureFormatError("empty OpenPGP compressed data packet")
    algorithm, payload = body[0], body[1:]
    try:
        if algorithm == 0:
            out = payload
        elif algorithm in (1, 2):
            d = zlib.decompressobj(-15 if algorithm == 1 else 15)
            out = d.decompress(payload, limit + 1)
        elif algorithm == 3:
            b = bz2.BZ2Decompressor()
            out = b.decompress(payload, limit + 1)
        else:
            raise SignatureFormatError(f"unknown OpenPGP compression algorithm {algorithm}")
    except (zlib.error, OSError, EOFError) as exc:
        raise SignatureFormatError(f"corrupt OpenPGP compressed data: {exc}") from None
    if len(out) > limit:
        raise SignatureFormatError(f"OpenPGP message expands to more than {limit} bytes")
    return out


def _signature_issuers(body: bytes, message: SignedMessage) -> None:
    if not body:
        raise SignatureFormatError("empty OpenPGP signature packet")
    version = body[0]
    if version == 3:
        if len(body) < 15:
            raise SignatureFormatError("truncated OpenPGP v3 signature packet")
        message.key_ids.append(body[7:15].hex().upper())
        return
    if version not in (4, 5) or len(body) < 6:
        raise SignatureFormatError(f"unsupported OpenPGP signature packet version {version}")
    pos = 4
    for _ in range(2):  # hashed, then unhashed subpackets
        if pos + 2 > len(body):
            raise SignatureFormatError("truncated OpenPGP signature subpackets")
        size = int.from_bytes(body[pos : pos + 2], "big")
        area, pos = body[pos + 2 : pos + 2 + size], pos + 2 + size
        i = 0
        while i < len(area):
            o1 = area[i]
            if o1 < 192:
                length, i = o1, i + 1
            elif o1 < 255:
                if i + 1 >= len(area):
                    break
                length, i = ((o1 - 192) << 8) + area[i + 1] + 192, i + 2
            else:
                length, i = int.from_bytes(area[i + 1 : i + 5], "big"), i + 5
            sub = area[i : i + length]
            i += length
            if not sub:
                continue
            kind, value = sub[0] & 0x7F, sub[1:]
            if kind == 16 and len(value) == 8:
                key_id = value.hex().upper()
                if key_id not in message.key_ids:
                    message.key_ids.append(key_id)
            elif kind == 33 and len(value) >= 21:
                fpr = value[1:].hex().upper()
                if fpr not in message.fingerprints:
                    message.fingerprints.append(fpr)


def _walk(data: bytes, message: SignedMessage, limit: int, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise SignatureFormatError("OpenPGP message nests compressed packets too deeply")
    for tag, body in _packets(data):
        if tag == TAG_COMPRESSED:
            _walk(_decompress(body, limit), message, limit, depth + 1)
        elif tag == TAG_LITERAL:
            if len(body) < 6:
                raise SignatureFormatError("truncated OpenPGP literal data packet")
            name_len = body[1]
            message.literal = body[2 + name_len + 4 :]
            message.literals += 1
        elif tag == TAG_SIGNATURE:
            _signature_issuers(body, message)
            message.signatures += 1
        elif tag == TAG_ONE_PASS:
            if len(body) >= 13:
                key_id = body[4:12].hex().upper()
                if key_id not in message.key_ids:
                    message.key_ids.append(key_id)
        elif tag == TAG_MARKER:
            continue
        else:
            raise SignatureFormatError(
                f"OpenPGP packet type {tag} has no place in a signed message "
                "(expected compressed data, one-pass signature, literal data, signature)"
            )


def parse_signed_message(data: bytes, limit: int = 1 << 20) -> SignedMessage:
    """Parse a binary OpenPGP signed message; exactly one literal and at least one signature."""
    if not data:
        raise SignatureFormatError("empty signature: not an OpenPGP message")
    message = SignedMessage()
    _walk(data, message, limit, 0)
    if message.literals != 1:
        raise SignatureFormatError(
            f"an OpenPGP signed message carries exactly one literal data packet, "
            f"this one has {message.literals}"
        )
    if message.signatures < 1:
        raise SignatureFormatError("OpenPGP message carries no signature packet")
    return message
