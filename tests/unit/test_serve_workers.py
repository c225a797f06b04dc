"""`trustyard serve` with several workers: what the workers inherit when Granian forks them."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest

from trustyard.cli import serve
from trustyard.config import Settings


def test_imported_objects_are_frozen_before_the_workers_fork(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's full garbage collection would otherwise write to every object inherited from
    `serve`, copying each shared page into each worker (docs/benchmarks.md, second round)."""
    seen: dict[str, Any] = {}

    def granian_run(spec: dict[str, Any]) -> None:
        seen["frozen"] = gc.get_freeze_count()
        seen["workers"] = spec["granian"]["workers"]

    monkeypatch.setattr(serve, "run", granian_run)
    try:
        serve._run_granian(Settings(data_dir=tmp_path, workers=2), None)
    finally:
        gc.unfreeze()
    assert seen["workers"] == 2
    assert seen["frozen"] > 10_000  # the application's modules, not a handful of objects
