"""Toeplitz hashing, verification tags and Cascade."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest

from qkd.sim import (
    PostProcessingParams,
    ReconciliationError,
    binary_entropy,
    reconcile,
    toeplitz_hash,
    toeplitz_hash_direct,
    verification_collision_bound,
    verification_tag,
)
from qkd.sim._cascade import _shuffles
from qkd.sim._cascade_reference import reconcile_reference
from qkd.sim._hashing import (
    _round_to_bits,
    _toeplitz_hash_single_fft,
    toeplitz_hash_many,
    toeplitz_hash_pair,
)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (7, 3), (64, 64), (100, 37), (513, 200), (2000, 1)])
def test_toeplitz_fft_equals_matrix_product(n: int, m: int) -> None:
    rng = np.random.default_rng(n * 1000 + m)
    for _ in range(5):
        x = rng.integers(0, 2, n, dtype=np.uint8)
        seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
        assert np.array_equal(toeplitz_hash(x, seed, m), toeplitz_hash_direct(x, seed, m))


def test_toeplitz_large_input_is_linear() -> None:
    rng = np.random.default_rng(3)
    n, m = 1 << 20, 1 << 19
    x, y = (rng.integers(0, 2, n, dtype=np.uint8) for _ in range(2))
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    assert np.array_equal(
        toeplitz_hash(x ^ y, seed, m), toeplitz_hash(x, seed, m) ^ toeplitz_hash(y, seed, m)
    )


def test_verification_collision_bound() -> None:
    """8 ceil(L/16) / 2^106 with L = packed bytes + the 8-byte length (Bernstein 2005)."""
    assert verification_collision_bound(0) == 8 / 2.0**106  # L = 8: one 16-byte block
    assert verification_collision_bound(64) == 8 / 2.0**106  # L = 16
    assert verification_collision_bound(65) == 16 / 2.0**106  # L = 17
    assert verification_collision_bound(1 << 20) == 8 * 8193 / 2.0**106
    assert verification_collision_bound(10**16) < PostProcessingParams().eps_cor


def test_verification_tag_sees_one_bit() -> None:
    rng = np.random.default_rng(1)
    bits = rng.integers(0, 2, 10_001, dtype=np.uint8)
    key = rng.bytes(32)
    other = bits.copy()
    other[5000] ^= 1
    assert verification_tag(bits, key) == verification_tag(bits.copy(), key)
    assert verification_tag(bits, key) != verification_tag(other, key)


def _noisy_pair(rng: np.random.Generator, n: int, errors: int) -> tuple[np.ndarray, np.ndarray]:
    """Alice's random n bits and Bob's copy with ``errors`` bits flipped at random places."""
    alice = rng.integers(0, 2, n, dtype=np.uint8)
    bob = alice.copy()
    bob[rng.choice(n, errors, replace=False)] ^= 1
    return alice, bob


@pytest.mark.parametrize("qber", [0.01, 0.02, 0.03, 0.05, 0.08])
def test_cascade_corrects_everything(qber: float) -> None:
    """Zero residual errors on every block; efficiency measured on 2^16-bit blocks."""
    effs = []
    for seed in range(8):
        rng = np.random.default_rng(seed + int(qber * 1000))
        n = 1 << 16 if seed < 3 else 1 << 13
        alice, bob = _noisy_pair(rng, n, round(qber * n))
        res = reconcile(alice, bob, qber_estimate=qber, rng=rng)
        assert np.array_equal(res.corrected, alice), f"residual errors, seed {seed}"
        assert res.errors_corrected == round(qber * n)
        if n == 1 << 16:
            effs.append(res.disclosed_bits / (n * binary_entropy(qber)))
    efficiency = float(np.mean(effs))
    print(f"Cascade QBER {qber:.2f}: f = {efficiency:.3f} (n = 2^16, 3 blocks)")
    assert efficiency < (1.10 if qber <= 0.05 else 1.15)


def test_cascade_no_errors_discloses_only_block_parities() -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, 5000, dtype=np.uint8)
    res = reconcile(bits, bits.copy(), qber_estimate=0.02, rng=rng, passes=4)
    expected = sum(math.ceil(5000 / k) for k in res.block_sizes)
    assert res.disclosed_bits == expected and res.errors_corrected == 0


def test_cascade_reads_parities_from_the_channel() -> None:
    """A channel that corrupts Alice's parities breaks correction: the data really flows."""
    rng = np.random.default_rng(1)
    alice, bob = _noisy_pair(rng, 4096, 100)

    def liar(sender: str, kind: str, payload: bytes) -> bytes:
        if kind == "cascade-block-parities":
            return bytes(len(payload))  # all parities "0"
        return payload

    try:
        res = reconcile(alice, bob, qber_estimate=0.025, rng=rng, send=liar)
    except ReconciliationError:
        return  # diverged: detected
    assert not np.array_equal(res.corrected, alice)


def test_cascade_large_frame() -> None:
    """A 2^20-bit frame (shuffle index arithmetic beyond 32 bits) corrects fully."""
    rng = np.random.default_rng(42)
    n = (1 << 20) - 12345
    alice, bob = _noisy_pair(rng, n, n // 50)
    res = reconcile(alice, bob, qber_estimate=0.02, rng=rng)
    assert np.array_equal(res.corrected, alice)
    assert res.efficiency(0.02) < 1.10


@pytest.mark.parametrize(
    ("n", "qber"), [(5000, 0.02), (1 << 14, 0.01), (40_000, 0.05), (100_001, 0.08)]
)
def test_cascade_matches_the_reference_transcript(n: int, qber: float) -> None:
    """The flattened prefix-parity engine discloses exactly what the first version did."""
    alice, bob = _noisy_pair(np.random.default_rng(n), n, round(qber * n))
    fast = reconcile(alice, bob, qber_estimate=qber, rng=np.random.default_rng(5))
    slow = reconcile_reference(
        alice, bob, qber_estimate=qber, rng=np.random.default_rng(5), shuffle_fn=_shuffles
    )
    assert np.array_equal(fast.corrected, alice) and np.array_equal(slow.corrected, alice)
    assert (fast.disclosed_bits, fast.rounds, fast.errors_corrected) == (
        slow.disclosed_bits,
        slow.rounds,
        slow.errors_corrected,
    )


@pytest.mark.parametrize(
    ("n", "m"), [(1, 40), (300, 2000), (70_000, 3), (70_000, 70_000), (140_001, 9_000)]
)
def test_toeplitz_tiles_equal_single_transform(n: int, m: int) -> None:
    """Multi-tile products (B = 2^16) equal the direct product or the one-FFT method."""
    rng = np.random.default_rng(n + m)
    x, y = (rng.integers(0, 2, n, dtype=np.uint8) for _ in range(2))
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    hx, hy = toeplitz_hash_many([x, y], seed, m)
    slow = toeplitz_hash_direct if n * m <= 1 << 22 else _toeplitz_hash_single_fft
    assert np.array_equal(hx, slow(x, seed, m)) and np.array_equal(hy, slow(y, seed, m))
    assert np.array_equal(hx, toeplitz_hash(x, seed, m))


@pytest.mark.parametrize("differing", [0, 1, 5, 64, 65, 300])
def test_toeplitz_pair_equals_separate_hashes(differing: int) -> None:
    """Bob's hash by linearity (few differing bits) or in full (many) is exact."""
    rng = np.random.default_rng(differing)
    n, m = 3000, 1200
    alice, bob = _noisy_pair(rng, n, differing)
    seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
    hashed_a, hashed_b = toeplitz_hash_pair(alice, bob, seed, m)
    assert np.array_equal(hashed_a, toeplitz_hash_direct(alice, seed, m))
    assert np.array_equal(hashed_b, toeplitz_hash_direct(bob, seed, m))


@pytest.mark.parametrize(
    ("n", "qber", "passes"),
    [(1, 0.02, 14), (300, 0.03, 14), (5000, 0.02, 4), (40_000, 0.05, 14), (100_001, 0.08, 14)],
)
def test_cascade_compiled_engine_sends_the_same_transcript(
    n: int, qber: float, passes: int
) -> None:
    """numba and numpy engines: byte-identical messages, same corrections and counts."""
    pytest.importorskip("numba", reason="the compiled Cascade engine needs numba")
    from qkd.sim import _cascade_jit

    if not _cascade_jit.available():
        pytest.skip("numba disabled by HYBRIDCHAN_NO_NUMBA")
    alice, bob = _noisy_pair(np.random.default_rng(n + passes), n, round(qber * n))
    out = {}
    for jit in (False, True):
        log: list[tuple[str, str, bytes]] = []

        def send(sender: str, kind: str, payload: bytes, log: list = log) -> bytes:
            log.append((sender, kind, payload))
            return payload

        res = reconcile(
            alice,
            bob,
            qber_estimate=qber,
            rng=np.random.default_rng(9),
            passes=passes,
            send=send,
            jit=jit,
        )
        out[jit] = (res, log)
    (slow, slow_log), (fast, fast_log) = out[False], out[True]
    assert np.array_equal(fast.corrected, alice) and np.array_equal(slow.corrected, alice)
    assert (fast.disclosed_bits, fast.rounds, fast.errors_corrected) == (
        slow.disclosed_bits,
        slow.rounds,
        slow.errors_corrected,
    )
    assert fast_log == slow_log


@pytest.mark.parametrize("kind", ["cascade-block-parities", "cascade-parities"])
@pytest.mark.parametrize("jit", [False, True])
def test_cascade_rejects_a_short_reply(jit: bool, kind: str) -> None:
    """A truncated parity reply fails closed (typed error) in both engines."""
    if jit:
        pytest.importorskip("numba", reason="the compiled Cascade engine needs numba")
        from qkd.sim import _cascade_jit

        if not _cascade_jit.available():
            pytest.skip("numba disabled by HYBRIDCHAN_NO_NUMBA")
    rng = np.random.default_rng(2)
    alice, bob = _noisy_pair(rng, 4096, 80)

    def truncate(sender: str, what: str, payload: bytes) -> bytes:
        return payload[:-1] if what == kind else payload

    with pytest.raises(ReconciliationError, match="altered the message"):
        reconcile(alice, bob, qber_estimate=0.02, rng=rng, send=truncate, jit=jit)


def test_no_numba_switch_selects_the_numpy_engine() -> None:
    """HYBRIDCHAN_NO_NUMBA=1 forces the pure-numpy path (and it still corrects)."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np; from qkd.sim import _cascade_jit, reconcile;"
        "assert not _cascade_jit.available();"
        "r = np.random.default_rng(0); a = r.integers(0, 2, 3000, dtype=np.uint8);"
        "b = a.copy(); b[:30] ^= 1;"
        "assert np.array_equal(reconcile(a, b, qber_estimate=0.01, rng=r).corrected, a)"
    )
    env = dict(os.environ, HYBRIDCHAN_NO_NUMBA="1")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_toeplitz_scratch_reuse_across_sizes() -> None:
    """Tiles and spectra live in per-thread scratch: hashes of other sizes in between
    (fewer tiles, a shorter last tile, more output tiles) leave every result exact."""
    rng = np.random.default_rng(11)
    sizes = [(200_000, 60_000), (70_001, 9_000), (140_000, 70_000), (200_000, 60_000)]
    for n, m in sizes:
        x = rng.integers(0, 2, n, dtype=np.uint8)
        seed = rng.integers(0, 2, n + m - 1, dtype=np.uint8)
        assert np.array_equal(toeplitz_hash(x, seed, m), _toeplitz_hash_single_fft(x, seed, m))


def test_round_to_bits_parity_and_refusal() -> None:
    """Parity of the nearest integer (negative values too); > 0.25 off an integer fails."""
    values = np.array([-3.1, -0.2, 0.0, 0.9, 2.2, 7.0, 1e6 + 1.1, 2.0**40 + 0.1])
    expected = np.array([1, 0, 0, 1, 0, 1, 1, 0], dtype=np.uint8)
    assert np.array_equal(_round_to_bits(values.copy()), expected)
    out = np.empty(values.size)
    assert np.array_equal(_round_to_bits(values.copy(), out), expected)
    with pytest.raises(ArithmeticError, match="rounding error"):
        _round_to_bits(np.array([1.0, 2.3]))


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("n", [1, 17, 1000, 65_537, 300_001])
def test_public_base_inverse_is_exact(jit: bool, n: int) -> None:
    """The on-demand inverse of the public base order equals the materialised one."""
    from qkd.sim import _cascade, _cascade_jit

    if jit and not _cascade_jit.available():
        pytest.skip("numba disabled by HYBRIDCHAN_NO_NUMBA or not installed")
    with mock.patch.object(_cascade_jit, "available", lambda: jit):
        base, inverse = _cascade._public_base.__wrapped__(n)
    assert np.array_equal(np.sort(base), np.arange(n))
    expected = np.empty(n, dtype=np.int64)
    expected[base] = np.arange(n)
    values = np.random.default_rng(n).permutation(n)
    assert np.array_equal(inverse[values], expected[values])
