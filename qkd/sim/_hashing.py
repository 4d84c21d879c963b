"""Universal hashing: Toeplitz privacy amplification (FFT) and verification tags.

Toeplitz hashing: an m x n Toeplitz matrix T over GF(2), T[i, j] = t[i - j + n - 1], is
fixed by a seed t of n + m - 1 random bits and is a 2-universal family, so by the
leftover hash lemma it extracts m nearly uniform bits (Krawczyk 1994; Tomamichel et al.
2011). T x is the middle of the integer convolution t * x, taken mod 2; computing it with
a real FFT costs O((n + m) log(n + m)) instead of O(n m).

Verification: Poly1305 evaluated with a fresh public random key is an almost-universal
hash: two different strings of L bytes collide with probability <= 8 ceil(L/16) / 2^106
(Bernstein 2005). Alice sends her 128-bit tag; Bob compares it with his.
"""

from __future__ import annotations

import hmac
import math

import numpy as np
from cryptography.hazmat.primitives.poly1305 import Poly1305

from qkd.sim._errors import ParameterError

__all__ = [
    "VERIFY_TAG_BITS",
    "toeplitz_hash",
    "toeplitz_hash_direct",
    "verification_collision_bound",
    "verification_tag",
    "verify_tags",
]

VERIFY_TAG_BITS = 128
_MAX_FFT_BITS = 1 << 26  # float64 FFT rounding stays far below 0.5 up to here


def _fast_length(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n: pocketfft is fastest on 5-smooth sizes."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < 2 * n:
        p35 = p5
        while p35 < 2 * n:
            length = p35
            while length < n:
                length *= 2
            best = min(best, length)
            p35 *= 3
        p5 *= 5
    return best


def _check_inputs(bits: np.ndarray, seed: np.ndarray, out_len: int) -> int:
    n = int(bits.size)
    if out_len < 0:
        raise ParameterError(f"output length must be >= 0, got {out_len}")
    if seed.size != n + out_len - 1 and out_len > 0:
        raise ParameterError(
            f"Toeplitz seed must have n + m - 1 = {n + out_len - 1} bits, got {seed.size}"
        )
    if n + out_len > _MAX_FFT_BITS:
        raise ParameterError(f"Toeplitz input too long ({n} + {out_len} bits); split the block")
    return n


def toeplitz_hash(bits: np.ndarray, seed: np.ndarray, out_len: int) -> np.ndarray:
    """T x over GF(2) for the Toeplitz matrix with ``seed``; bits are uint8 0/1 arrays."""
    n = _check_inputs(bits, seed, out_len)
    if out_len == 0 or n == 0:
        return np.zeros(out_len, dtype=np.uint8)
    size = _fast_length(n + out_len - 1)
    conv = np.fft.irfft(
        np.fft.rfft(seed.astype(np.float64), size) * np.fft.rfft(bits.astype(np.float64), size),
        size,
    )
    window = conv[n - 1 : n - 1 + out_len]
    return (np.rint(window).astype(np.int64) & 1).astype(np.uint8)


def toeplitz_hash_direct(bits: np.ndarray, seed: np.ndarray, out_len: int) -> np.ndarray:
    """The same product with an explicit matrix: O(n m) memory, for tests only."""
    n = _check_inputs(bits, seed, out_len)
    i = np.arange(out_len)[:, None]
    j = np.arange(n)[None, :]
    matrix = seed[i - j + n - 1].astype(np.int64)
    return ((matrix @ bits.astype(np.int64)) & 1).astype(np.uint8)


def verification_tag(bits: np.ndarray, key: bytes) -> bytes:
    """Poly1305 of the packed bit string and its length under a one-time public key."""
    if len(key) != 32:
        raise ParameterError("verification key must be 32 bytes")
    data = np.packbits(bits).tobytes() + int(bits.size).to_bytes(8, "big")
    return Poly1305.generate_tag(key, data)


def verify_tags(tag_alice: bytes, tag_bob: bytes) -> bool:
    return hmac.compare_digest(tag_alice, tag_bob)


def verification_collision_bound(n_bits: int) -> float:
    """Probability that different corrected strings still pass verification."""
    length = (n_bits + 7) // 8 + 8
    return 8 * math.ceil(length / 16) / 2.0**106
