"""Benchmarks: the per-message cost of memory beside its physical floor and its peers.

Run ``python -m bench`` (full, under 10 minutes on 2 cores) or
``python -m bench --quick`` (under a minute, run in CI so it never rots).
Every figure is the median of several rounds, with p50/p99, and every goal is
a ratio measured in the same run against the same servers: absolute times on
shared machines drift, ratios much less. See docs/PERFORMANCE.md.
"""
