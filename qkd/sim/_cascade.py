"""Cascade error correction: interactive, vectorised along blocks, every parity counted.

Theory of operation
-------------------
Cascade (Brassard-Salvail 1993) runs passes over shuffled copies of the key. In each
pass Alice discloses the parity of every top-level block; Bob compares with his own and
runs BINARY (a bisection asking Alice for the parity of the left half, one disclosed bit
per step) in every block whose parity differs, flipping the bit he finds. A bit flipped
in pass i changes the parity of the blocks containing it in every other pass, so those
are searched again: the *cascade*.

Parameters follow "Cascade opt. (7)" of Martinez-Mateo, Pacher, Peev, Ciurana and Martin,
"Demystifying the information reconciliation protocol Cascade", QIC 15 (2015):
k1 = 2^ceil(log2(1/Q)), k2 = 4 k1, k_i ~ n/2 afterwards, 14 passes, and *sub-block
reuse*: every parity disclosed during BINARY is remembered (with the parity of its sibling,
which Bob infers from the parent), and after a flip the smallest remembered interval that
no longer matches is searched, not the whole top-level block. Already known parities are
never disclosed again.

Vectorisation: block sizes are powers of two, so every open bisection (any pass, any
level) advances one level per round trip; blocks of one pass are disjoint, so their
searches may run in parallel, and searches in different passes share each round trip
(each still discloses its own parities, all counted). Pass 1 uses the key's own
order (detections arrive in random order); pass i >= 2 uses x -> base[(a_i x + b_i) mod n]
with one uniformly random permutation ``base`` and random a_i (coprime to n), b_i derived
from a seed Alice announces: each pass is a fresh pseudo-random shuffle without
materialising 14 permutations. ``base`` is public and fixed (the restriction to [0, n) of
one permutation of [0, 2^k) drawn from a constant seed, cached per process): Cascade's
permutations are public anyway and only need to be independent of where the errors are,
and drawing a fresh 10^6-element shuffle per block cost more than a pass.

Each pass costs one gather: Alice's and Bob's bits share a byte, so one gather of the
pass order gives both parties' top-level parities. When a bisection first needs the pass,
a prefix-xor scan of that snapshot makes every interval parity two lookups (Bob's
corrected by a binary search over the bits he flipped since); late passes, which rarely
find an error, are never scanned. All open bisections of all passes and levels form three
flat arrays (pass, level, start), so a round is a fixed handful of numpy calls.

Bookkeeping per pass and level (flattened): Alice's known parity (-1 = not disclosed) and
Bob's current mismatch with it. Every flip toggles the mismatch of its ancestors in every
pass, so "which known interval no longer matches" is a lookup, not a recomputation.

This numpy engine is the fallback: with numba installed, :func:`reconcile` runs the same
protocol (byte-identical messages) with compiled local steps, see ``_cascade_jit``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qkd.sim import _cascade_jit
from qkd.sim._cascade_jit import BaseInverse, Shuffle
from qkd.sim._errors import ParameterError
from qkd.sim._estimation import binary_entropy

__all__ = ["CascadeResult", "cascade_block_sizes", "reconcile"]

Send = Callable[[str, str, bytes], bytes]


def _no_channel(sender: str, kind: str, payload: bytes) -> bytes:
    return payload


@dataclass(frozen=True, slots=True)
class CascadeResult:
    """Outcome of one Cascade run.

    ``corrected``: Bob's string after correction (uint8 0/1); ``disclosed_bits``: every
    parity Alice sent; ``rounds``: request/reply round trips; ``errors_corrected``: bits
    Bob flipped; ``block_sizes``: top-level block size per pass.
    """

    corrected: np.ndarray = field(repr=False)
    disclosed_bits: int
    rounds: int
    errors_corrected: int
    block_sizes: tuple[int, ...]

    def efficiency(self, qber: float) -> float:
        """f = disclosed / (n h(QBER)); 1 is the Shannon limit."""
        n = self.corrected.size
        if qber <= 0 or qber >= 0.5 or n == 0:
            return float("nan")
        return self.disclosed_bits / (n * binary_entropy(qber))


def cascade_block_sizes(qber_estimate: float, n: int, passes: int = 14) -> tuple[int, ...]:
    """Top-level block sizes per pass (Cascade opt. (7)); all powers of two."""
    if n <= 0:
        raise ParameterError(f"Cascade needs a non-empty key, got n={n}")
    if passes < 1:
        raise ParameterError(f"Cascade needs at least one pass, got {passes}")
    q = min(max(qber_estimate, 1e-4), 0.25)
    cap = 1 << max(1, (n - 1).bit_length())  # smallest power of two >= n
    k1 = min(1 << math.ceil(math.log2(1 / q)), cap)
    k2 = min(4 * k1, cap)
    late = min(cap, max(k2, 1 << max(1, (n // 2).bit_length() - 1)))
    sizes = [k1, k2] + [late] * (passes - 2)
    return tuple(sizes[:passes])


class _Engine:
    """Both parties' state for all passes, flattened so one round is a few numpy calls.

    Slots: for pass i and level l (interval size 2^l) the intervals of that pass start at
    ``off[i, l]`` in the flat ``known`` (Alice's parity, -1 = not disclosed) and ``mis``
    (Bob's parity xor Alice's, valid where ``known`` is) arrays. ``prefix[i, x]``: bit 0
    is the parity of Alice's first x bits in pass order, bit 1 that of Bob's when the pass
    was loaded; ``flip_keys`` (sorted, ``i * (n_pad + 1) + position``) are the bits Bob
    flipped since, so any interval parity of either party is two lookups and two binary
    searches.
    """

    def __init__(
        self,
        alice: np.ndarray,
        bob: np.ndarray,
        n: int,
        sizes: tuple[int, ...],
        shuffles: list[Shuffle | None],
        send: Send,
    ) -> None:
        n_pad = alice.size
        self.n, self.n_pad, self.width = n, n_pad, n_pad + 1
        self.sizes = sizes
        self.tops = [k.bit_length() - 1 for k in sizes]
        self.off, at = _cascade_jit.slot_offsets(self.tops, n_pad)
        self.known = np.full(at, -1, dtype=np.int8)
        self.mis = np.zeros(at, dtype=np.uint8)
        self.prefix = np.empty((len(sizes), self.width), dtype=np.uint8)
        self.prefix[:, 0] = 0
        self.flip_keys = np.zeros(0, dtype=np.int64)
        self.shuffles = shuffles
        self.mult = np.array([1 if sh is None else sh[2] for sh in shuffles], dtype=np.int64)
        self.add = np.array([0 if sh is None else sh[3] for sh in shuffles], dtype=np.int64)
        self.shuffled = np.array([sh is not None for sh in shuffles])
        self.base: np.ndarray | None = None
        self.base_inv: BaseInverse | None = None
        # Alice's bit in bit 0, Bob's in bit 1: one gather serves both parties' parities;
        # ``store_b`` is the same in ``base`` order, twice over, then the padding
        self.store = alice | (bob << 1)
        self.store_b = self.store
        for sh in shuffles:
            if sh is not None:
                self.base, self.base_inv = sh[0], sh[1]
                head = self.store[:n][self.base]
                self.store_b = np.concatenate((head, head, self.store[n:]))
                break
        self.send = send
        self.loaded = 0
        self.pending: dict[int, np.ndarray] = {}  # loaded passes not yet scanned
        self.dirty: list[np.ndarray] = []
        self.disclosed = 0
        self.rounds = 0
        self.flips = 0

    # -- index maps ----------------------------------------------------------------------
    def _doubled_index(self, i: int) -> np.ndarray:
        """(a p + b) mod n (+ n) for p < n: an index into the doubled ``base`` order.

        Position p = r C + j maps to (a j mod n) + (a C r + b mod n) < 2 n: two short
        modulo vectors and one broadcast add, no full-length reduction.
        """
        n, a, b = self.n, int(self.mult[i]), int(self.add[i])
        c = 1 << 12
        rows = -(-n // c)
        col = (a * np.arange(c, dtype=np.intp)) % n
        row = (a * c * np.arange(rows, dtype=np.intp) + b) % n
        out: np.ndarray[Any, Any] = np.empty(rows * c, dtype=np.intp)
        np.add(row[:, None], col[None, :], out=out.reshape(rows, c))
        return out[:n]

    def _to_pass(self, orig: np.ndarray, i: int) -> np.ndarray:
        """Original positions -> positions in pass i (padding maps to itself)."""
        sh = self.shuffles[i]
        if sh is None:
            return orig
        _, base_inv, a, b = sh
        n = self.n
        out = orig.copy()
        real = orig < n
        a_inv = pow(a, -1, n) if n > 1 else 0
        out[real] = ((base_inv[orig[real]].astype(np.int64) - b) * a_inv) % n
        return out

    def _to_orig(self, pid: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Positions in passes ``pid`` -> original positions (vectorised over passes)."""
        if self.base is None:
            return pos
        n = self.n
        move = self.shuffled[pid] & (pos < n)
        src = (self.mult[pid] * pos + self.add[pid]) % n
        return np.where(move, self.base[src], pos)

    # -- parities --------------------------------------------------------------------------
    def _parities(
        self, pid: np.ndarray, start: np.ndarray, length: np.ndarray | int
    ) -> tuple[np.ndarray, np.ndarray]:
        """(Alice's, Bob's current) parities of [start, start + length) in passes ``pid``.

        Alice reads bit 0 of her prefix row; Bob bit 1 of his, toggled once per bit he
        flipped inside the interval since the pass was loaded.
        """
        lo = pid * self.width + start
        hi = lo + length
        flat = self.prefix.reshape(-1)
        x = flat[hi] ^ flat[lo]
        bob = (x >> 1) & 1
        if self.flip_keys.size:
            inside = np.searchsorted(self.flip_keys, hi) - np.searchsorted(self.flip_keys, lo)
            bob ^= (inside & 1).astype(np.uint8)
        return x & 1, bob

    # -- one top-level pass ----------------------------------------------------------------
    def run_pass(self, i: int) -> None:
        n, n_pad, k, top = self.n, self.n_pad, self.sizes[i], self.tops[i]
        if self.shuffles[i] is None:
            src = self.store.copy()  # a snapshot: ``store`` follows Bob's flips
        else:
            src = np.empty(n_pad, dtype=np.uint8)
            # intp indices, no bounds check (all < 2n by construction): ~2x faster take
            np.take(self.store_b, self._doubled_index(i), out=src[:n], mode="clip")
            src[n:] = self.store_b[2 * n :]
        # Top-level parities straight from the pass-ordered bytes; the prefix scan waits
        # until a bisection needs it (late passes usually find nothing to bisect).
        self.pending[i] = src
        both = np.bitwise_xor.reduce(src.reshape(-1, k), axis=1)
        a_par, b_par = both & 1, (both >> 1) & 1
        starts = np.arange(0, n_pad, k, dtype=np.int64)
        pid = np.full(starts.size, i, dtype=np.int64)
        real = -(-n // k)  # blocks of pure padding have public parity 0
        reply = self.send("alice", "cascade-block-parities", np.packbits(a_par[:real]).tobytes())
        a_par[:real] = _cascade_jit.unpack_reply(reply, real)
        self.disclosed += real
        self.rounds += 1
        top_slots = self.off[i, top] + (starts >> top)
        self.known[top_slots] = a_par.astype(np.int8)
        self.mis[top_slots] = a_par ^ b_par
        self.loaded = i + 1
        odd = np.flatnonzero(a_par != b_par)
        if odd.size:
            self.binary(pid[odd], np.full(odd.size, top, dtype=np.int64), starts[odd])
        self._settle()

    def _ensure_prefix(self, pid: np.ndarray) -> None:
        """Scan the pass-ordered bytes (snapshots from load time) of passes ``pid``."""
        for i in np.unique(pid).tolist():
            src = self.pending.pop(i, None)
            if src is not None:
                np.bitwise_xor.accumulate(src, out=self.prefix[i, 1:])

    # -- BINARY on many intervals (any passes, any levels) in lock step --------------------
    def binary(self, pid: np.ndarray, lev: np.ndarray, st: np.ndarray) -> None:
        """Bisect every interval at once on one snapshot of Bob's string.

        Each round carries one request (Bob) and one reply (Alice) for all intervals.
        Every search ends on a genuine error; two searches may end on the same bit, so
        the found positions are de-duplicated before Bob flips them.
        """
        self._ensure_prefix(pid)
        done_pid, done_st = [pid[lev == 0]], [st[lev == 0]]
        pid, st, lev = pid[lev > 0], st[lev > 0], lev[lev > 0]
        while pid.size:
            half = np.left_shift(1, lev - 1)
            left = self.off[pid, lev - 1] + (st >> (lev - 1))
            need = np.flatnonzero(self.known[left] < 0)
            if need.size:
                self._ask_alice(pid[need], lev[need], st[need], half[need], left[need])
            parent = self.off[pid, lev] + (st >> lev)
            mis_left = self.mis[left]
            self.known[left + 1] = self.known[parent] ^ self.known[left]
            self.mis[left + 1] = self.mis[parent] ^ mis_left
            st = np.where(mis_left == 1, st, st + half)
            lev = lev - 1
            fin = lev == 0
            if fin.any():
                done_pid.append(pid[fin])
                done_st.append(st[fin])
                keep = ~fin
                pid, lev, st = pid[keep], lev[keep], st[keep]
        found = np.unique(self._to_orig(np.concatenate(done_pid), np.concatenate(done_st)))
        self._flip(found)
        self.flips += int(found.size)
        _cascade_jit.check_converged(self.flips, self.n)
        self._toggle(found)
        self.dirty.append(found)

    def _ask_alice(
        self, pid: np.ndarray, lev: np.ndarray, st: np.ndarray, half: np.ndarray, slots: np.ndarray
    ) -> None:
        """One round trip: Bob names the unknown left halves, Alice returns their parities."""
        request = np.empty(st.size, dtype=[("start", "<u4"), ("pass", "u1"), ("level", "u1")])
        request["start"], request["pass"], request["level"] = st, pid, lev - 1
        self.send("bob", "cascade-request", request.tobytes())
        a_par, b_par = self._parities(pid, st, half)
        reply = self.send("alice", "cascade-parities", np.packbits(a_par).tobytes())
        a_rx = _cascade_jit.unpack_reply(reply, int(st.size))
        self.disclosed += int(st.size)
        self.rounds += 1
        self.known[slots] = a_rx.astype(np.int8)
        self.mis[slots] = b_par ^ a_rx

    # -- Bob's flips ------------------------------------------------------------------------
    def _flip(self, found: np.ndarray) -> None:
        """Bob flips the bits at ``found`` (original order) in both stores."""
        n = self.n
        self.store[found] ^= 2
        if self.base_inv is not None:
            at = self.base_inv[found[found < n]]
            self.store_b[at] ^= 2
            self.store_b[at + n] ^= 2
            self.store_b[found[found >= n] + n] ^= 2

    def _toggle(self, found: np.ndarray) -> None:
        """Flipped bits toggle the mismatch of all their ancestors in every loaded pass."""
        slots, keys = [], []
        for i in range(self.loaded):
            pos = self._to_pass(found, i)
            levels = np.arange(self.tops[i] + 1)
            slots.append((self.off[i, levels, None] + (pos[None, :] >> levels[:, None])).ravel())
            keys.append(i * self.width + pos)
        # ``mis`` is only read where Alice's parity is known (it is set afresh when a
        # parity becomes known), so only those ancestors are toggled
        flat = np.concatenate(slots)
        # an odd number of flips below a slot toggles it (np.unique beats ufunc.at 8x)
        slot, count = np.unique(flat[self.known[flat] >= 0], return_counts=True)
        self.mis[slot[(count & 1) == 1]] ^= 1
        merged = np.concatenate((self.flip_keys, *keys))
        merged.sort(kind="stable")  # two sorted runs and a few short ones: a merge
        self.flip_keys = merged

    def bob_string(self) -> np.ndarray:
        return (self.store[: self.n] >> 1) & 1

    # -- the cascade: re-search known intervals that stopped matching ----------------------
    def _settle(self) -> None:
        while self.dirty:
            orig = np.unique(np.concatenate(self.dirty))
            self.dirty = []
            pids, levs, starts = [], [], []
            for i in range(self.loaded):
                pos = self._to_pass(orig, i)
                levels = np.arange(self.tops[i] + 1)[:, None]
                slots = self.off[i, levels] + (pos[None, :] >> levels)
                bad = (self.known[slots] >= 0) & (self.mis[slots] == 1)
                has = bad.any(axis=0)
                if not has.any():
                    continue
                lev = np.argmax(bad, axis=0)[has]
                key = np.unique(((pos[has] >> lev) << lev) * 64 + lev)
                pids.append(np.full(key.size, i, dtype=np.int64))
                levs.append(key % 64)
                starts.append(key // 64)
            if pids:
                self.binary(np.concatenate(pids), np.concatenate(levs), np.concatenate(starts))


_PUBLIC_BASE_SEED = 0x43A5CADE  # a published constant: the base order is public


@functools.lru_cache(maxsize=2)
def _public_permutation(size: int) -> np.ndarray:
    perm = np.arange(size, dtype=np.int32 if size <= 1 << 31 else np.int64)
    np.random.default_rng(_PUBLIC_BASE_SEED).shuffle(perm)
    perm.setflags(write=False)
    return perm


@functools.lru_cache(maxsize=2)
def _public_inverse(size: int) -> np.ndarray:
    perm = _public_permutation(size)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(size, dtype=perm.dtype)
    inv.setflags(write=False)
    return inv


@functools.lru_cache(maxsize=4)
def _public_base(n: int) -> tuple[np.ndarray, BaseInverse]:
    """A uniformly random permutation of [0, n) (and its inverse), public and fixed.

    The elements below n of a uniform permutation of [0, 2^k), in order, are a uniform
    permutation of [0, n): one filter pass instead of a fresh shuffle per block. The
    inverse is looked up on demand (:class:`BaseInverse`); only flipped bits need it.
    """
    size = 1 << max(4, (n - 1).bit_length())
    full = _public_permutation(size)
    if _cascade_jit.available():  # one pass instead of two
        base, skipped = _cascade_jit.restrict_permutation(full, n)
    else:
        keep = full < n
        base, skipped = full[keep], np.flatnonzero(~keep)
    base.setflags(write=False)
    skipped.setflags(write=False)
    return base, BaseInverse(_public_inverse(size), skipped)


def _shuffles(seed: bytes, n: int, passes: int) -> list[Shuffle | None]:
    rng = np.random.default_rng(int.from_bytes(seed, "big"))
    base, base_inv = _public_base(n)
    out: list[Shuffle | None] = [None]
    for _ in range(passes - 1):
        while True:
            a = int(rng.integers(1, max(2, n)))
            if math.gcd(a, n) == 1:
                break
        out.append((base, base_inv, a, int(rng.integers(0, n))))
    return out


def reconcile(
    alice: np.ndarray,
    bob: np.ndarray,
    *,
    qber_estimate: float,
    rng: np.random.Generator,
    passes: int = 14,
    send: Send | None = None,
    jit: bool | None = None,
) -> CascadeResult:
    """Correct Bob's string towards Alice's with Cascade; return Bob's corrected copy.

    ``send(sender, kind, payload) -> payload`` carries every message (an
    :class:`~qkd.sim.AuthenticatedChannel`'s ``send``); Alice's parities are read back
    from what it delivers. ``rng`` draws the public shuffle seed Alice announces.
    ``jit``: use the compiled engine (default: whenever numba is importable); both
    engines send byte-identical messages and return identical results.
    """
    if alice.shape != bob.shape or alice.ndim != 1:
        raise ParameterError("Alice's and Bob's strings must be 1-D and of equal length")
    n = int(alice.size)
    if n == 0:
        return CascadeResult(bob.copy(), 0, 0, 0, ())
    send = send or _no_channel
    sizes = cascade_block_sizes(qber_estimate, n, passes)
    n_pad = -(-n // max(sizes)) * max(sizes)
    a = np.zeros(n_pad, dtype=np.uint8)
    b = np.zeros(n_pad, dtype=np.uint8)
    a[:n], b[:n] = alice, bob
    seed = send("alice", "cascade-seed", rng.bytes(8))
    use_jit = _cascade_jit.available() if jit is None else jit
    if use_jit and not _cascade_jit.available():
        raise ParameterError("the compiled Cascade engine needs numba (pip install numba)")
    engine_cls = _cascade_jit.JitEngine if use_jit else _Engine
    engine = engine_cls(a, b, n, sizes, _shuffles(seed, n, passes), send)
    for i in range(len(sizes)):
        engine.run_pass(i)
    return CascadeResult(
        corrected=engine.bob_string(),
        disclosed_bits=engine.disclosed,
        rounds=engine.rounds,
        errors_corrected=engine.flips,
        block_sizes=sizes,
    )
