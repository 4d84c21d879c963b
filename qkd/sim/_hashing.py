"""Universal hashing: Toeplitz privacy amplification (FFT) and verification tags.

Toeplitz hashing: an m x n Toeplitz matrix T over GF(2), T[i, j] = t[i - j + n - 1], is
fixed by a seed t of n + m - 1 random bits and is a 2-universal family, so by the
leftover hash lemma it extracts m nearly uniform bits (Krawczyk 1994; Tomamichel et al.
2011). T x is the middle of the integer convolution t * x, taken mod 2; computing it with
a real FFT costs O((n + m) log(n + m)) instead of O(n m).

The product is evaluated block-wise (the matrix is still the one n x m Toeplitz matrix):
with B x B tiles, tile (I, J) is itself Toeplitz and depends only on I - J, so
T x = sum_J S_{I-J} x_J, each term a 2B-point cyclic convolution. All tiles' spectra come
from one batched rfft, which stays in cache and runs several times faster per point than
one transform of n + m points; the seed spectra are shared by every string hashed with
the same seed (Alice's and Bob's). Every output is checked to be within 0.25 of an
integer before rounding, so float64 rounding can never flip a bit silently.

Verification: Poly1305 evaluated with a fresh public random key is an almost-universal
hash: two different strings of L bytes collide with probability <= 8 ceil(L/16) / 2^106
(Bernstein 2005). Alice sends her 128-bit tag; Bob compares it with his.
"""

from __future__ import annotations

import hmac
import threading

import numpy as np
from cryptography.hazmat.primitives.poly1305 import Poly1305

from qkd.sim._errors import ParameterError

__all__ = [
    "VERIFY_TAG_BITS",
    "toeplitz_hash",
    "toeplitz_hash_direct",
    "toeplitz_hash_many",
    "toeplitz_hash_pair",
    "verification_collision_bound",
    "verification_tag",
    "verify_tags",
]

VERIFY_TAG_BITS = 128


def verification_collision_bound(n_bits: int) -> float:
    """Probability that two different reconciled strings of ``n_bits`` get the same tag.

    The tagged message is the packed string plus its 8-byte length, L bytes in all;
    Poly1305 under a uniformly random key is 8 ceil(L/16) / 2^106 almost-universal
    (Bernstein 2005). This is the correctness error of the verification step, so it must
    not exceed ``eps_cor``.
    """
    if n_bits < 0:
        raise ParameterError(f"string length must be >= 0, got {n_bits}")
    length = (n_bits + 7) // 8 + 8
    return 8 * -(-length // 16) / 2.0**106


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
    return toeplitz_hash_many([bits], seed, out_len)[0]


def _tile_size(n: int, m: int) -> int:
    """Tile edge B: 2^16 balances batched FFTs (n + m) against tile products n m / B."""
    return min(1 << 16, max(16, 1 << max(0, (max(n, m) - 1).bit_length())))


def toeplitz_hash_many(
    strings: list[np.ndarray], seed: np.ndarray, out_len: int
) -> list[np.ndarray]:
    """:func:`toeplitz_hash` of several equal-length strings under one seed.

    The seed's tile spectra are computed once: Alice and Bob hash with the same public
    seed, so the simulator transforms it once for both. Tiles and spectra live in
    per-thread scratch buffers (see :func:`_scratch`).
    """
    if not strings:
        return []
    n = _check_inputs(strings[0], seed, out_len)
    for bits in strings[1:]:
        _check_inputs(bits, seed, out_len)
    if out_len == 0 or n == 0:
        return [np.zeros(out_len, dtype=np.uint8) for _ in strings]
    b = _tile_size(n, out_len)
    n_in, n_out = -(-n // b), -(-out_len // b)
    if n_in * n_out > _MAX_TILE_PRODUCTS:  # tile products outweigh the cache gain
        return [_toeplitz_hash_single_fft(bits, seed, out_len) for bits in strings]
    # seed tile d (I - J = d, -(n_in - 1) <= d < n_out) holds t[d B + n - B + w], w < 2B;
    # its last sample only reaches outputs the middle product discards, so it may be
    # seed (no zeroing needed)
    lo = -(n_in - 1) * b + n - b
    span = (n_in + n_out - 1) * b + b
    padded = np.zeros(span + b, dtype=np.uint8)
    first, last = max(lo, 0), min(lo + span + b, seed.size)
    padded[first - lo : last - lo] = seed[first:last]
    rows = n_in + n_out - 1
    tiles = _scratch("seed_tiles", rows, 2 * b, np.float64)
    np.copyto(tiles, np.lib.stride_tricks.as_strided(padded, shape=(rows, 2 * b), strides=(b, 1)))
    seed_spec = _scratch("seed_spec", rows, b + 1, np.complex128)
    np.fft.rfft(tiles, axis=1, out=seed_spec)  # row r is tile d = r - (n_in - 1)
    out = []
    for bits in strings:
        x = _scratch("x_tiles", n_in, 2 * b, np.float64)
        whole = n // b
        x[:whole, :b] = bits[: whole * b].reshape(whole, b)  # tile J, then B zeros
        if whole < n_in:
            x[whole, : n - whole * b] = bits[whole * b :]
            x[whole, n - whole * b :] = 0.0
        x[:, b:] = 0.0
        x_spec = _scratch("x_spec", n_in, b + 1, np.complex128)
        np.fft.rfft(x, axis=1, out=x_spec)
        acc = _scratch("acc", n_out, b + 1, np.complex128)
        for i in range(n_out):
            # tile J pairs with seed tile I - J: rows i + n_in - 1 - J, a reversed slice
            np.einsum("jf,jf->f", x_spec, seed_spec[i : i + n_in][::-1], out=acc[i])
        conv = _scratch("conv", n_out, 2 * b, np.float64)
        for i in range(n_out):  # row by row: a batched irfft copies all of ``acc`` first
            np.fft.irfft(acc[i], 2 * b, out=conv[i])
        middle = conv[:, b - 1 : 2 * b - 1]  # output tile I (its tail past m is checked too)
        rounded = _scratch("rounded", n_out, b, np.float64)
        out.append(_round_to_bits(middle, rounded).reshape(-1)[:out_len].copy())
    return out


_SCRATCH = threading.local()


def _scratch(name: str, rows: int, cols: int, dtype: type) -> np.ndarray:
    """A reusable ``rows x cols`` work array of this thread (contents undefined).

    Why: one 1 Mbit block's tiles and spectra are ~70 MB; arrays that size are fresh
    mmap pages on every call, and faulting them in (kernel time) cost ~20 of ~70 ms per
    hash. Kept per thread, grown on demand, one array per name.
    """
    bufs: dict[str, np.ndarray] = _SCRATCH.__dict__.setdefault("bufs", {})
    buf = bufs.get(name)
    if buf is None or buf.dtype != dtype or buf.shape[1] != cols or buf.shape[0] < rows:
        buf = bufs[name] = np.empty((rows, cols), dtype=dtype)
    return buf[:rows]


_SPARSE_COLUMNS = 64
_MAX_TILE_PRODUCTS = 80  # measured: tiles win ~1.7x at 15 x 4, break even near 15 x 7


def toeplitz_hash_pair(
    alice: np.ndarray, bob: np.ndarray, seed: np.ndarray, out_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Alice's and Bob's hashes under one seed, bit-exact, Bob's by linearity.

    T b = T a xor T (a xor b), and T d for a d with few ones is the xor of those columns
    of T (column j is ``seed[n - 1 - j : n - 1 - j + m]``). After verification a xor b is
    zero, so the simulator transforms one string instead of two; with more than
    ``_SPARSE_COLUMNS`` differing bits it hashes Bob's string in full.
    """
    n = _check_inputs(alice, seed, out_len)
    _check_inputs(bob, seed, out_len)
    if alice.shape != bob.shape:
        raise ParameterError("Alice's and Bob's strings must have the same length")
    diff = np.flatnonzero(alice != bob)
    if diff.size > _SPARSE_COLUMNS:
        hashed_a, hashed_b = toeplitz_hash_many([alice, bob], seed, out_len)
        return hashed_a, hashed_b
    hashed_a = toeplitz_hash(alice, seed, out_len)
    hashed_b = hashed_a.copy()
    for j in diff.tolist():
        hashed_b ^= seed[n - 1 - j : n - 1 - j + out_len]
    return hashed_a, hashed_b


def _toeplitz_hash_single_fft(bits: np.ndarray, seed: np.ndarray, out_len: int) -> np.ndarray:
    """One n + m point transform per string: the previous method (benchmark baseline),
    still used where the tiles' products would cost more (m comparable to n)."""
    n = _check_inputs(bits, seed, out_len)
    if out_len == 0 or n == 0:
        return np.zeros(out_len, dtype=np.uint8)
    size = _fast_length(n + out_len - 1)
    conv = np.fft.irfft(
        np.fft.rfft(seed.astype(np.float64), size) * np.fft.rfft(bits.astype(np.float64), size),
        size,
    )
    return _round_to_bits(conv[n - 1 : n - 1 + out_len])


def _round_to_bits(conv: np.ndarray, rounded: np.ndarray | None = None) -> np.ndarray:
    """Nearest integers mod 2 (uint8, shaped like ``conv``), refusing any output farther
    than 0.25 from an integer.

    ``conv`` is scratch: it is overwritten with the rounding error; ``rounded`` (same
    shape, float64) receives the rounded values when given.
    """
    rounded = np.rint(conv, out=rounded)
    if conv.size:
        np.subtract(conv, rounded, out=conv)
        if float(np.max(np.abs(conv, out=conv))) > 0.25:
            raise ArithmeticError("Toeplitz FFT rounding error too large; split the block")
    # v mod 2 = v - 2 floor(v / 2), exact for these integers; computed in place because
    # numpy's float remainder is ~20x slower than these three passes
    half = np.floor(np.multiply(rounded, 0.5, out=conv), out=conv)
    return np.subtract(rounded, np.add(half, half, out=half), out=rounded).astype(np.uint8)


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
