"""The import-linter contracts in pyproject.toml hold, cover every module, and can fail.

A layers contract that misses a module, or that nothing could break, says nothing: so every module
must sit in exactly one row, and each kind of leak the architecture forbids (a use case naming a
backend, the oci core importing ours, the trust server importing the trust client, the CLI building
the HTTP app, settings read inside a use case, a port importing its backend, a backend
importing a use case) is planted in a copy of
the tree to show the contracts turn red on it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "trustyard"


def _lint_imports() -> str:
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.exists() else shutil.which("lint-imports")
    assert found, "import-linter's lint-imports is not installed (make venv-test)"
    return found


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _layer_entries() -> list[str]:
    entries: list[str] = []
    for contract in _contracts():
        if contract["type"] != "layers":
            continue
        for row in contract["layers"]:  # type: ignore[attr-defined]
            entries += [name.strip() for name in re.split(r"[|:]", row) if name.strip()]
    return entries


def _modules() -> dict[str, Path]:
    """Every importable module of the package (folders without __init__.py are not packages)."""
    found: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if any(
            not (PACKAGE.parent.joinpath(*parts[:i]) / "__init__.py").exists()
            for i in range(1, len(parts))
        ):
            continue  # e.g. metadata/migrations (Alembic's scripts, loaded by path)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports_ours(path: Path) -> bool:
    return bool(re.search(r"^\s*(from|import)\s+trustyard\b", path.read_text(), re.M))


def test_every_module_sits_in_exactly_one_row() -> None:
    entries = _layer_entries()
    unplaced, doubly = [], []
    for name, path in _modules().items():
        covering = [e for e in entries if name == e or name.startswith(e + ".")]
        if len(covering) > 1:
            doubly.append(f"{name}: {covering}")
        elif not covering and (path.name != "__init__.py" or _imports_ours(path)):
            # A package whose modules sit in different rows may keep an __init__ that imports
            # nothing of ours (a docstring); anything else must be placed.
            unplaced.append(name)
    assert not unplaced, f"modules in no layer of pyproject.toml: {unplaced}"
    assert not doubly, f"modules in two layers: {doubly}"


def test_the_contracts_hold() -> None:
    run = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


WRONG_IMPORTS = {
    "use case names a backend": ("registry/service.py", "trustyard.metadata.sql"),
    "use case reaches a backend through a package": ("auth/access.py", "trustyard.cache.redis"),
    "oci core imports ours": ("oci/digest.py", "trustyard.crypto.errors"),
    "trust server imports trust client": (
        "trust/server/service.py",
        "trustyard.trust.client.verify",
    ),
    "CLI builds the HTTP app": ("cli/gc.py", "trustyard.http.app"),
    "handler names a backend": ("http/v2.py", "trustyard.metadata.sql"),
    "use case reads settings": ("registry/uploads.py", "trustyard.config"),
    "port imports its backend": ("storage/base.py", "trustyard.storage.filesystem"),
    "crypto imports the signing toolkit": ("crypto/ecdsa.py", "trustyard.signing.layout"),
    "backend imports a use case": ("metadata/sql.py", "trustyard.registry.service"),
}


@pytest.mark.parametrize("case", sorted(WRONG_IMPORTS))
def test_a_wrong_import_turns_the_contracts_red(tmp_path: Path, case: str) -> None:
    where, target = WRONG_IMPORTS[case]
    shutil.copytree(
        PACKAGE, tmp_path / "src" / "trustyard", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    planted = tmp_path / "src" / "trustyard" / where
    planted.write_text(planted.read_text() + f"\nimport {target}  # planted by the test\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    run = subprocess.run(
        [_lint_imports(), "--no-cache"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert "BROKEN" in run.stdout
    # The report names the planted import, so it was the copy that was analysed.
    module = "trustyard." + where.removesuffix(".py").replace("/", ".")
    assert f"{module} -> {target}" in run.stdout, run.stdout[-3000:]
