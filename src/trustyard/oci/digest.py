"""Content digests: `algorithm:hex`, validated by the spec's grammar before any I/O."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from trustyard.oci.errors import ErrorCode, RegistryError

# Algorithms we can compute, with the exact hex length the spec registers for each.
_HEX_LENGTH = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)\Z")


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated digest. `hex` is lowercase and safe to use as a file name."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate; raises DIGEST_INVALID with the reason."""
        m = _DIGEST_RE.match(text or "")
        if m is None:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID, f"invalid digest {text[:200]!r}: expected algorithm:hex"
            )
        algorithm, hexpart = m.group(1), m.group(2)
        length = _HEX_LENGTH.get(algorithm)
        if length is None:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"unsupported digest algorithm {algorithm[:50]!r}: use sha256 or sha512",
            )
        if len(hexpart) != length or not re.fullmatch(r"[a-f0-9]+", hexpart):
            raise RegistryError(
                ErrorCode.DIGEST_INVALID,
                f"invalid {algorithm} digest: expected {length} lowercase hex characters",
            )
        return cls(algorithm, hexpart)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    @staticmethod
    def is_digest(text: str) -> bool:
        """True when `text` looks like a digest reference (has a colon), valid or not."""
        return ":" in text


class Digester:
    """Incremental hasher fed while a blob streams through."""

    __slots__ = ("_hash", "algorithm", "size")

    def __init__(self, algorithm: str = "sha256") -> None:
        if algorithm not in _HEX_LENGTH:
            raise RegistryError(
                ErrorCode.DIGEST_INVALID, f"unsupported digest algorithm {algorithm!r}"
            )
        self.algorithm = algorithm
        self._hash = hashlib.new(algorithm)
        self.size = 0

    def update(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)

    def digest(self) -> Digest:
        return Digest(self.algorithm, self._hash.hexdigest())

    def copy(self) -> Digester:
        """A snapshot of the state, to roll back to when a chunk fails midway."""
        clone = Digester(self.algorithm)
        clone._hash = self._hash.copy()
        clone.size = self.size
        return clone


SUPPORTED_ALGORITHMS = tuple(_HEX_LENGTH)
