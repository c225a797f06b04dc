"""Issue 18: `trustyard.wiring` is the only module outside the backend packages that names a
concrete backend, and the CLI reaches the server's objects through it, never through `http`."""

from __future__ import annotations

import ast
from pathlib import Path

import trustyard

SRC = Path(trustyard.__file__).parent
BACKENDS = (
    "trustyard.metadata.sql",
    "trustyard.metadata.sqlite",
    "trustyard.metadata.postgres",
    "trustyard.metadata.auth_sql",
    "trustyard.metadata.trust_sql",
    "trustyard.metadata.signatures_sql",
    "trustyard.metadata.migrate",
    "trustyard.metadata.copy",
    "trustyard.storage.filesystem",
    "trustyard.storage.s3",
    "trustyard.cache.memory",
    "trustyard.cache.redis",
    "trustyard.cache.generations",
)
BACKEND_PACKAGES = ("metadata", "storage", "cache")
ALLOWED: set[tuple[str, str]] = set()


def _module(path: Path) -> str:
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _named(imports: set[str], prefix: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for name in imports)


def test_only_wiring_names_concrete_backends() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("wiring/", *(f"{p}/" for p in BACKEND_PACKAGES))):
            continue
        imports = _imports(path)
        found += [(rel, b) for b in BACKENDS if _named(imports, b) and (rel, b) not in ALLOWED]
    assert found == []


def test_package_inits_export_only_ports() -> None:
    for package in BACKEND_PACKAGES:
        imports = _imports(SRC / package / "__init__.py")
        assert not [b for b in BACKENDS if _named(imports, b)], package


def test_the_cli_reaches_http_only_to_serve() -> None:
    users = [
        path.name
        for path in sorted((SRC / "cli").glob("*.py"))
        if _named(_imports(path), "trustyard.http")
    ]
    assert users == ["serve.py"]
