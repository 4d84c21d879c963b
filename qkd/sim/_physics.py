"""Physical model of a decoy-state BB84 link and its vectorised sampler.

Theory of operation
-------------------
Alice sends phase-randomised weak coherent pulses: the photon number of a pulse of
intensity mu is Poisson(mu). An n-photon pulse makes a *signal click* at Bob with
probability eta_n = 1 - (1 - eta)^n (each photon survives the fiber and is detected
independently with eta = 10^(-alpha L/10) eta_Bob); independently a *dark click* happens
with probability Y0. A pulse is detected when either happens, so its yield is
Y_n = 1 - (1 - Y0)(1 - eta_n). With matching bases a signal click is wrong with
probability e_d (misalignment) and a dark-only click with probability 1/2.

Eavesdroppers change eta_n (photon-number splitting) or the error of a signal click
(intercept-resend); see :class:`~qkd.sim.Eavesdropper`.

Sampling cost grows with detections, not pulses: the number of pulses per intensity is
one multinomial draw, the detections per (intensity, photon class, error, basis pair) cell
another multinomial with the exact per-pulse probabilities, and only the detections that
become raw key (signal intensity, both in Z) are materialised as bit strings. Every other
sifted cell is disclosed in full during parameter estimation, so its counts are all the
protocol ever uses. :func:`simulate_pulses_reference` is the slow pulse-by-pulse loop the
tests compare against.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qkd.sim._params import LinkParams

__all__ = [
    "BASIS_PAIRS",
    "DetectionRecord",
    "PhotonModel",
    "photon_model",
    "pulses_for_raw_key",
    "simulate_block",
    "simulate_pulses_reference",
]

BASIS_PAIRS = ("ZZ", "XX", "ZX", "XZ")
"""Index order of the last axis of :attr:`DetectionRecord.counts` (Alice, Bob)."""


@dataclass(frozen=True, slots=True)
class PhotonModel:
    """Per-intensity, per-photon-number detection and error probabilities.

    ``click[k, n]`` = P(detection | n photons) and ``err_click[k, n]`` = P(detection and
    error | n photons, matching bases) for intensity ``k`` (signal, decoy, vacuum);
    ``poisson[k, n]`` the photon-number distribution. ``n`` runs to ``n_max``; the
    Poisson tail beyond it is below 1e-17.
    """

    poisson: np.ndarray
    click: np.ndarray
    err_click: np.ndarray

    @property
    def gains(self) -> np.ndarray:
        """Q_k: probability that a pulse of intensity k is detected."""
        return np.asarray((self.poisson * self.click).sum(axis=1))

    @property
    def error_gains(self) -> np.ndarray:
        """E_k Q_k: probability that a pulse of intensity k is detected with a bit error."""
        return np.asarray((self.poisson * self.err_click).sum(axis=1))

    def class_probabilities(self) -> np.ndarray:
        """P(class c, error e | pulse of intensity k): shape (3 intensities, 3 classes, 2)."""
        joint_click = self.poisson * self.click
        joint_err = self.poisson * self.err_click
        out = np.zeros((3, 3, 2))
        for c, sl in enumerate((slice(0, 1), slice(1, 2), slice(2, None))):
            err = joint_err[:, sl].sum(axis=1)
            out[:, c, 1] = err
            out[:, c, 0] = joint_click[:, sl].sum(axis=1) - err
        return np.clip(out, 0.0, 1.0)


def _n_max(mu: float) -> int:
    return int(mu + 12.0 * math.sqrt(mu) + 30)


def _poisson_table(mus: tuple[float, ...], n_max: int) -> np.ndarray:
    n = np.arange(n_max + 1)
    log_fact = np.array([math.lgamma(i + 1) for i in n])
    rows = []
    for mu in mus:
        if mu == 0:
            row = np.zeros(n_max + 1)
            row[0] = 1.0
        else:
            row = np.exp(n * math.log(mu) - mu - log_fact)
        rows.append(row)
    return np.array(rows)


def _signal_click_and_error(link: LinkParams, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """eta_n (signal click probability) and e_n (error given a signal click) per n."""
    eta = link.transmittance
    e_d = link.misalignment
    eta_n = 1.0 - (1.0 - eta) ** n
    eve = link.eve
    e_signal = e_d
    if eve.kind == "intercept-resend":
        # Eve's basis is wrong half the time: then Bob's bit is random (error 1/2).
        e_signal = (1 - eve.fraction) * e_d + eve.fraction * (0.5 * e_d + 0.25)
    err_signal = np.full(n.shape, e_signal)
    if eve.kind == "pns":
        eta_n = _pns_signal_click(link, n)
    return eta_n, err_signal


def _pns_signal_click(link: LinkParams, n: np.ndarray) -> np.ndarray:
    """Eve keeps one photon of each multi-photon pulse and forwards the rest losslessly.

    She forwards single photons only as far as needed to reproduce the expected signal
    gain; when the multi-photon pulses alone exceed it she also drops some of those.
    """
    eta, eta_b, mu = link.transmittance, link.eta_bob, link.mu_signal
    p = _poisson_table((mu,), int(n.max()))[0]
    target = float((p * (1 - (1 - eta) ** n)).sum())
    multi_click = np.where(n >= 2, 1 - (1 - eta_b) ** np.maximum(n - 1, 0), 0.0)
    multi = float((p * multi_click).sum())
    single = float(p[1] * eta_b)
    if multi >= target:
        f_multi, f_single = target / multi, 0.0
    else:
        f_multi, f_single = 1.0, min(1.0, (target - multi) / single)
    return np.where(n >= 2, f_multi * multi_click, np.where(n == 1, f_single * eta_b, 0.0))


def photon_model(link: LinkParams) -> PhotonModel:
    """Exact per-photon-number probabilities of the link (see the module docstring)."""
    n_max = _n_max(link.mu_signal)
    n = np.arange(n_max + 1)
    eta_n, err_signal = _signal_click_and_error(link, n)
    y0 = link.dark_count
    click = 1.0 - (1.0 - y0) * (1.0 - eta_n)
    err_click = eta_n * err_signal + (1.0 - eta_n) * y0 * 0.5
    poisson = _poisson_table(link.intensities, n_max)
    return PhotonModel(
        poisson=poisson,
        click=np.broadcast_to(click, poisson.shape).copy(),
        err_click=np.broadcast_to(err_click, poisson.shape).copy(),
    )


def pulses_for_raw_key(link: LinkParams, raw_key_bits: float) -> int:
    """Pulses after which the link is expected to hold ``raw_key_bits`` of raw key
    (signal-intensity clicks with both bases Z): how block sizes are chosen."""
    per_pulse = photon_model(link).gains[0] * link.p_signal * link.p_z**2
    return int(raw_key_bits / per_pulse)


@dataclass(frozen=True, slots=True)
class DetectionRecord:
    """What one block of pulses left at Alice and Bob.

    ``counts[k, c, e, b]``: detections of intensity ``k`` (signal, decoy, vacuum), photon
    class ``c`` (0, 1, >=2 photons: simulation truth, never used by the protocol), bit
    error ``e`` (meaningful only for matching bases) and basis pair ``b`` (see
    :data:`BASIS_PAIRS`). ``pulses[k]``: pulses Alice sent with intensity k.
    ``alice_key``/``bob_key``: the raw key strings (signal intensity, Z/Z), one bit per
    ``uint8``; row ``i`` of both is the same detection.
    """

    n_pulses: int
    pulses: np.ndarray
    counts: np.ndarray
    alice_key: np.ndarray = field(repr=False)
    bob_key: np.ndarray = field(repr=False)

    @property
    def detections(self) -> int:
        return int(self.counts.sum())

    def sifted(self, basis: int) -> np.ndarray:
        """Sifted detections per intensity in basis pair ``basis`` (0 = ZZ, 1 = XX)."""
        return np.asarray(self.counts[:, :, :, basis].sum(axis=(1, 2)))

    def sifted_errors(self, basis: int) -> np.ndarray:
        return np.asarray(self.counts[:, :, 1, basis].sum(axis=1))


def _basis_probs(p_z: float) -> np.ndarray:
    p_x = 1.0 - p_z
    return np.array([p_z * p_z, p_x * p_x, p_z * p_x, p_x * p_z])


def simulate_block(link: LinkParams, n_pulses: int, *, rng: np.random.Generator) -> DetectionRecord:
    """Sample one block of ``n_pulses`` pulses; cost grows with the number of detections."""
    model = photon_model(link)
    pulses = rng.multinomial(n_pulses, np.array(link.intensity_probs))
    cls = model.class_probabilities().reshape(3, 6)
    basis = _basis_probs(link.p_z)
    counts = np.zeros((3, 3, 2, 4), dtype=np.int64)
    for k in range(3):
        detected = rng.multinomial(pulses[k], np.append(cls[k], max(0.0, 1.0 - cls[k].sum())))
        for j in range(6):
            counts[k, j // 2, j % 2] = rng.multinomial(detected[j], basis)
    n_key = int(counts[0, :, :, 0].sum())
    n_err = int(counts[0, :, 1, 0].sum())
    alice = np.unpackbits(np.frombuffer(rng.bytes((n_key + 7) // 8), dtype=np.uint8))[:n_key]
    flips = np.zeros(n_key, dtype=np.uint8)
    flips[rng.choice(n_key, size=n_err, replace=False)] = 1
    return DetectionRecord(
        n_pulses=n_pulses, pulses=pulses, counts=counts, alice_key=alice, bob_key=alice ^ flips
    )


def simulate_pulses_reference(
    link: LinkParams, n_pulses: int, *, rng: np.random.Generator
) -> np.ndarray:
    """Slow pulse-by-pulse reference: returns ``counts`` shaped like DetectionRecord's.

    Every pulse draws its intensity, Poisson photon number, bases, each photon's survival
    and the dark count individually. Only for tests (about a microsecond per pulse).
    """
    model = photon_model(link)
    eta, e_d, y0 = link.transmittance, link.misalignment, link.dark_count
    eve = link.eve
    counts = np.zeros((3, 3, 2, 4), dtype=np.int64)
    mus = link.intensities
    probs = link.intensity_probs
    pns_click = model.click[0]  # PNS: Eve's forwarding, per photon number (incl. dark)
    for _ in range(n_pulses):
        k = int(rng.choice(3, p=probs))
        n = int(rng.poisson(mus[k]))
        a_z = rng.random() < link.p_z
        b_z = rng.random() < link.p_z
        if eve.kind == "pns":
            signal = rng.random() < (pns_click[min(n, len(pns_click) - 1)] - y0) / (1 - y0)
        else:
            signal = any(rng.random() < eta for _ in range(n))
        dark = rng.random() < y0
        if not (signal or dark):
            continue
        if signal:
            p_err = e_d
            if eve.kind == "intercept-resend" and rng.random() < eve.fraction:
                eve_right = rng.random() < 0.5
                p_err = e_d if eve_right else 0.5
        else:
            p_err = 0.5
        err = int(rng.random() < p_err)
        b = {(True, True): 0, (False, False): 1, (True, False): 2, (False, True): 3}[(a_z, b_z)]
        counts[k, min(n, 2), err, b] += 1
    return counts
