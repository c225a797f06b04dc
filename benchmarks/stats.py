"""Figures: samples per server and workload, summaries, the table and the JSON document."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from benchmarks.servers import REFERENCE, TRUSTYARD


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


@dataclass
class Workload:
    key: str
    family: str
    title: str
    unit: str
    higher_is_better: bool = True
    samples: dict[str, list[float]] = field(default_factory=dict)
    extras: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, server: str, value: float, **extra: float) -> None:
        self.samples.setdefault(server, []).append(value)
        for k, v in extra.items():
            self.extras.setdefault(server, {}).setdefault(k, []).append(v)

    def add_load(self, server: str, run: dict[str, float], **extra: float) -> None:
        """One load-generator run (wrk or hey): its req/s, with p50/p99 and errors beside."""
        self.add(
            server,
            run["rps"],
            p50_ms=run["p50_ms"],
            p99_ms=run["p99_ms"],
            errors=run["errors"],
            **extra,
        )

    def median(self, server: str) -> float | None:
        values = self.samples.get(server)
        return statistics.median(values) if values else None

    def ratio(self) -> float | None:
        t, r = self.median(TRUSTYARD), self.median(REFERENCE)
        if t is None or r is None or r == 0:
            return None
        return t / r

    def as_json(self) -> dict[str, Any]:
        servers = {}
        for server, values in self.samples.items():
            entry: dict[str, Any] = summary(values)
            entry["samples"] = [round(v, 4) for v in values]
            for k, vs in self.extras.get(server, {}).items():
                entry[k] = round(statistics.median(vs), 4)
            servers[server] = entry
        ratio = self.ratio()
        return {
            "workload": self.key,
            "family": self.family,
            "title": self.title,
            "unit": self.unit,
            "higher_is_better": self.higher_is_better,
            "servers": servers,
            "ratio_trustyard_reference": None if ratio is None else round(ratio, 4),
        }


@dataclass
class Target:
    name: str
    ok: bool | None  # None: not measured in this run
    detail: str


class Results:
    def __init__(self) -> None:
        self.workloads: dict[str, Workload] = {}
        self.machine: dict[str, list[float]] = {}
        self.targets: list[Target] = []
        self.notes: list[str] = []
        self.failures: list[str] = []

    def workload(
        self, key: str, family: str, title: str, unit: str, higher_is_better: bool = True
    ) -> Workload:
        if key not in self.workloads:
            self.workloads[key] = Workload(key, family, title, unit, higher_is_better)
        return self.workloads[key]

    def machine_median(self, key: str) -> float | None:
        values = self.machine.get(key)
        return statistics.median(values) if values else None

    def as_json(self) -> dict[str, Any]:
        return {
            "machine_limits": {
                k: {**summary(v), "unit": "req/s" if "req/s" in k else "MB/s"}
                for k, v in self.machine.items()
                if v
            },
            "workloads": [w.as_json() for w in self.workloads.values()],
            "targets": [{"target": t.name, "pass": t.ok, "detail": t.detail} for t in self.targets],
            "notes": self.notes,
            "failures": self.failures,
        }


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(values: list[float] | None) -> str:
    if not values:
        return "-"
    s = summary(values)
    return f"{_fmt(s['median'])} [{_fmt(s['min'])}-{_fmt(s['max'])}]"


def _extras(w: Workload, server: str) -> str:
    ex = w.extras.get(server, {})
    if "p50_ms" in ex:
        return f"{_fmt(statistics.median(ex['p50_ms']))}/{_fmt(statistics.median(ex['p99_ms']))}"
    return ""


def render(results: Results) -> str:
    lines = ["", "Machine limits and client ceilings (same run; MB/s unless marked)", ""]
    lines.append(f"  {'limit':44} {'median [min-max]':>30}")
    for k, v in results.machine.items():
        lines.append(f"  {k:44} {_cell(v):>30}")
    header = (
        f"  {'workload':44} {'unit':9} {'trustyard median [min-max]':>30} "
        f"{'reference median [min-max]':>30} {'ratio T/R':>9}  {'T p50/p99 ms':>13} {'R p50/p99 ms':>13}"
    )
    family = None
    order = list(dict.fromkeys(w.family for w in results.workloads.values()))
    rows = sorted(results.workloads.values(), key=lambda w: order.index(w.family))
    for w in rows:
        if w.family != family:
            family = w.family
            lines += ["", f"{family}", "", header]
        ratio = w.ratio()
        lines.append(
            f"  {w.title:44} {w.unit:9} {_cell(w.samples.get(TRUSTYARD)):>30} "
            f"{_cell(w.samples.get(REFERENCE)):>30} {_fmt(ratio) + 'x' if ratio else '-':>9}  "
            f"{_extras(w, TRUSTYARD):>13} {_extras(w, REFERENCE):>13}"
        )
    lines += ["", "Targets (informational)", ""]
    for t in results.targets:
        mark = "n/a " if t.ok is None else "PASS" if t.ok else "MISS"
        lines.append(f"  {mark}  {t.name}: {t.detail}")
    if results.failures:
        lines += ["", "FAILED", ""]
        lines += [f"  - {f}" for f in results.failures]
    if results.notes:
        lines += ["", "Notes", ""]
        lines += [f"  - {n}" for n in results.notes]
    return "\n".join(lines) + "\n"
