"""Measured comparisons, run on demand by ``make bench`` (never as timed tests).

Each ``benchmarks/bench_*.py`` module defines ``run(quick: bool) -> list[Result]``.
A result is measured against a baseline taken in the same run wherever one exists.
"""
