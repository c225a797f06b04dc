"""Repository-name and tag grammar from the distribution spec.

Validation happens before any I/O; repository names are never turned into file paths, but the
grammar also rules out `..`, absolute paths and empty components.
"""

from __future__ import annotations

import re

from trustyard.oci.errors import ErrorCode, RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
# \Z, not $: `$` also matches before a trailing newline ("app\n" was a valid name).
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*\Z")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
# Distribution's limit; hosts and clients assume names fit in 255 bytes.
MAX_NAME_LENGTH = 255


def validate_name(name: str) -> str:
    """Return `name` when it is a valid repository name, else raise NAME_INVALID."""
    if len(name) > MAX_NAME_LENGTH:
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            f"repository name is {len(name)} characters long; the limit is {MAX_NAME_LENGTH}",
        )
    if not NAME_RE.match(name):
        raise RegistryError(
            ErrorCode.NAME_INVALID,
            f"invalid repository name {name[:100]!r}: use lowercase path components of "
            "[a-z0-9] separated by '.', '_', '__' or '-', joined by '/'",
            detail={"name": name[:MAX_NAME_LENGTH]},
        )
    return name


def is_valid_tag(tag: str) -> bool:
    return TAG_RE.match(tag) is not None


def validate_tag(tag: str) -> str:
    if not is_valid_tag(tag):
        raise RegistryError(
            ErrorCode.MANIFEST_INVALID,
            f"invalid tag {tag[:150]!r}: tags are 1-128 characters of [a-zA-Z0-9_.-], "
            "not starting with '.' or '-'",
        )
    return tag
