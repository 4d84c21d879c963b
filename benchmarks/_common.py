"""Shared helpers for benchmark modules: the interleaved timing loop and the result record."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Result", "interleaved"]


@dataclass(frozen=True, slots=True)
class Result:
    """One figure for ``benchmarks/results.json``.

    ``baseline`` (same unit, measured in the same run) and ``ratio``
    (``value / baseline``) are present where a baseline exists; ``target``
    states the goal in words, e.g. ``"ratio >= 1.2"``.
    """

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    target: str | None = None
    notes: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        if self.ratio is not None:
            data["ratio"] = round(self.ratio, 4)
        return data


def interleaved(
    candidates: dict[str, Callable[[], object]], *, repeat: int, number: int
) -> dict[str, float]:
    """Milliseconds per call of each candidate: the median over ``repeat`` rounds of the
    round's mean over ``number`` calls, rounds alternating between candidates so that a
    load change on a shared machine hits every candidate alike.

    Compare figures only within one call: a baseline timed apart from its candidate
    (before or after) can land in a faster or slower period of a shared host, and the
    ratio then measures the host, not the code.

    A mean, not a best time: where one call's cost varies by design (ML-DSA signing is
    rejection sampling, 0.4-5 ms a signature), a best-of estimator rewards whichever
    side drew lucky calls, while the mean over many calls is the cost actually paid.
    The median over rounds discards rounds disturbed by other load."""
    rounds: dict[str, list[float]] = {name: [] for name in candidates}
    for fn in candidates.values():
        fn()  # warm-up
    for _ in range(repeat):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            rounds[name].append((time.perf_counter() - start) / number * 1000)
    return {name: statistics.median(values) for name, values in rounds.items()}
