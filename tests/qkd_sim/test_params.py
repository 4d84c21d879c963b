"""Malformed parameters fail early with a message saying what to fix."""

from __future__ import annotations

import numpy as np
import pytest

from qkd.sim import (
    Eavesdropper,
    LinkParams,
    ParameterError,
    PostProcessingParams,
    QKDLink,
    parse_eve,
    toeplitz_hash,
)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"distance_km": -1}, "distance_km"),
        ({"distance_km": float("nan")}, "finite"),
        ({"eta_bob": 0}, "eta_bob"),
        ({"eta_bob": 1.5}, "eta_bob"),
        ({"misalignment": 0.5}, "misalignment"),
        ({"mu_decoy": 0.6}, "mu_decoy < mu_signal"),
        ({"p_signal": 0.5}, "must be 1"),
        ({"p_z": 1.0}, "p_z"),
        ({"dark_count": "x"}, "must be a number"),
        ({"rep_rate_hz": 0}, "rep_rate_hz"),
    ],
)
def test_bad_link_parameters(kwargs: dict, needle: str) -> None:
    with pytest.raises(ParameterError, match=needle):
        LinkParams(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"pulses_per_block": 10}, "pulses_per_block"),
        ({"pulses_per_block": 1.5e9}, "must be an int"),
        ({"sample_fraction": 0}, "sample_fraction"),
        ({"qber_threshold": 0.6}, "qber_threshold"),
        ({"cascade_passes": 0}, "cascade_passes"),
        ({"cascade_passes": 14.0}, "cascade_passes must be an int"),
        ({"eps_sec": 0}, "eps_sec"),
        ({"auth_psk_bytes": 8}, "auth_psk_bytes"),
        ({"eps_cor": 1e-30}, "eps_cor=1e-30 is below what the 128-bit verification tag"),
    ],
)
def test_bad_post_processing_parameters(kwargs: dict, needle: str) -> None:
    with pytest.raises(ParameterError, match=needle):
        PostProcessingParams(**kwargs)


def test_parameters_are_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        LinkParams(10.0)  # type: ignore[misc]
    link = LinkParams()
    with pytest.raises(AttributeError):
        link.distance_km = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "kind", "fraction"),
    [
        ("none", "none", 0.0),
        ("intercept-resend:0.2", "intercept-resend", 0.2),
        ("intercept-resend", "intercept-resend", 1.0),
        ("PNS", "pns", 1.0),
    ],
)
def test_parse_eve(spec: str, kind: str, fraction: float) -> None:
    assert parse_eve(spec) == Eavesdropper(kind=kind, fraction=fraction)


@pytest.mark.parametrize("spec", ["intercept-resend:x", "intercept-resend:1.5", "tap", "pns:3"])
def test_parse_eve_rejects(spec: str) -> None:
    with pytest.raises(ParameterError):
        parse_eve(spec)


def test_link_requires_generator_and_long_psk() -> None:
    with pytest.raises(ParameterError, match="Generator"):
        QKDLink(LinkParams(), rng=42)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="64 bytes"):
        QKDLink(LinkParams(), rng=np.random.default_rng(0), psk=b"short")


def test_toeplitz_seed_length_checked() -> None:
    with pytest.raises(ParameterError, match="n \\+ m - 1"):
        toeplitz_hash(np.zeros(10, np.uint8), np.zeros(5, np.uint8), 4)
