"""trustyard's benchmark suite: the same workloads against trustyard and the reference registry.

`python -m benchmarks [--quick] [--json out.json]` starts both servers on loopback, runs every
workload family (one module each) against both in the same run, and prints median/min/max with
the ratio trustyard / reference and PASS/MISS against the performance targets (DESIGN.md §7).
"""
