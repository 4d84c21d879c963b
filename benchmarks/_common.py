"""Shared helpers for benchmark modules: timing loops and the result record."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Result", "ops_per_second"]


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


def ops_per_second(fn: Callable[[], object], *, min_time: float = 0.3) -> float:
    """Calls of ``fn`` per second, counted over at least ``min_time`` seconds."""
    fn()  # warm-up
    count = 0
    start = time.perf_counter()
    elapsed = 0.0
    while elapsed < min_time:
        fn()
        count += 1
        elapsed = time.perf_counter() - start
    return count / elapsed
