"""QKD link simulation and post-processing throughput, Cascade efficiency.

Figures (one core, measured in this run; CPU time where it says so):

- ``qkd/sim/pulses_per_s`` and ``qkd/sim/detections_per_s``: the vectorised sampler at
  10 km (GYS parameters), baseline the pulse-by-pulse reference loop.
- ``qkd/post/raw_bits_in_per_s`` and ``qkd/post/secret_bits_out_per_s``: one full block
  (sampling, Cascade, verification, decoy estimation, Toeplitz PA, authentication).
- ``qkd/cascade/efficiency/qber=...``: f = disclosed / (n h(QBER)); target <= 1.10 for
  QBER <= 5% (n = 2^18, quick: 2^16).
- ``qkd/link_1ghz_10km/secret_bits_per_wall_s``: a 1 GHz, 10 km decoy-state link
  simulated and post-processed end to end; baseline = the 10 Mb/s target, so the ratio is
  the fraction of the target reached. Also reported: the same link with efficient BB84
  (p_z = 0.9) and the link's own secret key rate per second of *link* time. GYS
  parameters, **asymptotic** key length (GLLP), raw-key blocks of 1 Mbit (250 kbit with
  ``--quick``; 5% of it is sampled for the QBER), Cascade with 14 passes.
- ``qkd/link_1ghz_10km/cpu_ms_per_block``: where one block's CPU time goes (Cascade,
  privacy amplification, sifting and sampling, physics, the rest), from wrapped calls
  in a separate run of the same blocks.
- ``qkd/link_1ghz_10km_finite/secret_bits_per_cpu_s``: the finite-key length (Lim et al.
  2014, eps_sec = 1e-10) needs larger blocks: at 1 Mbit the X-basis decoy statistics
  leave no key, so this row uses 4 Mbit raw-key blocks.
- ``.../speedup_vs_numpy_cascade_cpu``: the same blocks with the pure-numpy Cascade
  engine (what runs without numba); CPU-time ratio of secret bits per CPU second.
- ``.../speedup_vs_previous_cpu``: the same blocks (same seed) post-processed with the
  previous Cascade engine (per-interval gathers, fresh base shuffle per block) and the
  previous one-transform-per-string Toeplitz FFT, patched in; CPU-time ratio new / old.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np

from benchmarks._common import Result
from qkd.sim import (
    LinkParams,
    PostProcessingParams,
    QKDLink,
    _cascade_jit,
    binary_entropy,
    pulses_for_raw_key,
    reconcile,
    simulate_block,
    simulate_pulses_reference,
)

TARGET_BPS = 10e6


@contextmanager
def _numpy_cascade() -> Iterator[None]:
    """The current protocol with the pure-numpy Cascade engine (no numba kernels)."""
    from qkd.sim import _pipeline

    with mock.patch.object(_pipeline, "reconcile", functools.partial(reconcile, jit=False)):
        yield


@contextmanager
def _previous_post_processing() -> Iterator[None]:
    """Swap in the previous Cascade and Toeplitz implementations (the baseline)."""
    from qkd.sim import _pipeline
    from qkd.sim._cascade_reference import reconcile_reference
    from qkd.sim._hashing import _toeplitz_hash_single_fft

    def pair(alice: Any, bob: Any, seed: Any, out_len: int) -> tuple[Any, Any]:
        return (
            _toeplitz_hash_single_fft(alice, seed, out_len),
            _toeplitz_hash_single_fft(bob, seed, out_len),
        )

    with (
        mock.patch.object(_pipeline, "reconcile", reconcile_reference),
        mock.patch.object(_pipeline, "toeplitz_hash_pair", pair),
    ):
        yield


def _timed_run(link: LinkParams, post: PostProcessingParams, blocks: int) -> tuple[Any, float]:
    qkd = QKDLink(link, post, rng=np.random.default_rng(7))
    qkd.run_block()  # warm-up (also builds the cached public Cascade permutation)
    cpu0 = time.process_time()
    result = qkd.run(blocks)
    return result, time.process_time() - cpu0


def _breakdown(link: LinkParams, post: PostProcessingParams, blocks: int) -> Result:
    """CPU ms per block by stage: the pipeline's calls wrapped with process-time clocks."""
    from qkd.sim import _pipeline

    spent = dict.fromkeys(("cascade", "pa", "sift", "physics"), 0.0)

    def clocked(stage: str, fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[stage] += time.process_time() - start

        return run

    patches = [
        mock.patch.object(_pipeline, "reconcile", clocked("cascade", _pipeline.reconcile)),
        mock.patch.object(
            _pipeline, "toeplitz_hash_pair", clocked("pa", _pipeline.toeplitz_hash_pair)
        ),
        mock.patch.object(
            _pipeline, "simulate_block", clocked("physics", _pipeline.simulate_block)
        ),
        mock.patch.object(QKDLink, "_sift_and_sample", clocked("sift", QKDLink._sift_and_sample)),
    ]
    with patches[0], patches[1], patches[2], patches[3]:
        qkd = QKDLink(link, post, rng=np.random.default_rng(7))
        qkd.run_block()  # warm-up, not counted
        spent.update(dict.fromkeys(spent, 0.0))
        cpu0 = time.process_time()
        result = qkd.run(blocks)
        cpu = time.process_time() - cpu0
    per = {k: 1e3 * v / blocks for k, v in spent.items()}
    rest = 1e3 * cpu / blocks - sum(per.values())
    return Result(
        "qkd/link_1ghz_10km/cpu_ms_per_block",
        1e3 * cpu / blocks,
        "ms",
        notes=(
            f"Cascade {per['cascade']:.0f}, Toeplitz PA {per['pa']:.0f}, sifting + QBER "
            f"sample {per['sift']:.0f}, physics {per['physics']:.0f}, rest {rest:.0f} ms "
            f"(verification, decoy bounds, channel); {result.secret_bits // blocks} secret "
            f"bits per block"
        ),
    )


def _finite(quick: bool) -> list[Result]:
    link = LinkParams(distance_km=10, rep_rate_hz=1e9)
    raw = 4_000_000
    post = PostProcessingParams(
        pulses_per_block=pulses_for_raw_key(link, raw), auth_psk_bytes=1 << 16, finite_key=True
    )
    result, cpu = _timed_run(link, post, 1)
    raw_in = sum(b.raw_key for b in result.blocks)
    return [
        Result(
            "qkd/link_1ghz_10km_finite/secret_bits_per_cpu_s",
            result.secret_bits / cpu,
            "bit/s",
            baseline=TARGET_BPS,
            baseline_name="target 10 Mb/s",
            notes=(
                f"finite-key length (eps_sec {post.eps_sec:g}, eps_cor {post.eps_cor:g}), GYS, "
                f"p_z={link.p_z}, 1 block of {raw} raw bits: secret = "
                f"{result.secret_bits / raw_in:.1%} of the raw key "
                f"(1 Mbit blocks give none)"
            ),
        )
    ]


def _sampler(quick: bool) -> list[Result]:
    link = LinkParams(distance_km=10)
    rng = np.random.default_rng(1)
    n_ref = 20_000 if quick else 100_000
    start = time.perf_counter()
    simulate_pulses_reference(link, n_ref, rng=rng)
    ref_pps = n_ref / (time.perf_counter() - start)
    pulses = 10**9 if quick else 10**10
    start = time.perf_counter()
    rec = simulate_block(link, pulses, rng=rng)
    elapsed = time.perf_counter() - start
    return [
        Result(
            "qkd/sim/pulses_per_s",
            pulses / elapsed,
            "pulses/s",
            baseline=ref_pps,
            baseline_name="pulse-by-pulse reference loop",
            notes=f"10 km GYS, {pulses:.0e} pulses, {rec.detections} detections",
        ),
        Result("qkd/sim/detections_per_s", rec.detections / elapsed, "detections/s"),
    ]


def _cascade(quick: bool) -> list[Result]:
    n = 1 << (16 if quick else 18)
    warm = np.zeros(4096, dtype=np.uint8)  # load (or compile) the numba kernels first
    reconcile(
        warm, warm ^ (np.arange(4096) % 50 == 0), qber_estimate=0.02, rng=np.random.default_rng(0)
    )
    out = []
    for qber in (0.01, 0.02, 0.03, 0.05, 0.08):
        rng = np.random.default_rng(int(qber * 1000))
        alice = rng.integers(0, 2, n, dtype=np.uint8)
        bob = alice.copy()
        bob[rng.choice(n, round(qber * n), replace=False)] ^= 1
        start = time.perf_counter()
        res = reconcile(alice, bob, qber_estimate=qber, rng=rng)
        elapsed = time.perf_counter() - start
        assert np.array_equal(res.corrected, alice)
        out.append(
            Result(
                f"qkd/cascade/efficiency/qber={qber:.2f}",
                res.disclosed_bits / (n * binary_entropy(qber)),
                "f",
                baseline=1.0,
                baseline_name="Shannon limit",
                target="<= 1.10" if qber <= 0.05 else None,
                notes=f"n={n}, {res.rounds} round trips, {n / elapsed / 1e6:.2f} Mbit/s",
            )
        )
    return out


def _link(quick: bool, p_z: float, label: str) -> list[Result]:
    link = LinkParams(distance_km=10, rep_rate_hz=1e9, p_z=p_z)
    raw = 250_000 if quick else 1_000_000
    post = PostProcessingParams(
        pulses_per_block=pulses_for_raw_key(link, raw), auth_psk_bytes=1 << 16
    )
    blocks = 1 if quick else 3
    with _previous_post_processing():
        old, old_cpu = _timed_run(link, post, blocks)
    with _numpy_cascade():
        nump, nump_cpu = _timed_run(link, post, blocks)
    result, cpu = _timed_run(link, post, blocks)
    assert nump.secret_bits == result.secret_bits  # same seed: the engines agree exactly
    breakdown = [_breakdown(link, post, blocks)] if not label else []
    raw_in = sum(b.raw_key for b in result.blocks)
    secret = result.secret_bits
    wall = result.elapsed_s
    link_seconds = result.pulses / link.rep_rate_hz
    return [
        Result(
            f"qkd/link_1ghz_10km{label}/secret_bits_per_wall_s",
            secret / wall,
            "bit/s",
            baseline=TARGET_BPS,
            baseline_name="target 10 Mb/s",
            target="ratio >= 1",
            notes=(
                f"GYS, p_z={p_z}, {blocks} blocks of {raw} raw bits, asymptotic key length, "
                f"{post.cascade_passes} Cascade passes; link itself yields "
                f"{secret / link_seconds / 1e6:.2f} Mb/s secret; real-time factor "
                f"{link_seconds / wall:.3f}; auth {result.auth_fraction:.2%} of key"
            ),
        ),
        Result(
            f"qkd/link_1ghz_10km{label}/secret_bits_per_cpu_s",
            secret / cpu,
            "bit/s",
            baseline=TARGET_BPS,
            baseline_name="target 10 Mb/s",
            target="ratio >= 1",
            notes="process CPU time: robust to a shared, loaded host",
        ),
        Result(
            f"qkd/link_1ghz_10km{label}/speedup_vs_previous_cpu",
            (secret / cpu) / (old.secret_bits / old_cpu),
            "x",
            notes=(
                f"same seed and blocks; previous Cascade + single-FFT Toeplitz: "
                f"{old.secret_bits / old_cpu / 1e6:.3f} Mb/s secret per CPU s, "
                f"{old.elapsed_s:.2f} s wall; now {secret / cpu / 1e6:.3f} Mb/s, {wall:.2f} s"
            ),
        ),
        Result(
            f"qkd/link_1ghz_10km{label}/speedup_vs_numpy_cascade_cpu",
            (secret / cpu) / (nump.secret_bits / nump_cpu),
            "x",
            notes=(
                f"same seed and blocks; numba Cascade kernels vs the pure-numpy engine "
                f"(HYBRIDCHAN_NO_NUMBA=1 path): numpy {nump.secret_bits / nump_cpu / 1e6:.3f} "
                f"Mb/s secret per CPU s, numba {secret / cpu / 1e6:.3f}"
                + ("" if _cascade_jit.available() else " (numba unavailable: both runs numpy)")
            ),
        ),
        Result(f"qkd/post{label}/raw_bits_in_per_s", raw_in / wall, "bit/s"),
        Result(f"qkd/post{label}/secret_bits_out_per_s", secret / wall, "bit/s"),
        Result(f"qkd/link_1ghz_10km{label}/link_secret_rate", secret / link_seconds, "bit/s"),
        *breakdown,
    ]


def run(quick: bool) -> list[Result]:
    return [
        *_sampler(quick),
        *_cascade(quick),
        *_link(quick, 0.5, ""),
        *_link(quick, 0.9, "_pz0.9"),
        *_finite(quick),
    ]


if __name__ == "__main__":  # pragma: no cover
    for r in run(quick=True):
        print(r.to_json())
