"""Simulated decoy-state BB84 link with complete, accounted post-processing.

Drive a link and feed a key sink::

    import numpy as np
    from qkd.sim import LinkParams, PostProcessingParams, QKDLink, ListKeySink

    link = QKDLink(LinkParams(distance_km=25), PostProcessingParams(pulses_per_block=10**9),
                   rng=np.random.default_rng(1))
    sink = ListKeySink()            # or any object with put_block(alice_key, bob_key, stats)
    result = link.run(5, sink)
    print(result.secret_bits, result.key_rate_bps, result.auth_fraction)

Low-level pieces (physics sampler, decoy bounds, Cascade, Toeplitz hashing, the
authenticated channel) are exported for tests and benchmarks.
"""

from qkd.sim._cascade import CascadeResult, cascade_block_sizes, reconcile
from qkd.sim._channel import AuthenticatedChannel, AuthKeyPool, Frame
from qkd.sim._errors import (
    AuthenticationError,
    AuthKeyExhaustedError,
    ParameterError,
    QKDSimError,
    ReconciliationError,
)
from qkd.sim._estimation import (
    DecoyEstimate,
    analytic_key_rate,
    binary_entropy,
    estimate_decoy,
    secret_key_length,
)
from qkd.sim._hashing import (
    toeplitz_hash,
    toeplitz_hash_direct,
    verification_collision_bound,
    verification_tag,
)
from qkd.sim._params import GYS, Eavesdropper, LinkParams, PostProcessingParams, parse_eve
from qkd.sim._physics import (
    DetectionRecord,
    photon_model,
    pulses_for_raw_key,
    simulate_block,
    simulate_pulses_reference,
)
from qkd.sim._pipeline import (
    BlockStats,
    KeySink,
    LinkResult,
    ListKeySink,
    QKDLink,
    simulate_link,
)

__all__ = [
    "GYS",
    "AuthKeyExhaustedError",
    "AuthKeyPool",
    "AuthenticatedChannel",
    "AuthenticationError",
    "BlockStats",
    "CascadeResult",
    "DecoyEstimate",
    "DetectionRecord",
    "Eavesdropper",
    "Frame",
    "KeySink",
    "LinkParams",
    "LinkResult",
    "ListKeySink",
    "ParameterError",
    "PostProcessingParams",
    "QKDLink",
    "QKDSimError",
    "ReconciliationError",
    "analytic_key_rate",
    "binary_entropy",
    "cascade_block_sizes",
    "estimate_decoy",
    "parse_eve",
    "photon_model",
    "pulses_for_raw_key",
    "reconcile",
    "secret_key_length",
    "simulate_block",
    "simulate_link",
    "simulate_pulses_reference",
    "toeplitz_hash",
    "toeplitz_hash_direct",
    "verification_collision_bound",
    "verification_tag",
]
