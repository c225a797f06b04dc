"""Where signatures live in a manifest: ir-sign's three annotations plus trustyard's extras.

ir-sign reads exactly one signature, from three manifest annotations holding lowercase hex of DER
bytes. Further signatures (a second vendor, QA, …) use the same three values under
`dev.trustyard.image.sig.<keyid>.{signature,vendorpub,vendorpub.signature}`, which ir-sign
ignores; <keyid> is the first 16 hex digits of sha256 over the vendor SPKI DER. Every signature
covers only the config blob, so each one stays valid when another is added and the manifest is
rehashed.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass

from trustyard.crypto.ecdsa import key_id
from trustyard.signing.errors import SignatureFormatError

SIGNATURE = "com.samsung.islet.image.signature"
VENDORPUB = "com.samsung.islet.image.vendorpub"
VENDORPUB_SIGNATURE = "com.samsung.islet.image.vendorpub.signature"
EXTRA_PREFIX = "dev.trustyard.image.sig."
_SUFFIXES = ("signature", "vendorpub", "vendorpub.signature")


@dataclass(frozen=True)
class VendorSignature:
    """One signature over a config blob, with the vendor key and the root CA's endorsement."""

    config_signature: bytes
    vendor_pub: bytes
    vendor_pub_signature: bytes

    @property
    def key_id(self) -> str:
        return key_id(self.vendor_pub)


@dataclass(frozen=True)
class Slot:
    """Where a signature was found: 'ir-sign' (the primary triple) or 'extra <keyid>'."""

    label: str
    keys: tuple[str, str, str]  # annotation names of signature, vendorpub, vendorpub.signature


PRIMARY = Slot("ir-sign", (SIGNATURE, VENDORPUB, VENDORPUB_SIGNATURE))


def extra_slot(kid: str) -> Slot:
    return Slot(f"extra {kid}", tuple(f"{EXTRA_PREFIX}{kid}.{s}" for s in _SUFFIXES))  # type: ignore[arg-type]


def _unhex(annotations: Mapping[str, str], key: str) -> bytes:
    value = annotations[key]
    try:
        return binascii.unhexlify(value.strip())
    except (binascii.Error, ValueError, AttributeError):
        raise SignatureFormatError(f"annotation {key} is not hex-encoded DER") from None


def read_slot(annotations: Mapping[str, str], slot: Slot) -> VendorSignature:
    """Decode one slot; a missing or broken annotation is a `SignatureFormatError`."""
    missing = [k for k in slot.keys if k not in annotations]
    if missing:
        raise SignatureFormatError(f"manifest lacks annotation {missing[0]}")
    sig, pub, pubsig = (_unhex(annotations, k) for k in slot.keys)
    return VendorSignature(sig, pub, pubsig)


def slots(annotations: Mapping[str, str]) -> list[Slot]:
    """All signature slots present (partially or fully), the ir-sign one first."""
    found = [PRIMARY] if any(k in annotations for k in PRIMARY.keys) else []
    extra = [k[len(EXTRA_PREFIX) :] for k in annotations if k.startswith(EXTRA_PREFIX)]
    kids = sorted({k.partition(".")[0] for k in extra})
    return found + [extra_slot(kid) for kid in kids]


def add_signature(
    annotations: Mapping[str, str], sig: VendorSignature, *, additional: bool
) -> dict[str, str]:
    """New annotations carrying `sig`.

    Not `additional`: `sig` takes the ir-sign slot (as ir-sign does, replacing what was there).
    `additional`: keep the ir-sign slot and add `sig` as an extra, unless the ir-sign slot is
    empty or already holds this vendor key, in which case `sig` goes there. Either way a vendor
    key appears in one slot only.
    """
    out = dict(annotations)
    primary_kid = None
    if VENDORPUB in out:
        try:
            primary_kid = key_id(_unhex(out, VENDORPUB))
        except SignatureFormatError:
            primary_kid = None
    to_primary = not additional or primary_kid in (None, sig.key_id)
    for key in extra_slot(sig.key_id).keys:
        out.pop(key, None)
    slot = PRIMARY if to_primary else extra_slot(sig.key_id)
    values = (sig.config_signature, sig.vendor_pub, sig.vendor_pub_signature)
    for key, value in zip(slot.keys, values, strict=True):
        out[key] = value.hex()
    return out
