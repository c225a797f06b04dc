"""JSON from the network, parsed with a bound on size and nesting depth.

`json.loads` recurses once per nesting level: a document nested 20,000 deep raises
`RecursionError` (a 500, a traceback) and a nested object that did parse can still blow the
stack of the code that walks it afterwards. So the bytes are pre-scanned first (escapes and
strings dropped, brackets counted, all at C speed) and only a document within the bound reaches
`json.loads`. Pure: stdlib only, importable from every layer.
"""

from __future__ import annotations

import json
from itertools import accumulate
from typing import Any

MAX_DEPTH = 64
"""Deep enough for every format we read (manifests, TUF, JWTs, signatures nest < 10 levels)."""

_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _open in b"[{":
    _STEP[_open] = 1
for _close in b"]}":
    _STEP[_close] = -1


class JSONBoundsError(ValueError):
    """The document is not JSON within the bounds; `str()` is a message for a person."""


class JSONTooDeep(JSONBoundsError):
    pass


class JSONTooLarge(JSONBoundsError):
    pass


class JSONInvalid(JSONBoundsError):
    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what} is not valid JSON: {reason}")
        self.reason = reason


def depth(data: bytes | str) -> int:
    """Deepest bracket nesting outside strings; never recurses, linear in `len(data)`.

    Escapes go first (in JSON a backslash only occurs inside strings), then whole strings, so a
    `[` inside a string never counts. Unbalanced or invalid input gives a depth all the same
    (an upper bound of what `json.loads` would recurse into).
    """
    if isinstance(data, str):
        raw = data.encode("utf-8", "surrogatepass")
    else:
        raw = bytes(data)
        encoding = json.detect_encoding(raw)
        if not encoding.startswith("utf-8"):  # UTF-16/32: bytes of a character may look like `"`
            raw = raw.decode(encoding, "replace").encode("utf-8")
    if b"\\" in raw:  # pairs left to right, as JSON reads them: `\\` first, then `\"`
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    if b'"' in raw:  # outside strings are the even pieces between quotes
        raw = b"".join(raw.split(b'"')[::2])
    brackets = raw.translate(None, _NOT_BRACKET)
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets)), default=0))


def check(
    data: bytes | str, *, what: str, max_depth: int = MAX_DEPTH, max_bytes: int | None = None
) -> None:
    """Raise `JSONTooLarge`/`JSONTooDeep` unless `data` is within the bounds."""
    if max_bytes is not None and len(data) > max_bytes:
        raise JSONTooLarge(f"{what} is {len(data)} bytes; the limit is {max_bytes} bytes")
    found = depth(data)
    if found > max_depth:
        raise JSONTooDeep(f"{what} is nested {found} levels deep; the limit is {max_depth} levels")


def loads(
    data: bytes | str, *, what: str, max_depth: int = MAX_DEPTH, max_bytes: int | None = None
) -> Any:
    """`json.loads` after `check`; every failure is a `JSONBoundsError` naming `what`."""
    check(data, what=what, max_depth=max_depth, max_bytes=max_bytes)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise JSONInvalid(what, str(exc)) from None
