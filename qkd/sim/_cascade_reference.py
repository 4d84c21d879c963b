"""The first vectorised Cascade, kept unchanged as a reference and benchmark baseline.

``reconcile_reference`` must give exactly the transcript of :func:`qkd.sim.reconcile`
(same parities, rounds and flips) when given the same ``shuffle_fn``; tests compare the
two. By default it draws a fresh ``base`` shuffle per call, as it originally did. It
gathers every half-block it bisects, which the prefix-parity version avoids.

Cascade error correction: interactive, vectorised along blocks, every parity counted.

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

Vectorisation: block sizes are powers of two, so all blocks of one pass have one size and
all bisections at one level advance in lock step, one numpy gather per step. Blocks of
one pass are disjoint, so their searches may run in parallel. Pass 1 uses the key's own
order (detections arrive in random order); pass i >= 2 uses x -> base[(a_i x + b_i) mod n]
with one uniformly random permutation ``base`` and random a_i (coprime to n), b_i, all
derived from a seed Alice announces: each pass is a fresh pseudo-random shuffle without
materialising 14 permutations.

Bookkeeping per pass and level (flattened): Alice's known parity (-1 = not disclosed) and
Bob's current mismatch with it. Every flip toggles the mismatch of its ancestors in every
pass, so "which known interval no longer matches" is a lookup, not a recomputation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from qkd.sim._cascade import CascadeResult, Send, _no_channel, cascade_block_sizes
from qkd.sim._errors import ParameterError, ReconciliationError

__all__ = ["reconcile_reference"]


class _Pass:
    """One shuffle of the key with its per-level known parities and Bob's mismatches."""

    def __init__(
        self, k: int, n: int, n_pad: int, shuffle: tuple[np.ndarray, np.ndarray, int, int] | None
    ):
        self.k = k
        self.top = k.bit_length() - 1
        self.n, self.n_pad = n, n_pad
        sizes = [n_pad >> lev for lev in range(self.top + 1)]
        self.offsets = np.concatenate(([0], np.cumsum(sizes)))[:-1].astype(np.int64)
        total = int(sum(sizes))
        self.known = np.full(total, -1, dtype=np.int8)  # Alice's parity, -1 = unknown
        self.mis = np.zeros(total, dtype=np.uint8)  # Bob's parity xor Alice's
        self._shuffle = shuffle

    def source_index(self, pos: np.ndarray) -> np.ndarray:
        """Pass position -> index into this pass's source arrays.

        The source is the original string for the unshuffled pass and the string in
        ``base`` order for shuffled ones: gathering one byte per bit from a small uint8
        array is several times faster than composing with the int64 ``base`` table.
        """
        if self._shuffle is None:
            return pos
        _, _, a, b = self._shuffle
        return np.where(pos < self.n, (a * pos + b) % self.n, pos)

    def source_index_all(self) -> np.ndarray:
        """``source_index(arange(n_pad))`` without a full-length modulo.

        Position p = i C + j maps to (a j mod n) + (a C i + b mod n), minus n if that
        reaches n: two short modulo vectors and one broadcast add.
        """
        if self._shuffle is None:
            return np.arange(self.n_pad, dtype=np.int64)
        _, _, a, b = self._shuffle
        n = self.n
        c = 1 << 12
        rows = -(-n // c)
        dtype: Any = np.uint32 if 2 * n < 1 << 32 else np.int64
        col = ((a * np.arange(c, dtype=np.int64)) % n).astype(dtype)
        row = ((a * c * np.arange(rows, dtype=np.int64) + b) % n).astype(dtype)
        out: np.ndarray[Any, Any] = np.empty(max(self.n_pad, rows * c), dtype=dtype)
        np.add(row[:, None], col[None, :], out=out[: rows * c].reshape(rows, c))
        head: np.ndarray[Any, Any] = out[:n]
        np.subtract(head, dtype(n), out=head, where=head >= n)
        out[n : self.n_pad] = np.arange(n, self.n_pad, dtype=dtype)
        return out[: self.n_pad]

    @property
    def shuffled(self) -> bool:
        return self._shuffle is not None

    def to_orig(self, pos: np.ndarray) -> np.ndarray:
        """Pass position -> index in the original (padded) string (small arrays)."""
        if self._shuffle is None:
            return pos
        base = self._shuffle[0]
        src = self.source_index(pos)
        return np.where(src < self.n, base[np.minimum(src, self.n - 1)], src)

    def to_pass(self, orig: np.ndarray) -> np.ndarray:
        if self._shuffle is None:
            return orig
        _, base_inv, a, b = self._shuffle
        a_inv = pow(a, -1, self.n)
        real = orig < self.n
        out = orig.copy()
        out[real] = ((base_inv[orig[real]].astype(np.int64) - b) * a_inv) % self.n
        return out

    def slot(self, lev: int, pos: np.ndarray) -> np.ndarray:
        return self.offsets[lev] + (pos >> lev)

    def toggle(self, orig: np.ndarray) -> None:
        """Bits at ``orig`` flipped: toggle the mismatch of all their ancestors."""
        pos = self.to_pass(orig)
        idx = (self.offsets[:, None] + (pos[None, :] >> np.arange(self.top + 1)[:, None])).ravel()
        np.bitwise_xor.at(self.mis, idx, 1)


def _parity(bits: np.ndarray) -> np.ndarray:
    return (bits.sum(axis=-1, dtype=np.uint8) & 1).astype(np.uint8)


class _Engine:
    def __init__(self, alice: np.ndarray, bob: np.ndarray, n: int, send: Send) -> None:
        self.alice, self.bob, self.n = alice, bob, n
        # the same strings in ``base`` order, for the shuffled passes (set by reconcile)
        self.alice_b = alice
        self.bob_b = bob
        self.base_inv: np.ndarray | None = None
        self.send = send
        self.passes: list[_Pass] = []
        self.dirty: list[list[np.ndarray]] = []
        self.disclosed = 0
        self.rounds = 0
        self.flips = 0

    # -- one top-level pass ------------------------------------------------------------
    def run_pass(self, p: _Pass) -> None:
        nb = p.n_pad // p.k
        src = p.source_index_all()
        alice, bob = self._sources(p)
        a_par = _parity(alice[src].reshape(nb, p.k))
        real = -(-self.n // p.k)  # blocks of pure padding have public parity 0
        reply = self.send("alice", "cascade-block-parities", np.packbits(a_par[:real]).tobytes())
        a_par[:real] = np.unpackbits(np.frombuffer(reply, dtype=np.uint8))[:real]
        self.disclosed += real
        self.rounds += 1
        b_par = _parity(bob[src].reshape(nb, p.k))
        top = p.slot(p.top, np.arange(0, p.n_pad, p.k))
        p.known[top] = a_par.astype(np.int8)
        p.mis[top] = a_par ^ b_par
        self.passes.append(p)
        self.dirty.append([])
        odd = np.flatnonzero(a_par != b_par) * p.k
        if odd.size:
            self.binary([(p, p.top, odd)])
        self._settle()

    # -- BINARY on many intervals (any passes, any levels) in lock step ----------------
    def binary(self, groups: list[tuple[_Pass, int, np.ndarray]]) -> None:
        """Bisect every interval at once on one snapshot of Bob's string.

        Each round carries one request (Bob) and one reply (Alice) for all intervals.
        Every search ends on a genuine error; two searches may end on the same bit, so
        the found positions are de-duplicated before Bob flips them.
        """
        state = [(p, lev, st.astype(np.int64)) for p, lev, st in groups]
        while any(lev > 0 for _, lev, _ in state):
            asks: list[tuple[np.ndarray, np.ndarray] | None] = []
            for p, lev, st in state:
                if lev == 0:
                    asks.append(None)
                    continue
                left = p.slot(lev - 1, st)
                need = p.known[left] < 0
                asks.append((left, need))
            self._ask_alice(state, asks)
            nxt = []
            for (p, lev, st), ask in zip(state, asks, strict=True):
                if ask is None:
                    nxt.append((p, lev, st))
                    continue
                left = ask[0]
                parent = p.slot(lev, st)
                right = left + 1
                p.known[right] = p.known[parent] ^ p.known[left]
                p.mis[right] = p.mis[parent] ^ p.mis[left]
                st = np.where(p.mis[left] == 1, st, st + (1 << (lev - 1)))
                nxt.append((p, lev - 1, st))
            state = nxt
        found = np.unique(np.concatenate([p.to_orig(st) for p, _, st in state]))
        self.bob[found] ^= 1
        if self.base_inv is not None:
            self.bob_b[self.base_inv[found]] ^= 1
        self.flips += int(found.size)
        if self.flips > self.n // 2 + 64:
            raise ReconciliationError(
                "Cascade did not converge (more flips than half the key): Alice's parities "
                "are inconsistent; the channel was tampered with or the QBER is far too high"
            )
        for q, other in enumerate(self.passes):
            other.toggle(found)
            self.dirty[q].append(found)

    def _ask_alice(
        self,
        state: list[tuple[_Pass, int, np.ndarray]],
        asks: list[tuple[np.ndarray, np.ndarray] | None],
    ) -> None:
        """One round trip: Bob names the unknown left halves, Alice returns their parities."""
        request = []
        pending = []
        for (p, lev, st), ask in zip(state, asks, strict=True):
            if ask is None or not ask[1].any():
                continue
            left, need = ask
            half = 1 << (lev - 1)
            sel = st[need]
            request.append(sel.astype("<u4").tobytes())
            idx = p.source_index((sel[:, None] + np.arange(half)).ravel()).reshape(sel.size, half)
            pending.append((p, left[need], idx))
        if not pending:
            return
        self.send("bob", "cascade-request", b"".join(request))
        parities = np.concatenate([_parity(self._sources(p)[0][idx]) for p, _, idx in pending])
        reply = self.send("alice", "cascade-parities", np.packbits(parities).tobytes())
        parities = np.unpackbits(np.frombuffer(reply, dtype=np.uint8))[: parities.size]
        self.disclosed += int(parities.size)
        self.rounds += 1
        at = 0
        for p, slots, idx in pending:
            a = parities[at : at + slots.size]
            at += slots.size
            p.known[slots] = a.astype(np.int8)
            p.mis[slots] = _parity(self._sources(p)[1][idx]) ^ a

    def _sources(self, p: _Pass) -> tuple[np.ndarray, np.ndarray]:
        return (self.alice_b, self.bob_b) if p.shuffled else (self.alice, self.bob)

    # -- the cascade: re-search known intervals that stopped matching ------------------
    def _settle(self) -> None:
        while True:
            groups = []
            for q, p in enumerate(self.passes):
                if not self.dirty[q]:
                    continue
                orig = np.unique(np.concatenate(self.dirty[q]))
                self.dirty[q] = []
                pos = p.to_pass(orig)
                levels = np.arange(p.top + 1)[:, None]
                slots = p.offsets[:, None] + (pos[None, :] >> levels)
                bad = (p.known[slots] >= 0) & (p.mis[slots] == 1)
                has = bad.any(axis=0)
                if not has.any():
                    continue
                lev = np.argmax(bad, axis=0)[has]
                key = np.unique(((pos[has] >> lev) << lev) * 64 + lev)
                for lv in np.unique(key % 64):
                    groups.append((p, int(lv), key[key % 64 == lv] // 64))
            if not groups:
                return
            self.binary(groups)


def _shuffles(
    seed: bytes, n: int, passes: int
) -> list[tuple[np.ndarray, np.ndarray, int, int] | None]:
    rng = np.random.default_rng(int.from_bytes(seed, "big"))
    base = np.arange(n, dtype=np.int32 if n < 1 << 31 else np.int64)
    rng.shuffle(base)  # in place on int32: about twice as fast as permutation()
    base_inv = np.empty_like(base)
    base_inv[base] = np.arange(n, dtype=base.dtype)
    out: list[tuple[np.ndarray, np.ndarray, int, int] | None] = [None]
    for _ in range(passes - 1):
        while True:
            a = int(rng.integers(1, max(2, n)))
            if math.gcd(a, n) == 1:
                break
        out.append((base, base_inv, a, int(rng.integers(0, n))))
    return out


def reconcile_reference(
    alice: np.ndarray,
    bob: np.ndarray,
    *,
    qber_estimate: float,
    rng: np.random.Generator,
    passes: int = 14,
    send: Send | None = None,
    shuffle_fn: Callable[[bytes, int, int], list[Any]] | None = None,
) -> CascadeResult:
    """Correct Bob's string towards Alice's with Cascade; return Bob's corrected copy.

    ``send(sender, kind, payload) -> payload`` carries every message (an
    :class:`~qkd.sim.AuthenticatedChannel`'s ``send``); Alice's parities are read back
    from what it delivers. ``rng`` draws the public shuffle seed Alice announces.
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
    engine = _Engine(a, b, n, send)
    shuffles = (shuffle_fn or _shuffles)(seed, n, passes)
    if len(shuffles) > 1 and shuffles[1] is not None:
        base, base_inv = shuffles[1][0], shuffles[1][1]
        engine.alice_b = np.concatenate((a[:n][base], a[n:]))
        engine.bob_b = np.concatenate((b[:n][base], b[n:]))
        engine.base_inv = base_inv
    for k, shuffle in zip(sizes, shuffles, strict=True):
        engine.run_pass(_Pass(k, n, n_pad, shuffle))
    return CascadeResult(
        corrected=b[:n].copy(),
        disclosed_bits=engine.disclosed,
        rounds=engine.rounds,
        errors_corrected=engine.flips,
        block_sizes=sizes,
    )
