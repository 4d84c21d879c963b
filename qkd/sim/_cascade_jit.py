"""Compiled (numba) local computation for Cascade; the protocol itself stays in Python.

Why: in the numpy engine every round trip costs a few dozen numpy calls on small arrays
and every pass one full-length random gather; both are dominated by interpreter and
dispatch overhead, not by arithmetic. Here each party's *local* work between two
messages is one compiled call: loading a pass (gather, block parities and the prefix
scan fused in one loop), preparing a bisection request (which left halves are unknown,
both parties' parities of them), applying Alice's reply, flipping Bob's bits and
finding the intervals the cascade must re-search. Every message still goes through
``send`` (the authenticated channel) with the same kind and payload bytes as the numpy
engine, and Bob reads Alice's parities from what ``send`` delivers: the transcripts are
byte-identical (tests compare them).

Bob's parities: ``prefix[i]`` holds the pass-ordered prefix xor of Alice's (bit 0) and
Bob's (bit 1) bits when pass i was loaded; the bits Bob flipped since are kept in one
xor Fenwick tree per pass (instead of the numpy engine's sorted key list), so an interval
parity is two prefix lookups and two O(log n) tree queries.

numba is optional and imported on first use: without it (or with
``HYBRIDCHAN_NO_NUMBA=1``) :func:`available` is false and :func:`qkd.sim.reconcile` uses
the numpy engine.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from qkd.sim._errors import ParameterError, ReconciliationError

__all__ = [
    "JitEngine",
    "available",
    "check_converged",
    "restrict_permutation",
    "slot_offsets",
    "unpack_reply",
]

Send = Callable[[str, str, bytes], bytes]


@functools.cache
def _njit() -> Any:
    """numba's ``njit(cache=True, nogil=True)``, or None; imported on first use (~0.3 s)."""
    if os.environ.get("HYBRIDCHAN_NO_NUMBA", "") not in ("", "0"):
        return None
    try:
        from numba import njit
    except ImportError:
        return None
    return njit(cache=True, nogil=True)


def available() -> bool:
    """Whether the compiled engine can run (numba importable, not disabled)."""
    return _njit() is not None


_KERNEL_NAMES = (
    "_pack_base",
    "_load_pass",
    "_set_top",
    "_prepare",
    "_step",
    "_flip_all",
    "_dirty_intervals",
    "_restrict_permutation",
)


@functools.cache
def _k() -> SimpleNamespace:
    """The kernels below, compiled lazily (or loaded from numba's on-disk cache)."""
    njit = _njit()
    if njit is None:
        raise ParameterError("the compiled Cascade engine needs numba (pip install numba)")
    return SimpleNamespace(**{name: njit(globals()[name]) for name in _KERNEL_NAMES})


# -- kernels ------------------------------------------------------------------------------
def _pack_base(store: np.ndarray, base: np.ndarray, n: int) -> np.ndarray:
    """Both parties' bits in ``base`` order, 2 bits per position (L2-sized for 1 Mbit)."""
    out = np.zeros((n + 3) >> 2, dtype=np.uint8)
    for j in range(n):
        out[j >> 2] |= store[base[j]] << (2 * (j & 3))
    return out


def _load_pass(
    i: int,
    store: np.ndarray,
    store_q: np.ndarray,
    n: int,
    k: int,
    a: int,
    b: int,
    shuffled: bool,
    with_prefix: bool,
    total: int,
    prefix: np.ndarray,
    a_par: np.ndarray,
    b_par: np.ndarray,
) -> None:
    """Gather pass i's bits, every top-level block parity and (``with_prefix``) the
    prefix-xor row.

    Shuffled pass position p reads position (a p + b) mod n of the packed ``base``-order
    copy: one multiply-free step per bit and a 2-bit field of a quarter-size array.
    Without the prefix row, the last block holding key bits is not gathered: its parity
    is ``total`` (both parties' parity of the whole string) xor the other blocks'.
    """
    n_pad = store.size
    acc = np.uint8(0)
    cur = b
    p = 0
    last = (n - 1) // k if not with_prefix else -1
    rest = total
    for blk in range(n_pad // k):
        par = np.uint8(0)
        if blk == last:
            p = (blk + 1) * k  # only padding (parity 0) follows
            continue
        end = min(p + k, n) if shuffled else p
        while p < end:
            v = (store_q[cur >> 2] >> (2 * (cur & 3))) & 3
            cur += a
            cur -= n & -(cur >= n)  # branch-free: the wrap is a coin flip for a ~ n/2
            par ^= v
            p += 1
            if with_prefix:
                acc ^= v
                prefix[i, p] = acc
        stop = (blk + 1) * k
        while p < stop:
            v = store[p]
            par ^= v
            p += 1
            if with_prefix:
                acc ^= v
                prefix[i, p] = acc
        a_par[blk] = par & 1
        b_par[blk] = (par >> 1) & 1
        rest ^= int(par)
    if last >= 0:
        a_par[last] = rest & 1
        b_par[last] = (rest >> 1) & 1


def _set_top(
    i: int,
    top: int,
    k: int,
    off: np.ndarray,
    state: np.ndarray,
    a_par: np.ndarray,
    b_par: np.ndarray,
) -> np.ndarray:
    """Record Alice's top-level parities; return the starts of the odd blocks."""
    base = off[i, top]
    count = 0
    for blk in range(a_par.size):
        state[base + blk] = _KNOWN | a_par[blk] | ((a_par[blk] ^ b_par[blk]) << 1)
        if a_par[blk] != b_par[blk]:
            count += 1
    out = np.empty(count, dtype=np.int64)
    count = 0
    for blk in range(a_par.size):
        if a_par[blk] != b_par[blk]:
            out[count] = blk * k
            count += 1
    return out


def _prepare(
    m: int,
    pid: np.ndarray,
    lev: np.ndarray,
    st: np.ndarray,
    off: np.ndarray,
    state: np.ndarray,
    prefix: np.ndarray,
    fen: np.ndarray,
    need: np.ndarray,
    request: np.ndarray,
    a_packed: np.ndarray,
    b_bits: np.ndarray,
) -> int:
    """Bob's request (unknown left halves) and both parties' parities of those halves.

    ``request`` gets the numpy engine's record layout (<u4 start, u1 pass, u1 level);
    ``a_packed`` Alice's parities as np.packbits would pack them.
    """
    cnt = 0
    for j in range(m):
        p, lv, s = pid[j], lev[j], st[j]
        left = off[p, lv - 1] + (s >> (lv - 1))
        if state[left] == 0:
            need[cnt] = j
            lo, hi = s, s + (1 << (lv - 1))
            x = prefix[p, hi] ^ prefix[p, lo]
            bob = (x >> 1) & 1
            y = hi
            while y > 0:  # Bob's flips since the row was built: xor Fenwick queries
                bob ^= fen[p, y]
                y -= y & -y
            y = lo
            while y > 0:
                bob ^= fen[p, y]
                y -= y & -y
            b_bits[cnt] = bob
            r = 6 * cnt
            request[r] = s & 0xFF
            request[r + 1] = (s >> 8) & 0xFF
            request[r + 2] = (s >> 16) & 0xFF
            request[r + 3] = (s >> 24) & 0xFF
            request[r + 4] = p
            request[r + 5] = lv - 1
            byte = cnt >> 3
            if cnt & 7 == 0:
                a_packed[byte] = 0
            a_packed[byte] |= (x & 1) << (7 - (cnt & 7))
            cnt += 1
    return cnt


def _step(
    m: int,
    pid: np.ndarray,
    lev: np.ndarray,
    st: np.ndarray,
    off: np.ndarray,
    state: np.ndarray,
    cnt: int,
    need: np.ndarray,
    reply: np.ndarray,
    b_bits: np.ndarray,
    scratch: np.ndarray,
    done_pid: np.ndarray,
    done_st: np.ndarray,
    n_done: int,
) -> tuple[int, int]:
    """Apply Alice's reply, descend one level everywhere, retire finished searches.

    Phases mirror the numpy engine's whole-array statements (gather, then scatter), so
    nested intervals in one round read and write exactly what they read and write there.
    """
    for c in range(cnt):
        j = need[c]
        left = off[pid[j], lev[j] - 1] + (st[j] >> (lev[j] - 1))
        a_rx = (reply[c >> 3] >> (7 - (c & 7))) & 1
        state[left] = _KNOWN | a_rx | ((b_bits[c] ^ a_rx) << 1)
    mis_left = scratch[:m, 0]
    kval = scratch[:m, 1]
    for j in range(m):
        left = off[pid[j], lev[j] - 1] + (st[j] >> (lev[j] - 1))
        parent = off[pid[j], lev[j]] + (st[j] >> lev[j])
        mis_left[j] = (state[left] >> 1) & 1
        kval[j] = (state[parent] ^ state[left]) & 1
    for j in range(m):
        left = off[pid[j], lev[j] - 1] + (st[j] >> (lev[j] - 1))
        state[left + 1] = (state[left + 1] & 2) | _KNOWN | kval[j]
    for j in range(m):
        parent = off[pid[j], lev[j]] + (st[j] >> lev[j])
        kval[j] = ((state[parent] >> 1) & 1) ^ mis_left[j]
    for j in range(m):
        left = off[pid[j], lev[j] - 1] + (st[j] >> (lev[j] - 1))
        state[left + 1] = (state[left + 1] & 5) | (kval[j] << 1)
    keep = 0
    for j in range(m):
        lv = lev[j] - 1
        s = st[j] if mis_left[j] == 1 else st[j] + (1 << lv)
        if lv == 0:
            done_pid[n_done] = pid[j]
            done_st[n_done] = s
            n_done += 1
        else:
            pid[keep], lev[keep], st[keep] = pid[j], lv, s
            keep += 1
    return keep, n_done


def _flip_all(
    done_pid: np.ndarray,
    done_st: np.ndarray,
    n: int,
    loaded: int,
    tops: np.ndarray,
    off: np.ndarray,
    mult: np.ndarray,
    add: np.ndarray,
    a_inv: np.ndarray,
    shuffled: np.ndarray,
    base: np.ndarray,
    base_inv: np.ndarray,
    store: np.ndarray,
    store_q: np.ndarray,
    state: np.ndarray,
    fen: np.ndarray,
    scanned: np.ndarray,
) -> np.ndarray:
    """Bob flips the bits the searches found (original order, de-duplicated).

    Each flip toggles the mismatch of its known ancestors in every loaded pass and is
    entered in the Fenwick tree of every pass whose prefix row is built.
    """
    orig = np.empty(done_pid.size, dtype=np.int64)
    for j in range(done_pid.size):
        p, pos = done_pid[j], done_st[j]
        if shuffled[p] and pos < n:
            orig[j] = base[(mult[p] * pos + add[p]) % n]
        else:
            orig[j] = pos
    found = np.unique(orig)
    width = fen.shape[1]
    for f in found:
        store[f] ^= 2
        if f < n and store_q.size:
            q = base_inv[f]
            store_q[q >> 2] ^= 2 << (2 * (q & 3))
        for i in range(loaded):
            pos = f
            if shuffled[i] and f < n:
                pos = ((base_inv[f] - add[i]) * a_inv[i]) % n
            # known intervals are closed under taking parents: walk down from the top
            for lv in range(tops[i], -1, -1):
                slot = off[i, lv] + (pos >> lv)
                if state[slot] == 0:
                    break
                state[slot] ^= 2
            x = pos + 1 if scanned[i] else width  # unscanned rows are rebuilt from ``store``
            while x < width:
                fen[i, x] ^= 1
                x += x & -x
    return found


def _dirty_intervals(
    found: np.ndarray,
    n: int,
    loaded: int,
    tops: np.ndarray,
    off: np.ndarray,
    add: np.ndarray,
    a_inv: np.ndarray,
    shuffled: np.ndarray,
    base_inv: np.ndarray,
    state: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smallest known, no longer matching interval above each flipped bit, per pass."""
    total = found.size * loaded
    out_p = np.empty(total, dtype=np.int64)
    out_l = np.empty(total, dtype=np.int64)
    out_s = np.empty(total, dtype=np.int64)
    keys = np.empty(found.size, dtype=np.int64)
    at = 0
    for i in range(loaded):
        cnt = 0
        for f in found:
            pos = f
            if shuffled[i] and f < n:
                pos = ((base_inv[f] - add[i]) * a_inv[i]) % n
            best = -1
            for lv in range(tops[i], -1, -1):  # known intervals are closed under parents
                slot = off[i, lv] + (pos >> lv)
                if state[slot] == 0:
                    break
                if state[slot] & 2:
                    best = lv
            if best >= 0:
                keys[cnt] = ((pos >> best) << best) * 64 + best
                cnt += 1
        if cnt:
            for key in np.unique(keys[:cnt]):
                out_p[at] = i
                out_l[at] = key % 64
                out_s[at] = key // 64
                at += 1
    return out_p[:at], out_l[:at], out_s[:at]


def _restrict_permutation(full: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The elements below n of permutation ``full``, in order, and their inverse."""
    base = np.empty(n, dtype=full.dtype)
    base_inv = np.empty(n, dtype=full.dtype)
    at = 0
    for v in full:
        if v < n:
            base[at] = v
            base_inv[v] = at
            at += 1
    return base, base_inv


def restrict_permutation(full: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The elements below n of permutation ``full``, in order, and their inverse."""
    out: tuple[np.ndarray, np.ndarray] = _k()._restrict_permutation(full, n)
    return out


# -- the engine ---------------------------------------------------------------------------
class JitEngine:
    """Same protocol and messages as ``_cascade._Engine``; local work in compiled kernels."""

    def __init__(
        self,
        alice: np.ndarray,
        bob: np.ndarray,
        n: int,
        sizes: tuple[int, ...],
        shuffles: list[tuple[np.ndarray, np.ndarray, int, int] | None],
        send: Send,
    ) -> None:
        n_pad = alice.size
        self.n, self.n_pad, self.width = n, n_pad, n_pad + 1
        self.sizes = sizes
        self.tops = np.array([k.bit_length() - 1 for k in sizes], dtype=np.int64)
        passes = len(sizes)
        self.off, at = slot_offsets(self.tops.tolist(), n_pad)
        # per interval: 0 = Alice's parity unknown, else _KNOWN | her parity | mismatch << 1;
        # zero-initialised, so the pages of never-touched levels are never written
        self.state = np.zeros(at, dtype=np.uint8)
        self.prefix = np.zeros((passes, self.width), dtype=np.uint8)
        self.fen = np.zeros((passes, self.width), dtype=np.uint8)
        self.mult = np.array([1 if sh is None else sh[2] for sh in shuffles], dtype=np.int64)
        self.add = np.array([0 if sh is None else sh[3] for sh in shuffles], dtype=np.int64)
        self.a_inv = np.array(
            [1 if sh is None or n <= 1 else pow(sh[2], -1, n) for sh in shuffles], dtype=np.int64
        )
        self.shuffled = np.array([sh is not None for sh in shuffles], dtype=np.bool_)
        self.store = alice | (bob << 1)
        self.total = int(np.bitwise_xor.reduce(self.store))  # both parities of the string
        empty = np.zeros(0, dtype=np.int32)
        self.base, self.base_inv, self.store_q = empty, empty, np.zeros(0, dtype=np.uint8)
        for sh in shuffles:
            if sh is not None:
                self.base = np.ascontiguousarray(sh[0], dtype=np.int32)
                self.base_inv = np.ascontiguousarray(sh[1], dtype=np.int32)
                self.store_q = _k()._pack_base(self.store, self.base, n)
                break
        self.send = send
        self.loaded = 0
        self.unscanned: set[int] = set()  # loaded passes whose prefix row is not built
        self.scanned = np.zeros(passes, dtype=np.bool_)
        self.disclosed = 0
        self.rounds = 0
        self.flips = 0
        self._need = np.empty(0, dtype=np.int64)
        self._ensure(1024)

    def _ensure(self, m: int) -> None:
        if m > self._need.size:
            self._need = np.empty(m, dtype=np.int64)
            self._request = np.empty(6 * m, dtype=np.uint8)
            self._a_packed = np.zeros((m + 7) // 8 + 1, dtype=np.uint8)
            self._b_bits = np.empty(m, dtype=np.uint8)

    def run_pass(self, i: int) -> None:
        n, n_pad, k, top = self.n, self.n_pad, self.sizes[i], int(self.tops[i])
        blocks = n_pad // k
        a_par = np.empty(blocks, dtype=np.uint8)
        b_par = np.empty(blocks, dtype=np.uint8)
        # passes 1 and 2 are always bisected; later ones rarely, so their prefix row is
        # built (by a second gather) only when a search first needs it
        eager = i < _EAGER_PASSES
        self._load(i, eager, a_par, b_par)
        self.scanned[i] = eager
        if not eager:
            self.unscanned.add(i)
        real = -(-n // k)  # blocks of pure padding have public parity 0
        reply = self.send("alice", "cascade-block-parities", np.packbits(a_par[:real]).tobytes())
        a_par[:real] = unpack_reply(reply, real)
        self.disclosed += real
        self.rounds += 1
        self.loaded = i + 1
        odd = _k()._set_top(i, top, k, self.off, self.state, a_par, b_par)
        if odd.size:
            found = self.binary(
                np.full(odd.size, i, dtype=np.int64), np.full(odd.size, top, dtype=np.int64), odd
            )
            self._settle(found)

    def _load(self, i: int, with_prefix: bool, a_par: np.ndarray, b_par: np.ndarray) -> None:
        _k()._load_pass(
            i,
            self.store,
            self.store_q,
            self.n,
            self.sizes[i],
            int(self.mult[i]),
            int(self.add[i]),
            bool(self.shuffled[i]),
            with_prefix,
            self.total,
            self.prefix,
            a_par,
            b_par,
        )

    def _scan(self, pid: np.ndarray) -> None:
        """Build the prefix rows of passes ``pid`` from Bob's *current* bits.

        The row then already contains every flip so far, so that pass's Fenwick tree of
        later flips starts empty again. Alice's bits never change: her row is the same.
        """
        if not self.unscanned:
            return
        for i in set(np.unique(pid).tolist()) & self.unscanned:
            blocks = self.n_pad // self.sizes[i]
            self._load(i, True, np.empty(blocks, np.uint8), np.empty(blocks, np.uint8))
            self.fen[i] = 0
            self.scanned[i] = True
            self.unscanned.discard(i)

    def binary(self, pid: np.ndarray, lev: np.ndarray, st: np.ndarray) -> np.ndarray:
        """Bisect every interval in lock step; one request/reply per round; flip the finds."""
        self._scan(pid)
        m = pid.size
        pid, lev, st = pid.copy(), lev.copy(), st.copy()
        done_pid = np.empty(m, dtype=np.int64)
        done_st = np.empty(m, dtype=np.int64)
        n_done = 0
        zero = lev == 0
        if zero.any():  # already single bits
            n_done = int(zero.sum())
            done_pid[:n_done], done_st[:n_done] = pid[zero], st[zero]
            pid, lev, st = pid[~zero], lev[~zero], st[~zero]
            m = pid.size
        self._ensure(m)
        scratch = np.empty((max(m, 1), 2), dtype=np.uint8)
        while m:
            cnt = _k()._prepare(
                m,
                pid,
                lev,
                st,
                self.off,
                self.state,
                self.prefix,
                self.fen,
                self._need,
                self._request,
                self._a_packed,
                self._b_bits,
            )
            reply_bits = _EMPTY
            if cnt:
                self.send("bob", "cascade-request", self._request[: 6 * cnt].tobytes())
                packed = self._a_packed[: (cnt + 7) // 8].tobytes()
                reply = self.send("alice", "cascade-parities", packed)
                reply_bits = _checked(reply, cnt)
                self.disclosed += cnt
                self.rounds += 1
            m, n_done = _k()._step(
                m,
                pid,
                lev,
                st,
                self.off,
                self.state,
                cnt,
                self._need,
                reply_bits,
                self._b_bits,
                scratch,
                done_pid,
                done_st,
                n_done,
            )
        found: np.ndarray = _k()._flip_all(
            done_pid[:n_done],
            done_st[:n_done],
            self.n,
            self.loaded,
            self.tops,
            self.off,
            self.mult,
            self.add,
            self.a_inv,
            self.shuffled,
            self.base,
            self.base_inv,
            self.store,
            self.store_q,
            self.state,
            self.fen,
            self.scanned,
        )
        self.flips += int(found.size)
        self.total ^= (found.size & 1) << 1
        check_converged(self.flips, self.n)
        return found

    def _settle(self, found: np.ndarray) -> None:
        while found.size:
            pid, lev, st = _k()._dirty_intervals(
                found,
                self.n,
                self.loaded,
                self.tops,
                self.off,
                self.add,
                self.a_inv,
                self.shuffled,
                self.base_inv,
                self.state,
            )
            if not pid.size:
                return
            found = self.binary(pid, lev, st)

    def bob_string(self) -> np.ndarray:
        out: np.ndarray = (self.store[: self.n] >> 1) & 1
        return out


_EAGER_PASSES = 2
_KNOWN = 4
_EMPTY = np.zeros(1, dtype=np.uint8)
_EMPTY.setflags(write=False)  # the same (read-only) array type as a delivered reply


def _checked(reply: bytes, count: int) -> np.ndarray:
    """Alice's packed parities as delivered; a short reply is a protocol failure."""
    if len(reply) < (count + 7) // 8:
        raise ReconciliationError(
            f"Cascade reply carries {len(reply)} bytes for {count} parities: the channel "
            "altered the message; discard the block"
        )
    return np.frombuffer(reply, dtype=np.uint8)


def slot_offsets(tops: list[int], n_pad: int) -> tuple[np.ndarray, int]:
    """Where pass i's intervals of size 2^l start in the flat per-interval arrays
    (``off[i, l]``), and those arrays' length; shared by both engines."""
    off = np.zeros((len(tops), max(tops) + 1), dtype=np.int64)
    at = 0
    for i, top in enumerate(tops):
        for lev in range(top + 1):
            off[i, lev] = at
            at += n_pad >> lev
    return off, at


def unpack_reply(reply: bytes, count: int) -> np.ndarray:
    """Alice's ``count`` parities from a delivered reply (both engines)."""
    return np.unpackbits(_checked(reply, count))[:count]


def check_converged(flips: int, n: int) -> None:
    """More flips than half the key means Alice's parities are inconsistent (both engines)."""
    if flips > n // 2 + 64:
        raise ReconciliationError(
            "Cascade did not converge (more flips than half the key): Alice's parities "
            "are inconsistent; the channel was tampered with or the QBER is far too high"
        )
