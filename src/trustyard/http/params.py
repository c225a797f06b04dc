"""Query parameters, parsed once per request.

A parameter a handler reads as one value must appear at most once: `?from=a&from=b` is refused
(400) rather than read as `a` by one piece of code and `b` by another (the access check approved
the first `from` while the mount used the last). The upload start's parameters are parsed here
for the access check, which stores what it approved in the ASGI scope (`APPROVED_UPLOAD`); the
handler acts only on that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from starlette.types import Scope

from trustyard.oci.errors import ErrorCode, RegistryError

# The ASGI scope key under which the access check leaves the approved `UploadStart`.
APPROVED_UPLOAD = "trustyard.upload_start"
# A mount without `from` tries at most this many readable repositories (a token holds <= 64).
MAX_MOUNT_SOURCES = 64


def query_values(scope: Scope) -> dict[str, list[str]]:
    """Every value of every parameter, in order (blank values kept)."""
    raw = scope.get("query_string", b"")
    text = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    out: dict[str, list[str]] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        out.setdefault(key, []).append(value)
    return out


def single_values(scope: Scope, names: Iterable[str]) -> dict[str, str | None]:
    """`names` → their one value (None when absent); RegistryError 400 when one is repeated."""
    values = query_values(scope)
    out: dict[str, str | None] = {}
    for name in names:
        found = values.get(name, [])
        if len(found) > 1:
            raise RepeatedParameter(name, len(found))
        if found and "\x00" in found[0]:
            raise NulInParameter(name)
        out[name] = found[0] if found else None
    return out


class NulInParameter(RegistryError):
    """A query value with a NUL character: no name, tag or digest has one, and PostgreSQL
    refuses it in any text (it would be a 500 there, and "nothing" on SQLite)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            ErrorCode.PARAMETER_INVALID,
            f"query parameter {name!r} contains a NUL character",
            detail={"parameter": name},
        )


class RepeatedParameter(RegistryError):
    """A single-valued query parameter given more than once."""

    def __init__(self, name: str, count: int) -> None:
        super().__init__(
            ErrorCode.PARAMETER_INVALID,
            f"query parameter {name!r} is given {count} times; give it at most once",
            detail={"parameter": name},
        )
        self.name = name


@dataclass(frozen=True, slots=True)
class UploadStart:
    """`POST /v2/<name>/blobs/uploads/` as approved by the access check.

    `sources`: the repositories the mount may link `mount` from, in order; None means any
    repository (no access control, or every authenticated user may read everything); empty
    means no mount (a plain upload starts instead).
    """

    mount: str | None
    source: str | None
    digest: str | None
    sources: tuple[str, ...] | None = ()


def parse_upload_start(scope: Scope) -> UploadStart:
    """The raw parameters (sources not yet approved: no mount is attempted with them)."""
    v = single_values(scope, ("mount", "from", "digest"))
    return UploadStart(v["mount"] or None, v["from"] or None, v["digest"] or None, ())
