"""Parameter estimation: decoy-state bounds and the secret key length.

Decoy bounds (weak + vacuum decoy) follow Lim, Curty, Walenta, Xu and Zbinden, "Concise
security bounds for practical decoy-state quantum key distribution", PRA 89, 022307
(2014), with intensities mu1 = signal > mu2 = decoy > mu3 = 0 (vacuum). Without the
statistical terms (``eps=None``) they reduce exactly to the asymptotic vacuum+weak
decoy bounds of Ma, Qi, Zhao and Lo, PRA 72, 012326 (2005), eqs. (34)-(37):

    Y1 >= mu / (mu nu - nu^2) * (Q_nu e^nu - Q_mu e^mu nu^2/mu^2 - (mu^2 - nu^2)/mu^2 Y0)
    e1 <= (E_nu Q_nu e^nu - Y0 / 2) / (Y1 nu)

and the key length is the GLLP / Lo-Ma-Chen rate applied to the signal Z-basis key:

    l = s1 (1 - h(e1)) - leak_EC                                  (asymptotic)
    l = s0 + s1 (1 - h(phi)) - leak_EC - 6 log2(21/eps_sec) - log2(2/eps_cor)  (finite)

where s0, s1 are lower bounds on the vacuum and single-photon events in the key string
and phi the upper bound on their phase error (estimated from the X basis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qkd.sim._params import LinkParams
from qkd.sim._physics import photon_model

__all__ = [
    "DecoyEstimate",
    "analytic_key_rate",
    "binary_entropy",
    "estimate_decoy",
    "secret_key_length",
]


def binary_entropy(x: float) -> float:
    """h(x) = -x log2 x - (1 - x) log2 (1 - x); h(x) = 1 for x >= 1/2."""
    if x <= 0.0:
        return 0.0
    if x >= 0.5:
        return 1.0
    return -x * math.log2(x) - (1 - x) * math.log2(1 - x)


@dataclass(frozen=True, slots=True)
class DecoyEstimate:
    """Bounds from one block's disclosed statistics.

    ``s0``/``s1``: lower bounds on vacuum / single-photon events among the Z-basis
    detections of all intensities; ``key_s0``/``key_s1``: the same restricted to the raw
    key string (signal intensity, after the QBER sample is removed); ``phase_error``: upper
    bound on the single-photon phase error; ``y0``, ``y1``: implied yields per pulse.
    """

    s0: float
    s1: float
    key_s0: float
    key_s1: float
    phase_error: float
    y0: float
    y1: float


def _tau(mus: tuple[float, ...], probs: tuple[float, ...], n: int) -> float:
    return sum(p * math.exp(-m) * m**n / math.factorial(n) for m, p in zip(mus, probs, strict=True))


def _bounds(
    counts: np.ndarray, total: float, mus, probs, eps: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """n_k^-/+ of Lim et al.: e^{mu_k}/p_k (n_k -/+ sqrt(total/2 ln(21/eps)))."""
    delta = 0.0 if eps is None else math.sqrt(total / 2 * math.log(21 / eps))
    scale = np.array([math.exp(m) / p for m, p in zip(mus, probs, strict=True)])
    return scale * np.maximum(counts - delta, 0.0), scale * (counts + delta)


def _single_photon_lower(
    lo: np.ndarray, hi: np.ndarray, mus, tau0: float, tau1: float
) -> tuple[float, float]:
    mu1, mu2, mu3 = mus
    s0 = max(0.0, tau0 * (mu2 * lo[2] - mu3 * hi[1]) / (mu2 - mu3))
    s1 = (
        tau1
        * mu1
        * (lo[1] - hi[2] - (mu2**2 - mu3**2) / mu1**2 * (hi[0] - s0 / tau0))
        / (mu1 * (mu2 - mu3) - mu2**2 + mu3**2)
    )
    return s0, max(0.0, s1)


def _gamma(a: float, b: float, c: float, d: float) -> float:
    if b <= 0 or b >= 1 or c <= 0 or d <= 0:
        return 0.5
    arg = (c + d) / (c * d * (1 - b) * b) * 21**2 / a**2
    return math.sqrt((c + d) * (1 - b) * b / (c * d * math.log(2)) * math.log2(arg))


def estimate_decoy(
    *,
    link: LinkParams,
    n_z: np.ndarray,
    n_x: np.ndarray,
    m_x: np.ndarray,
    n_pulses: float,
    key_fraction: float,
    eps_sec: float | None = None,
) -> DecoyEstimate:
    """Decoy-state bounds from sifted counts per intensity (signal, decoy, vacuum).

    ``n_z``/``n_x``: sifted detections in Z/X; ``m_x``: X-basis errors; ``key_fraction``:
    the share of the signal Z detections that stays in the key after sampling.
    ``eps_sec=None`` gives the asymptotic bounds.
    """
    mus, probs = link.intensities, link.intensity_probs
    tau0, tau1 = _tau(mus, probs, 0), _tau(mus, probs, 1)
    z_lo, z_hi = _bounds(n_z.astype(float), float(n_z.sum()), mus, probs, eps_sec)
    x_lo, x_hi = _bounds(n_x.astype(float), float(n_x.sum()), mus, probs, eps_sec)
    e_lo, e_hi = _bounds(m_x.astype(float), float(m_x.sum()), mus, probs, eps_sec)
    s0, s1 = _single_photon_lower(z_lo, z_hi, mus, tau0, tau1)
    _, s1_x = _single_photon_lower(x_lo, x_hi, mus, tau0, tau1)
    v1_x = tau1 * (e_hi[1] - e_lo[2]) / (mus[1] - mus[2])
    if s1_x <= 0:
        phase = 0.5
    else:
        ratio = min(0.5, max(0.0, v1_x / s1_x))
        extra = 0.0 if eps_sec is None else _gamma(eps_sec, ratio, s1, s1_x)
        phase = min(0.5, ratio + extra)
    mu1, p1 = mus[0], probs[0]
    key_s1 = s1 * p1 * mu1 * math.exp(-mu1) / tau1
    key_s0 = s0 * p1 * math.exp(-mu1) / tau0
    if eps_sec is not None:  # a-posteriori assignment of intensities (Hoeffding)
        key_s1 = max(0.0, key_s1 - math.sqrt(s1 / 2 * math.log(21 / eps_sec)))
        key_s0 = max(0.0, key_s0 - math.sqrt(s0 / 2 * math.log(21 / eps_sec)))
    z_pulses = n_pulses * link.p_z**2
    return DecoyEstimate(
        s0=s0,
        s1=s1,
        key_s0=key_s0 * key_fraction,
        key_s1=key_s1 * key_fraction,
        phase_error=phase,
        y0=s0 / (tau0 * z_pulses) if z_pulses else 0.0,
        y1=s1 / (tau1 * z_pulses) if z_pulses else 0.0,
    )


def secret_key_length(
    est: DecoyEstimate,
    *,
    leaked_bits: float,
    finite_key: bool,
    eps_sec: float,
    eps_cor: float,
) -> float:
    """Secure length in bits (may be negative: then no key)."""
    length = est.key_s1 * (1 - binary_entropy(est.phase_error)) - leaked_bits
    if finite_key:
        length += est.key_s0 - 6 * math.log2(21 / eps_sec) - math.log2(2 / eps_cor)
    return length


def analytic_key_rate(
    link: LinkParams,
    *,
    f: float = 1.22,
    sample_fraction: float = 0.0,
    exact_single_photon: bool = False,
) -> float:
    """Asymptotic secret bits per pulse of this protocol, from the model's expected values.

    The same estimators as the simulation, fed with expected counts: ``f`` scales the
    error-correction leak f * h(E_mu). ``exact_single_photon`` uses the true Y1 and e1
    (infinitely many decoys) instead of the vacuum+weak bounds. Never negative.
    """
    model = photon_model(link)
    gains, err_gains = model.gains, model.error_gains
    probs = np.array(link.intensity_probs)
    p_x = 1 - link.p_z
    n_z = probs * link.p_z**2 * gains
    keep = 1 - sample_fraction
    e_mu = err_gains[0] / gains[0]
    leak = f * n_z[0] * keep * binary_entropy(e_mu)
    if exact_single_photon:
        mu = link.mu_signal
        y1, e1 = model.click[0, 1], model.err_click[0, 1] / model.click[0, 1]
        q1 = probs[0] * link.p_z**2 * mu * math.exp(-mu) * y1 * keep
        return max(0.0, q1 * (1 - binary_entropy(e1)) - leak)
    est = estimate_decoy(
        link=link,
        n_z=n_z,
        n_x=probs * p_x**2 * gains,
        m_x=probs * p_x**2 * err_gains,
        n_pulses=1.0,
        key_fraction=keep,
    )
    return max(0.0, est.key_s1 * (1 - binary_entropy(est.phase_error)) - leak)
