"""KEM operations per second for every available KEM and backend.

The baseline for each figure is the same operation of X25519 (OpenSSL), so the ratio
is the KEM's rate over X25519's: below 1 it is slower, and one of its operations costs
``1 / ratio`` X25519 operations.

How: each KEM operation is timed beside the same X25519 operation by
``benchmarks._common.interleaved``: 15 alternating rounds (5 with ``--quick``), each
side making as many calls a round as fit in ~30 ms (5 ms), and each figure the median
over rounds of the round's rate. Why: this shared 2-core host runs the same code up to
~1.5x slower in some minutes. An X25519 baseline timed once, before all the KEMs, put
that swing into every ratio (ML-KEM-768 keygen/X25519 came out 0.23 to 0.49 in three
runs); rounds milliseconds apart see the same load, and the ratios repeat to within
~5-20%. What is left is mostly the host too: its slow periods do not slow every
operation alike. Each row carries its own baseline, the X25519 rate measured beside
it, so the baselines of different rows differ by as much as the host does.

Reproduce: ``.venv/bin/python -m benchmarks --only bench_kem``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import kem
from benchmarks._common import Result, interleaved

Operation = Callable[[], object]


def _operations(k: kem.KEM) -> dict[str, Operation]:
    """Key generation, encapsulation and decapsulation of ``k``, ready to call."""
    pair = k.generate_keypair()
    ct, _ = k.encapsulate(pair.public)
    return {
        "keygen": k.generate_keypair,
        "encaps": lambda: k.encapsulate(pair.public),
        "decaps": lambda: k.decapsulate(pair.private, ct),
    }


def _seconds_per_call(fn: Operation, budget: float = 0.002) -> float:
    """A rough cost of one call (calls for ``budget`` seconds, at least one), used only
    to size the rounds; it doubles as a warm-up."""
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget or count == 0:
        fn()
        count += 1
    return elapsed / count


def _batch(fn: Operation, calls: int) -> Operation:
    """``fn`` called ``calls`` times in a row, as one candidate for ``interleaved``."""

    def run() -> None:
        for _ in range(calls):
            fn()

    return run


def _paired_ops_per_second(
    candidate: Operation, baseline: Operation, *, repeat: int, round_time: float
) -> tuple[float, float]:
    """Rates of ``candidate`` and ``baseline`` timed in alternating rounds.

    Each side's round makes as many calls as fit in about ``round_time`` seconds (at
    least one), so a fast baseline beside a slow pure-Python KEM still runs long enough
    to amortise the cold caches the KEM leaves behind."""
    sides = {"candidate": candidate, "baseline": baseline}
    calls = {name: max(1, round(round_time / _seconds_per_call(fn))) for name, fn in sides.items()}
    batches = {name: _batch(fn, calls[name]) for name, fn in sides.items()}
    ms = interleaved(batches, repeat=repeat, number=1)
    return 1000 * calls["candidate"] / ms["candidate"], 1000 * calls["baseline"] / ms["baseline"]


def run(quick: bool) -> list[Result]:
    repeat, round_time = (5, 0.005) if quick else (15, 0.03)
    x25519 = _operations(kem.get_kem("X25519", "openssl"))
    results = []
    for info in kem.kem_report():
        if not info.available:
            results.append(
                Result(f"kem/{info.name}/{info.backend}", 0.0, "unavailable", notes=info.reason)
            )
            continue
        for op, fn in _operations(kem.get_kem(info.name, info.backend)).items():
            value, baseline = _paired_ops_per_second(
                fn, x25519[op], repeat=repeat, round_time=round_time
            )
            results.append(
                Result(
                    f"kem/{info.name}/{info.backend}/{op}",
                    value,
                    "ops/s",
                    baseline=baseline,
                    baseline_name=f"X25519/openssl/{op}",
                )
            )
    return results
