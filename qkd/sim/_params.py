"""Link and post-processing parameters: frozen, keyword-only, validated in one place.

The default link is the GYS parameter set used by Ma, Qi, Zhao and Lo, "Practical decoy
state for quantum key distribution", Phys. Rev. A 72, 012326 (2005), taken from the
Gobby-Yuan-Shields experiment: alpha = 0.21 dB/km, eta_Bob = 0.045, Y0 = 1.7e-6,
e_d = 0.033, f = 1.22, lambda = 1550 nm, 2 GHz clock in the experiment (we default to 1 GHz).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from qkd.sim._errors import ParameterError
from qkd.sim._hashing import verification_collision_bound

__all__ = [
    "GYS",
    "Eavesdropper",
    "LinkParams",
    "PostProcessingParams",
    "parse_eve",
]

_EVE_KINDS = ("none", "intercept-resend", "pns")


@dataclass(frozen=True, slots=True, kw_only=True)
class Eavesdropper:
    """Who sits on the fiber.

    ``kind``: ``"none"``; ``"intercept-resend"`` (Eve measures a fraction ``fraction`` of
    the non-empty pulses in a random basis and resends her result with the same photon
    number, so gains are unchanged and only the error rate moves); ``"pns"``
    (photon-number splitting: Eve keeps one photon of every multi-photon pulse, forwards
    the rest over a lossless line and blocks single photons as needed to keep the *signal*
    gain at its expected value — the attack decoy states exist to expose).
    """

    kind: str = "none"
    fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in _EVE_KINDS:
            raise ParameterError(
                f"unknown eavesdropper {self.kind!r}; use one of {', '.join(_EVE_KINDS)}"
            )
        if not 0.0 <= self.fraction <= 1.0 or math.isnan(self.fraction):
            raise ParameterError(f"eavesdropper fraction must be in [0, 1], got {self.fraction!r}")

    def describe(self) -> str:
        if self.kind == "intercept-resend":
            return f"intercept-resend:{self.fraction:g}"
        return self.kind


def parse_eve(spec: str) -> Eavesdropper:
    """Parse ``none``, ``pns`` or ``intercept-resend:P`` (P in [0, 1])."""
    kind, _, arg = spec.strip().lower().partition(":")
    if kind == "intercept-resend":
        try:
            fraction = float(arg) if arg else 1.0
        except ValueError:
            raise ParameterError(
                f"bad eavesdropper {spec!r}: expected intercept-resend:P with P a number in [0, 1]"
            ) from None
        return Eavesdropper(kind=kind, fraction=fraction)
    if arg:
        raise ParameterError(f"eavesdropper {kind!r} takes no argument (got {spec!r})")
    return Eavesdropper(kind=kind, fraction=1.0 if kind == "pns" else 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkParams:
    """Physical parameters of a decoy-state BB84 link (weak+vacuum decoy).

    Fields:
        distance_km: fiber length.
        alpha_db_per_km: fiber attenuation.
        eta_bob: Bob's detection efficiency including his optics' loss.
        dark_count: Y0, probability of a background click per pulse (both detectors).
        misalignment: e_d, probability that a photon hits the wrong detector.
        mu_signal, mu_decoy: mean photon numbers; the third intensity is vacuum (0).
        p_signal, p_decoy, p_vacuum: probabilities Alice picks each intensity (sum to 1).
        p_z: probability Alice and Bob each pick the Z basis; Z carries the key and X
            estimates the phase error (efficient BB84, Lo-Chau-Ardehali). 0.5 = BB84.
        rep_rate_hz: pulse repetition rate; only converts per-pulse rates into bit/s.
        eve: the eavesdropper.
    """

    distance_km: float = 10.0
    alpha_db_per_km: float = 0.21
    eta_bob: float = 0.045
    dark_count: float = 1.7e-6
    misalignment: float = 0.033
    mu_signal: float = 0.48
    mu_decoy: float = 0.1
    p_signal: float = 0.8
    p_decoy: float = 0.15
    p_vacuum: float = 0.05
    p_z: float = 0.5
    rep_rate_hz: float = 1e9
    eve: Eavesdropper = field(default_factory=Eavesdropper)

    def __post_init__(self) -> None:
        _validate_link(self)

    @property
    def transmittance(self) -> float:
        """Overall single-photon detection probability eta = 10^(-alpha L / 10) eta_Bob."""
        return 10.0 ** (-self.alpha_db_per_km * self.distance_km / 10.0) * self.eta_bob

    @property
    def intensities(self) -> tuple[float, float, float]:
        return (self.mu_signal, self.mu_decoy, 0.0)

    @property
    def intensity_probs(self) -> tuple[float, float, float]:
        return (self.p_signal, self.p_decoy, self.p_vacuum)


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ParameterError(message)


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParameterError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ParameterError(f"{name} must be finite, got {value!r}")
    return float(value)


def _validate_link(p: LinkParams) -> None:
    for name in (
        "distance_km",
        "alpha_db_per_km",
        "eta_bob",
        "dark_count",
        "misalignment",
        "mu_signal",
        "mu_decoy",
        "p_signal",
        "p_decoy",
        "p_vacuum",
        "p_z",
        "rep_rate_hz",
    ):
        _finite(name, getattr(p, name))
    _check(0 <= p.distance_km <= 1000, f"distance_km must be in [0, 1000], got {p.distance_km}")
    _check(
        0 <= p.alpha_db_per_km <= 10, f"alpha_db_per_km must be in [0, 10], got {p.alpha_db_per_km}"
    )
    _check(0 < p.eta_bob <= 1, f"eta_bob must be in (0, 1], got {p.eta_bob}")
    _check(0 <= p.dark_count < 0.1, f"dark_count (Y0) must be in [0, 0.1), got {p.dark_count}")
    _check(0 <= p.misalignment < 0.5, f"misalignment must be in [0, 0.5), got {p.misalignment}")
    _check(
        0 < p.mu_decoy < p.mu_signal <= 10,
        "intensities must satisfy 0 < mu_decoy < mu_signal <= 10 "
        f"(got mu_signal={p.mu_signal}, mu_decoy={p.mu_decoy})",
    )
    for name in ("p_signal", "p_decoy", "p_vacuum"):
        _check(0 < getattr(p, name) < 1, f"{name} must be in (0, 1), got {getattr(p, name)}")
    total = p.p_signal + p.p_decoy + p.p_vacuum
    _check(abs(total - 1) < 1e-9, f"p_signal + p_decoy + p_vacuum must be 1, got {total}")
    _check(0 < p.p_z < 1, f"p_z must be in (0, 1), got {p.p_z}")
    _check(p.rep_rate_hz > 0, f"rep_rate_hz must be positive, got {p.rep_rate_hz}")
    _check(isinstance(p.eve, Eavesdropper), "eve must be an Eavesdropper (see parse_eve)")


@dataclass(frozen=True, slots=True, kw_only=True)
class PostProcessingParams:
    """Post-processing options.

    Fields:
        pulses_per_block: pulses Alice sends per post-processing block. Cost grows with
            detections, so 1e10 pulses are cheap when few are detected.
        sample_fraction: fraction of the signal Z-basis sifted bits revealed to estimate QBER.
        qber_threshold: abort (no key) when the sampled QBER's upper bound exceeds this.
        cascade_passes: Cascade passes (Martinez-Mateo et al. 2015 "option 7": 14).
        finite_key: use the finite-key length (Lim et al. 2014) instead of the asymptotic one.
        eps_sec, eps_cor: secrecy and correctness parameters of the finite-key bound.
        ec_efficiency_model: f used by the *analytic* curve only (the simulated leak is the
            Cascade's real disclosure).
        auth_psk_bytes: size of the bootstrap pre-shared authentication key.
    """

    pulses_per_block: int = 10**9
    sample_fraction: float = 0.05
    qber_threshold: float = 0.11
    cascade_passes: int = 14
    finite_key: bool = False
    eps_sec: float = 1e-10
    eps_cor: float = 1e-15
    ec_efficiency_model: float = 1.22
    auth_psk_bytes: int = 16384

    def __post_init__(self) -> None:
        _validate_pp(self)


def _validate_pp(p: PostProcessingParams) -> None:
    _check(
        isinstance(p.pulses_per_block, int) and not isinstance(p.pulses_per_block, bool),
        f"pulses_per_block must be an int, got {type(p.pulses_per_block).__name__}",
    )
    _check(
        1000 <= p.pulses_per_block <= 10**16,
        f"pulses_per_block must be in [1e3, 1e16], got {p.pulses_per_block}",
    )
    for name in ("sample_fraction", "qber_threshold", "eps_sec", "eps_cor", "ec_efficiency_model"):
        _finite(name, getattr(p, name))
    _check(
        0 < p.sample_fraction < 0.5, f"sample_fraction must be in (0, 0.5), got {p.sample_fraction}"
    )
    _check(
        0 < p.qber_threshold < 0.5, f"qber_threshold must be in (0, 0.5), got {p.qber_threshold}"
    )
    _check(
        isinstance(p.cascade_passes, int)
        and not isinstance(p.cascade_passes, bool)
        and 1 <= p.cascade_passes <= 64,
        f"cascade_passes must be an int in [1, 64], got {p.cascade_passes!r}",
    )
    _check(0 < p.eps_sec < 1 and 0 < p.eps_cor < 1, "eps_sec and eps_cor must be in (0, 1)")
    worst = verification_collision_bound(p.pulses_per_block)  # a block's key <= its pulses
    _check(
        worst <= p.eps_cor,
        f"eps_cor={p.eps_cor:g} is below what the 128-bit verification tag guarantees for "
        f"blocks of up to {p.pulses_per_block} bits (collision probability {worst:.2g}); "
        "raise eps_cor or lower pulses_per_block",
    )
    _check(
        p.ec_efficiency_model >= 1, f"ec_efficiency_model must be >= 1, got {p.ec_efficiency_model}"
    )
    _check(
        isinstance(p.auth_psk_bytes, int) and 64 <= p.auth_psk_bytes <= 1 << 24,
        f"auth_psk_bytes must be an int in [64, 16 MiB], got {p.auth_psk_bytes}",
    )


GYS = LinkParams()
"""The GYS parameter set (Ma et al. 2005) at 10 km with mu = 0.48, nu = 0.1, BB84 bases."""
