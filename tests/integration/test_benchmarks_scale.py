"""The scale family (benchmarks/scale.py) at toy sizes: every row gets a real figure.

The family is left out of `--quick` (minutes at its real sizes), so the quick smoke test does
not run it; this runs the same code with small counts, against real `trustyard serve` processes.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from benchmarks import scale
from benchmarks.context import FULL, Context
from benchmarks.runner import FAMILIES, FULL_ONLY
from benchmarks.stats import Results


def test_scale_is_a_full_mode_family() -> None:
    assert "scale" in FAMILIES and "scale" in FULL_ONLY


def test_scale_family_at_toy_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scale, "GC_SIZES", (200,))
    monkeypatch.setattr(scale, "BLOB_SIZES", (0, 500))
    monkeypatch.setattr(scale, "TAG_SIZES", (1_000,))
    monkeypatch.setattr(scale, "SAMPLES", 3)
    results = Results()
    scale.run(Context(dataclasses.replace(FULL, repeats=1), tmp_path, {}, results))
    rows = results.as_json()["workloads"]
    keys = {w["workload"] for w in rows}
    assert keys == {
        "scale_gc_200",
        "scale_start_0",
        "scale_start_500",
        "scale_tags_first_page_1000",
        "scale_tags_middle_page_1000",
    }
    for w in rows:
        median = w["servers"]["trustyard"]["median"]
        assert math.isfinite(median) and median > 0, w["workload"]
    pages = {w["workload"]: w["servers"]["trustyard"] for w in rows if "tags" in w["workload"]}
    assert pages["scale_tags_first_page_1000"]["items"] == 100  # a full page of the seeded tags
    assert pages["scale_tags_middle_page_1000"]["items"] == 100


def test_million_adds_one_size_to_every_scale_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--million` (here a toy 1,200 for the million) adds the size to GC, start and tags."""
    monkeypatch.setattr(scale, "GC_SIZES", (200,))
    monkeypatch.setattr(scale, "BLOB_SIZES", (0,))
    monkeypatch.setattr(scale, "TAG_SIZES", (1_000,))
    monkeypatch.setattr(scale, "MILLION", 1_200)
    monkeypatch.setattr(scale, "SAMPLES", 3)
    results = Results()
    mode = dataclasses.replace(FULL, repeats=1, scale_million=True)
    scale.run(Context(mode, tmp_path, {}, results))
    keys = {w["workload"] for w in results.as_json()["workloads"]}
    assert {"scale_gc_1200", "scale_start_1200", "scale_tags_middle_page_1200"} <= keys
    assert "scale_gc_200" in keys and "scale_tags_first_page_1000" in keys
