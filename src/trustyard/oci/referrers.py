"""The referrers response: an OCI index of descriptors whose manifest names a subject."""

from __future__ import annotations

import json
from typing import Any

from trustyard.oci import mediatypes as mt
from trustyard.oci.manifest import Descriptor


def tag_schema_tag(algorithm: str, hex_digest: str) -> str:
    """The fallback tag `<alg>-<hex>` clients use when a registry lacks the referrers API."""
    return f"{algorithm}-{hex_digest}"[:128]


def referrers_index(descriptors: list[Descriptor]) -> bytes:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [d.to_json() for d in descriptors],
    }
    return json.dumps(body, separators=(",", ":")).encode()
