"""The client's authority roots: a directory of PEM files, some of them disabled.

`DIR/NAME.pem` is an enabled root; `DIR/NAME.pem.disabled` is the same root switched off (kept so
it can be switched on again, and so statements under it are refused by name, "chain ends at root
NAME.pem, which is disabled", rather than as unknown). Disabling and enabling are renames, so
any file manager or `mv` does the same as `trustyard authority roots disable|enable`. A file may
hold several certificates; each is a root named `NAME.pem#2`, `#3`, … after the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from trustyard.authority.statements import Root

DISABLED_SUFFIX = ".disabled"


class RootsError(ValueError):
    """A roots directory or file we cannot use; the message names it."""


def _read(path: Path, name: str, enabled: bool) -> list[Root]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RootsError(f"cannot read root {path}: {exc.strerror or exc}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise RootsError(f"root {path} holds no PEM certificate") from None
    return [
        Root(name if i == 0 else f"{name}#{i + 1}", cert, enabled) for i, cert in enumerate(certs)
    ]


def load_roots(directory: Path) -> list[Root]:
    """Every root in the directory, enabled (`*.pem`) and disabled (`*.pem.disabled`)."""
    if not directory.is_dir():
        raise RootsError(f"authority roots directory {directory} does not exist")
    roots: list[Root] = []
    for path in sorted(directory.iterdir()):
        if path.name.endswith(".pem"):
            roots += _read(path, path.name, True)
        elif path.name.endswith(".pem" + DISABLED_SUFFIX):
            roots += _read(path, path.name.removesuffix(DISABLED_SUFFIX), False)
    return roots


def load_root_files(paths: Sequence[Path]) -> list[Root]:
    """Roots named one by one (a policy's `roots = [...]`): all enabled."""
    return [root for path in paths for root in _read(path, path.name, True)]


def _pem_name(name: str) -> str:
    base = Path(name).name.removesuffix(DISABLED_SUFFIX)
    if not base or base in (".pem", "..pem"):
        raise RootsError(f"{name!r} is not a root name")
    return base if base.endswith(".pem") else base + ".pem"


def add_root(directory: Path, source: Path, name: str | None = None) -> Path:
    """Copy a PEM root into the directory (enabled); refuses to overwrite an existing root."""
    _read(source, source.name, True)
    target = directory / _pem_name(name or source.name)
    if target.exists() or target.with_name(target.name + DISABLED_SUFFIX).exists():
        raise RootsError(f"a root named {target.name} already exists in {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())
    return target


def set_enabled(directory: Path, name: str, enabled: bool) -> Path:
    """Enable or disable a root by renaming its file; a no-op when it already is."""
    pem = directory / _pem_name(name)
    disabled = pem.with_name(pem.name + DISABLED_SUFFIX)
    source, target = (disabled, pem) if enabled else (pem, disabled)
    if target.exists():
        return target
    if not source.exists():
        raise RootsError(f"no root named {pem.name} in {directory}")
    source.rename(target)
    return target


def remove_root(directory: Path, name: str) -> Path:
    """Delete a root, enabled or disabled."""
    pem = directory / _pem_name(name)
    for path in (pem, pem.with_name(pem.name + DISABLED_SUFFIX)):
        if path.exists():
            path.unlink()
            return path
    raise RootsError(f"no root named {pem.name} in {directory}")
