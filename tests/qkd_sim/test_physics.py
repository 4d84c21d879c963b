"""The vectorised sampler against a pulse-by-pulse loop and against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd.sim import (
    Eavesdropper,
    LinkParams,
    photon_model,
    simulate_block,
    simulate_pulses_reference,
)


def _z(observed: float, expected: float, n: float) -> float:
    """Standard score of a binomial proportion."""
    p = expected
    return abs(observed - p) / math.sqrt(max(p * (1 - p), 1e-12) / n)


def test_gain_matches_closed_form() -> None:
    link = LinkParams(distance_km=37)
    eta = link.transmittance
    gains = photon_model(link).gains
    for mu, q in zip(link.intensities, gains, strict=True):
        assert q == pytest.approx(1 - (1 - link.dark_count) * math.exp(-eta * mu), rel=1e-12)


@pytest.mark.parametrize("eve", ["none", "intercept-resend", "pns"])
def test_vectorised_sampler_matches_reference_loop(eve: str) -> None:
    # A short, lossy-enough link so the slow loop sees thousands of clicks.
    link = LinkParams(
        distance_km=0,
        eta_bob=0.3,
        dark_count=2e-3,
        eve=Eavesdropper(kind=eve, fraction=0.5 if eve == "intercept-resend" else 1.0),
    )
    n = 40_000
    ref = simulate_pulses_reference(link, n, rng=np.random.default_rng(11))
    fast = simulate_block(link, 200 * n, rng=np.random.default_rng(12)).counts
    for k in range(3):
        for basis in (0, 1):
            r_det = ref[k, :, :, basis].sum()
            f_det = fast[k, :, :, basis].sum()
            p_fast = f_det / (200 * n)
            assert _z(r_det / n, p_fast, n) < 4.5, (k, basis)
            if r_det > 200:
                e_ref = ref[k, :, 1, basis].sum() / r_det
                e_fast = fast[k, :, 1, basis].sum() / f_det
                assert _z(e_ref, e_fast, r_det) < 4.5, (k, basis)
    # photon-number classes of signal detections agree too
    for c in range(3):
        share_ref = ref[0, c].sum() / ref[0].sum()
        share_fast = fast[0, c].sum() / fast[0].sum()
        assert _z(share_ref, share_fast, ref[0].sum()) < 4.5


def test_sampler_is_seeded_and_raw_key_consistent() -> None:
    link = LinkParams(distance_km=30)
    a = simulate_block(link, 10**8, rng=np.random.default_rng(5))
    b = simulate_block(link, 10**8, rng=np.random.default_rng(5))
    assert np.array_equal(a.counts, b.counts) and np.array_equal(a.alice_key, b.alice_key)
    assert a.alice_key.size == a.counts[0, :, :, 0].sum()
    assert np.count_nonzero(a.alice_key != a.bob_key) == a.counts[0, :, 1, 0].sum()
    assert a.pulses.sum() == 10**8


def test_cost_grows_with_detections_not_pulses() -> None:
    # 1e11 pulses (100 s at 1 GHz) at 150 km leave ~1.6e6 detections: well under a second.
    rec = simulate_block(LinkParams(distance_km=150), 10**11, rng=np.random.default_rng(1))
    assert rec.n_pulses == 10**11 and rec.detections < 3 * 10**6


@pytest.mark.parametrize("p", [0.1, 0.3, 0.6, 1.0])
def test_intercept_resend_qber(p: float) -> None:
    """QBER = baseline + p * (1/4 - e_d/2) on signal clicks, i.e. ~ baseline + 25% p."""
    base = LinkParams(distance_km=20)
    link = LinkParams(distance_km=20, eve=Eavesdropper(kind="intercept-resend", fraction=p))
    model0 = photon_model(base)
    e0 = model0.error_gains[0] / model0.gains[0]
    rec = simulate_block(link, 2 * 10**8, rng=np.random.default_rng(int(p * 100)))
    n = rec.alice_key.size
    qber = np.count_nonzero(rec.alice_key != rec.bob_key) / n
    # share of signal (not dark-only) clicks among detections
    eta, mu = base.transmittance, base.mu_signal
    signal_share = (1 - math.exp(-eta * mu)) / model0.gains[0]
    expected = e0 + p * signal_share * (0.25 - base.misalignment / 2)
    assert _z(qber, expected, n) < 4.5
    assert abs(qber - (e0 + 0.25 * p)) < 0.02 * p + 4 * math.sqrt(0.25 / n) + 1e-3


def test_pns_keeps_signal_gain_but_not_decoy_gain() -> None:
    honest = photon_model(LinkParams(distance_km=40)).gains
    pns = photon_model(LinkParams(distance_km=40, eve=Eavesdropper(kind="pns", fraction=1))).gains
    assert pns[0] == pytest.approx(honest[0], rel=1e-9)
    assert pns[1] < 0.9 * honest[1]  # what the decoy analysis detects
