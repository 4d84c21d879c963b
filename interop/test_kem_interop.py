"""Cross-implementation interop: encapsulate with one ML-KEM implementation,
decapsulate with another, both directions, every parameter set both support.

OpenSSL (through ``cryptography``) <-> kyber-py must run here; liboqs joins the
matrix where its shared library loads and is skipped with the reason otherwise.
"""

from __future__ import annotations

import itertools

import pytest

import kem

IMPLEMENTATIONS = ["openssl", "pure", "liboqs"]
PAIRS = [(a, b) for a, b in itertools.permutations(IMPLEMENTATIONS, 2)]


def _shared_params(a: str, b: str) -> list[str]:
    offered = {info.name: set(info.algorithms) for info in kem.backend_report()}
    return sorted(n for n in offered[a] & offered[b] if n.startswith("ML-KEM"))


@pytest.mark.parametrize(("keygen_side", "encaps_side"), PAIRS)
def test_mlkem_cross_implementation(keygen_side: str, encaps_side: str) -> None:
    for side in (keygen_side, encaps_side):
        info = {b.name: b for b in kem.backend_report()}[side]
        if not info.available:
            pytest.skip(f"{side} unavailable: {info.reason}")
    params = _shared_params(keygen_side, encaps_side)
    assert {"ML-KEM-768", "ML-KEM-1024"} <= set(params)
    for name in params:
        receiver = kem.get_kem(name, keygen_side)
        sender = kem.get_kem(name, encaps_side)
        for _ in range(3):
            pair = receiver.generate_keypair()
            ct, ss = sender.encapsulate(pair.public)
            assert receiver.decapsulate(pair.private, ct) == ss
            # A wrong ciphertext must not give the same secret on the receiving side.
            bad = bytes([ct[0] ^ 0x80]) + ct[1:]
            assert receiver.decapsulate(pair.private, bad) != ss


def test_openssl_and_kyber_py_agree_on_deterministic_keygen() -> None:
    seed = bytes(range(64))
    for name in ("ML-KEM-768", "ML-KEM-1024"):
        a = kem.get_kem(name, "openssl").generate_keypair(seed)
        b = kem.get_kem(name, "pure").generate_keypair(seed)
        assert a.public == b.public
