"""KEM operations per second for every available KEM and backend.

The baseline for each figure is the same operation of X25519 (OpenSSL) measured in the
same run, so the ratio is the KEM's rate over X25519's: below 1 it is slower, and one
of its operations costs ``1 / ratio`` X25519 operations.
"""

from __future__ import annotations

import kem
from benchmarks._common import Result, ops_per_second


def _measure(k: kem.KEM, min_time: float) -> dict[str, float]:
    pair = k.generate_keypair()
    ct, _ = k.encapsulate(pair.public)
    return {
        "keygen": ops_per_second(k.generate_keypair, min_time=min_time),
        "encaps": ops_per_second(lambda: k.encapsulate(pair.public), min_time=min_time),
        "decaps": ops_per_second(lambda: k.decapsulate(pair.private, ct), min_time=min_time),
    }


def run(quick: bool) -> list[Result]:
    min_time = 0.05 if quick else 0.4
    baseline = _measure(kem.get_kem("X25519", "openssl"), min_time)
    results = []
    for info in kem.kem_report():
        if not info.available:
            results.append(
                Result(f"kem/{info.name}/{info.backend}", 0.0, "unavailable", notes=info.reason)
            )
            continue
        figures = _measure(
            kem.get_kem(info.name, info.backend),
            min_time if info.backend != "pure" else min_time / 2,
        )
        for op, value in figures.items():
            results.append(
                Result(
                    f"kem/{info.name}/{info.backend}/{op}",
                    value,
                    "ops/s",
                    baseline=baseline[op],
                    baseline_name=f"X25519/openssl/{op}",
                )
            )
    return results
