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
Bob's (bit 1) bits when pass i's row was built. Every interval Cascade asks about is
dyadic (a half of a known interval), so the bits Bob flipped since are kept as one *flip
bit* per interval (the parity of his flips inside it, toggled along the flipped bit's
ancestors, instead of the numpy engine's sorted key list): an interval parity is two
prefix lookups and one state lookup.

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
    "BaseInverse",
    "JitEngine",
    "available",
    "check_converged",
    "restrict_permutation",
    "slot_offsets",
    "unpack_reply",
]

Send = Callable[[str, str, bytes], bytes]
Shuffle = tuple[np.ndarray, "BaseInverse", int, int]
"""One shuffled pass: public base order, its inverse, multiplier a and offset b."""


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
    Without the prefix row, the block holding the most key bits (the first one when the
    last is partial: at n = 950k, k = 2^18, it holds 2^18 of them, the last 164k) is not
    gathered: its parity is ``total`` (both parties' parity of the whole string) xor the
    other blocks'.
    """
    n_pad = store.size
    acc = np.uint8(0)
    cur = b
    p = 0
    skip = -1
    if not with_prefix:
        last = (n - 1) // k  # the last block holding key bits; only padding follows
        skip = 0 if last > 0 and n - last * k < k else last
    rest = total
    for blk in range(n_pad // k):
        par = np.uint8(0)
        if blk == skip:
            p = (blk + 1) * k
            cur = (a * p + b) % n  # the shuffled walk resumes after the skipped block
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
    if skip >= 0:
        a_par[skip] = rest & 1
        b_par[skip] = (rest >> 1) & 1


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
        mis = (a_par[blk] ^ b_par[blk]) << 1
        state[base + blk] = (state[base + blk] & _FLIP) | _KNOWN | a_par[blk] | mis
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
        if state[left] & _KNOWN == 0:
            need[cnt] = j
            x = prefix[p, s + (1 << (lv - 1))] ^ prefix[p, s]
            # Bob's bit at scan time, toggled by his flips inside the half since then
            b_bits[cnt] = ((x >> 1) ^ (state[left] >> 3)) & 1
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
        state[left] = (state[left] & _FLIP) | _KNOWN | a_rx | ((b_bits[c] ^ a_rx) << 1)
    mis_left = scratch[:m, 0]
    kval = scratch[:m, 1]
    for j in range(m):
        left = off[pid[j], lev[j] - 1] + (st[j] >> (lev[j] - 1))
        parent = off[pid[j], lev[j]] + (st[j] >> lev[j])
        mis_left[j] = (state[left] >> 1) & 1
        kval[j] = (state[parent] ^ state[left]) & 1
    for j in range(m):
        left = off[pid[j], lev[j] - 1] + (st[j] >> (lev[j] - 1))
        state[left + 1] = (state[left + 1] & (2 | _FLIP)) | _KNOWN | kval[j]
    for j in range(m):
        parent = off[pid[j], lev[j]] + (st[j] >> lev[j])
        kval[j] = ((state[parent] >> 1) & 1) ^ mis_left[j]
    for j in range(m):
        left = off[pid[j], lev[j] - 1] + (st[j] >> (lev[j] - 1))
        state[left + 1] = (state[left + 1] & (5 | _FLIP)) | (kval[j] << 1)
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
    full_inv: np.ndarray,
    skipped: np.ndarray,
    store: np.ndarray,
    store_q: np.ndarray,
    state: np.ndarray,
    scanned: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Bob flips the bits the searches found (original order, de-duplicated); returns
    them and their places in ``base`` order (see :class:`BaseInverse`; -1: unshuffled).

    Each flip toggles the mismatch of its known ancestors in every loaded pass and, in
    every pass whose prefix row is built, the flip bit of every interval containing it.
    """
    orig = np.empty(done_pid.size, dtype=np.int64)
    for j in range(done_pid.size):
        p, pos = done_pid[j], done_st[j]
        if shuffled[p] and pos < n:
            orig[j] = base[(mult[p] * pos + add[p]) % n]
        else:
            orig[j] = pos
    found = np.unique(orig)
    # their places in base order (BaseInverse); many lookups are one merge of the sorted
    # places with ``skipped`` (a binary search per flip costs ~0.3 us in cache misses)
    found_q = np.full(found.size, -1, dtype=np.int64)
    for t in range(found.size if full_inv.size else 0):
        if found[t] < n:
            found_q[t] = full_inv[found[t]]
    if 128 * found.size < skipped.size:
        for t in range(found.size):
            if found_q[t] >= 0:
                found_q[t] -= np.searchsorted(skipped, found_q[t])
    else:
        k = 0
        for t in np.argsort(found_q):
            v = found_q[t]
            if v >= 0:
                while k < skipped.size and skipped[k] < v:
                    k += 1
                found_q[t] = v - k
    for t in range(found.size):
        f = found[t]
        store[f] ^= 2
        q = found_q[t]
        if q >= 0:
            store_q[q >> 2] ^= 2 << (2 * (q & 3))
        for i in range(loaded):
            pos = f
            if shuffled[i] and f < n:
                pos = ((q - add[i]) * a_inv[i]) % n
            # known intervals are closed under taking parents: walk down from the top;
            # unscanned passes keep no flip bits (their row is built from ``store``)
            known = True
            for lv in range(tops[i], -1, -1):
                slot = off[i, lv] + (pos >> lv)
                known = known and state[slot] & _KNOWN != 0
                if known:
                    state[slot] ^= 2
                elif not scanned[i]:
                    break
                if scanned[i]:
                    state[slot] ^= _FLIP
    return found, found_q


def _dirty_intervals(
    found: np.ndarray,
    n: int,
    loaded: int,
    tops: np.ndarray,
    off: np.ndarray,
    add: np.ndarray,
    a_inv: np.ndarray,
    shuffled: np.ndarray,
    found_q: np.ndarray,
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
        for t in range(found.size):
            pos = found[t]
            if shuffled[i] and pos < n:
                pos = ((found_q[t] - add[i]) * a_inv[i]) % n
            best = -1
            for lv in range(tops[i], -1, -1):  # known intervals are closed under parents
                slot = off[i, lv] + (pos >> lv)
                if state[slot] & _KNOWN == 0:
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
    """The elements below n of permutation ``full``, in order, and where the others sit."""
    base = np.empty(n, dtype=full.dtype)
    skipped = np.empty(full.size - n, dtype=np.int64)
    at = 0
    for j in range(full.size):
        v = full[j]
        if v < n:
            base[at] = v
            at += 1
        else:
            skipped[j - at] = j
    return base, skipped


def restrict_permutation(full: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The elements below n of permutation ``full``, in order, and (sorted) the indices
    of ``full`` holding the others."""
    out: tuple[np.ndarray, np.ndarray] = _k()._restrict_permutation(full, n)
    return out


class BaseInverse:
    """``base_inv[v]``: the place of value v in ``base`` (the elements < n of ``full``).

    Computed on demand: v sits at ``full_inv[v]`` in ``full``, and the ``skipped`` entries
    (>= n) before that index are missing from ``base``. Only Bob's flipped bits are ever
    looked up, so no block pays for n scattered writes to build the whole inverse.
    """

    __slots__ = ("full_inv", "skipped")

    def __init__(self, full_inv: np.ndarray, skipped: np.ndarray) -> None:
        self.full_inv = full_inv
        self.skipped = skipped

    def __repr__(self) -> str:
        return f"BaseInverse(n={self.full_inv.size - self.skipped.size})"

    def __getitem__(self, values: np.ndarray) -> np.ndarray:
        at = self.full_inv[values].astype(np.int64)
        out: np.ndarray = at - np.searchsorted(self.skipped, at)
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
        shuffles: list[Shuffle | None],
        send: Send,
    ) -> None:
        n_pad = alice.size
        self.n, self.n_pad, self.width = n, n_pad, n_pad + 1
        self.sizes = sizes
        self.tops = np.array([k.bit_length() - 1 for k in sizes], dtype=np.int64)
        passes = len(sizes)
        self.off, at = slot_offsets(self.tops.tolist(), n_pad)
        # per interval: _KNOWN clear = Alice's parity unknown, else _KNOWN | her parity |
        # mismatch << 1; plus _FLIP, the parity of Bob's flips inside it since the pass's
        # prefix row was built (scanned passes only). Zero-initialised, so the pages of
        # never-touched levels are never written.
        self.state = np.zeros(at, dtype=np.uint8)
        # rows are written whole when a pass is scanned and read only after that
        self.prefix = np.empty((passes, self.width), dtype=np.uint8)
        self.prefix[:, 0] = 0
        self.mult = np.array([1 if sh is None else sh[2] for sh in shuffles], dtype=np.int64)
        self.add = np.array([0 if sh is None else sh[3] for sh in shuffles], dtype=np.int64)
        self.a_inv = np.array(
            [1 if sh is None or n <= 1 else pow(sh[2], -1, n) for sh in shuffles], dtype=np.int64
        )
        self.shuffled = np.array([sh is not None for sh in shuffles], dtype=np.bool_)
        self.store = alice | (bob << 1)
        self.total = int(np.bitwise_xor.reduce(self.store))  # both parities of the string
        empty = np.zeros(0, dtype=np.int32)
        self.base, self.full_inv, self.store_q = empty, empty, np.zeros(0, dtype=np.uint8)
        self.skipped = np.zeros(0, dtype=np.int64)
        for sh in shuffles:
            if sh is not None:
                self.base = np.ascontiguousarray(sh[0], dtype=np.int32)
                self.full_inv = np.ascontiguousarray(sh[1].full_inv, dtype=np.int32)
                self.skipped = np.ascontiguousarray(sh[1].skipped, dtype=np.int64)
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
            self._settle(*found)

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

        The row then already contains every flip so far; the pass's flip bits are still
        all clear (only scanned passes' are toggled), so they count later flips only.
        Alice's bits never change: her row is the same.
        """
        if not self.unscanned:
            return
        for i in set(np.unique(pid).tolist()) & self.unscanned:
            blocks = self.n_pad // self.sizes[i]
            self._load(i, True, np.empty(blocks, np.uint8), np.empty(blocks, np.uint8))
            self.scanned[i] = True
            self.unscanned.discard(i)

    def binary(
        self, pid: np.ndarray, lev: np.ndarray, st: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bisect every interval in lock step; one request/reply per round; flip the finds.

        Returns the flipped positions and their places in ``base`` order.
        """
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
        found: np.ndarray
        found_q: np.ndarray
        found, found_q = _k()._flip_all(
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
            self.full_inv,
            self.skipped,
            self.store,
            self.store_q,
            self.state,
            self.scanned,
        )
        self.flips += int(found.size)
        self.total ^= (found.size & 1) << 1
        check_converged(self.flips, self.n)
        return found, found_q

    def _settle(self, found: np.ndarray, found_q: np.ndarray) -> None:
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
                found_q,
                self.state,
            )
            if not pid.size:
                return
            found, found_q = self.binary(pid, lev, st)

    def bob_string(self) -> np.ndarray:
        out: np.ndarray = (self.store[: self.n] >> 1) & 1
        return out


_EAGER_PASSES = 2
_KNOWN = 4
_FLIP = 8
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
