"""Fixtures for the signing toolkit: openssl-made keys, umoci-built layouts, a registry dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .helpers import Keys, Unchanged, openssl_keypair, openssl_sign, tree_hash, umoci_image
from .hsm import Token, make_token


@pytest.fixture(scope="session")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    d = tmp_path_factory.mktemp("keys")
    for name in ("root", "vendor", "qa", "qaroot", "otherroot"):
        openssl_keypair(d, name)
    openssl_sign(d / "root.prv", d / "vendor.pub", d / "vendor.pub.sig")
    openssl_sign(d / "qaroot.prv", d / "qa.pub", d / "qa.pub.sig")
    openssl_sign(d / "otherroot.prv", d / "vendor.pub", d / "vendor.pub.othersig")
    return Keys(d)


@pytest.fixture(scope="session")
def base_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A layout with two images, tags 1.0 and 2.0 (built once, copied per test)."""
    tmp = tmp_path_factory.mktemp("base")
    layout = tmp / "layout"
    umoci_image(layout, "1.0", "one", tmp)
    umoci_image(layout, "2.0", "two", tmp)
    return layout


@pytest.fixture
def registry(tmp_path: Path, base_layout: Path) -> Path:
    """REGISTRY_DIR with app `app` (a copy of base_layout)."""
    reg = tmp_path / "registry"
    reg.mkdir()
    shutil.copytree(base_layout, reg / "app")
    return reg


@pytest.fixture
def unchanged(registry: Path) -> Unchanged:
    """Call at the end of a failure test: asserts REGISTRY_DIR is exactly as at fixture time."""
    before = tree_hash(registry)

    def check() -> None:
        assert tree_hash(registry) == before, "REGISTRY_DIR changed"

    return check


@pytest.fixture(scope="session")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Token:
    """A SoftHSM2 token with P-384 keys 'vendor' and 'root' and a P-256 key 'p256'."""
    return make_token(tmp_path_factory.mktemp("softhsm"))
