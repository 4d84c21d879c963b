"""The whole link: simulate a block, post-process it, hand identical keys to a sink.

Theory of operation
-------------------
One block = ``pulses_per_block`` pulses. Every step below is a message on the
authenticated channel, and every disclosed bit is counted:

1. sifting: Bob announces which pulses clicked and his bases; Alice her bases and
   intensities. Raw key = signal-intensity detections where both chose Z.
2. QBER sample: Alice reveals a random ``sample_fraction`` of the raw key; those bits are
   dropped. If the sampled QBER exceeds ``qber_threshold`` the block aborts: no key.
   (Security does not rest on this test -- the phase-error bound does -- so the point
   estimate is used; its Hoeffding upper bound is reported as ``qber_upper``.)
3. decoy statistics: the decoy and vacuum detections and the X basis are disclosed in
   full; they give the lower bounds s0, s1 and the phase-error bound (see
   :mod:`qkd.sim._estimation`).
4. Cascade: leak = every parity Alice sends.
5. verification: a 128-bit Poly1305 tag under a fresh public key; mismatch -> abort.
6. privacy amplification: Toeplitz hash to the secure length l (asymptotic or finite-key).
7. authentication key: the block's consumption is withdrawn from its output to refill the
   pool (the PSK only bootstraps block 1); the rest goes to the sink.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from qkd.sim._cascade import reconcile
from qkd.sim._channel import AuthenticatedChannel, AuthKeyPool, Tamper
from qkd.sim._errors import AuthenticationError, ParameterError, ReconciliationError
from qkd.sim._estimation import DecoyEstimate, estimate_decoy, secret_key_length
from qkd.sim._hashing import (
    VERIFY_TAG_BITS,
    toeplitz_hash_pair,
    verification_collision_bound,
    verification_tag,
    verify_tags,
)
from qkd.sim._params import LinkParams, PostProcessingParams
from qkd.sim._physics import DetectionRecord, simulate_block

__all__ = ["BlockStats", "KeySink", "LinkResult", "ListKeySink", "QKDLink", "simulate_link"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockStats:
    """Per-block statistics (no key material). Lengths in bits unless named otherwise.

    ``true_*`` fields are simulation truth the protocol never sees: they let tests check
    that the estimated bounds really bound. ``verify_collision_bound`` is the probability
    that verification passes although the strings differ (<= ``eps_cor``, checked when
    the parameters are built).
    """

    index: int
    pulses: int
    detections: int
    raw_key: int
    sample_size: int
    sample_errors: int
    qber_sample: float
    qber_upper: float
    aborted: bool
    abort_reason: str | None = None
    reconciled: int = 0
    qber_key: float = float("nan")
    leaked_ec: int = 0
    leaked_verify: int = 0
    verify_collision_bound: float = float("nan")
    cascade_rounds: int = 0
    ec_efficiency: float = float("nan")
    y1_lower: float = float("nan")
    e1_upper: float = float("nan")
    single_photon_lower: float = float("nan")
    length_asymptotic: float = float("nan")
    length_finite: float = float("nan")
    pa_output: int = 0
    final_bits: int = 0
    auth_bits_consumed: int = 0
    messages: int = 0
    true_single_photon: int = 0
    true_single_photon_errors: int = 0
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in asdict(self).items()
        }


@runtime_checkable
class KeySink(Protocol):
    """Where distilled keys go, one block at a time (the KME key store plugs in here).

    ``alice_key`` and ``bob_key`` are equal (verified with a constant-time compare before
    the call); both are given so a two-site store can file each under its own site.
    ``stats.final_bits == 8 * len(alice_key)``. Aborted blocks are not delivered.
    """

    def put_block(self, alice_key: bytes, bob_key: bytes, stats: BlockStats) -> None: ...


class ListKeySink:
    """Keeps delivered blocks in memory (tests and the CLI)."""

    def __init__(self) -> None:
        self.blocks: list[tuple[bytes, bytes, BlockStats]] = []

    def __repr__(self) -> str:
        return f"ListKeySink(blocks={len(self.blocks)})"

    def put_block(self, alice_key: bytes, bob_key: bytes, stats: BlockStats) -> None:
        self.blocks.append((alice_key, bob_key, stats))


@dataclass(frozen=True, slots=True)
class LinkResult:
    """All blocks of one run and the totals a user asks for first."""

    link: LinkParams
    post: PostProcessingParams
    blocks: tuple[BlockStats, ...]
    auth_bits_consumed: int
    elapsed_s: float

    @property
    def pulses(self) -> int:
        return sum(b.pulses for b in self.blocks)

    @property
    def secret_bits(self) -> int:
        return sum(b.final_bits for b in self.blocks)

    @property
    def key_rate_per_pulse(self) -> float:
        return self.secret_bits / self.pulses if self.pulses else 0.0

    @property
    def key_rate_bps(self) -> float:
        """Secret bits per second of link time (pulses / repetition rate)."""
        return self.key_rate_per_pulse * self.link.rep_rate_hz

    @property
    def auth_fraction(self) -> float:
        """Authentication key consumed / key distilled (before the refill)."""
        distilled = self.secret_bits + sum(
            b.auth_bits_consumed for b in self.blocks if b.final_bits
        )
        return self.auth_bits_consumed / distilled if distilled else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {
            "link": {k: v for k, v in asdict(self.link).items() if k != "eve"}
            | {"eve": self.link.eve.describe()},
            "post_processing": asdict(self.post),
            "pulses": self.pulses,
            "secret_bits": self.secret_bits,
            "key_rate_per_pulse": self.key_rate_per_pulse,
            "key_rate_bps": self.key_rate_bps,
            "auth_bits_consumed": self.auth_bits_consumed,
            "auth_fraction": self.auth_fraction if math.isfinite(self.auth_fraction) else None,
            "elapsed_s": self.elapsed_s,
            "blocks": [b.to_json() for b in self.blocks],
        }


_MIN_RAW_KEY = 256


def _bits_from_bytes(data: bytes, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:n]


@dataclass
class _Block:
    """Mutable scratch state of one block (never leaves this module)."""

    index: int
    rec: DetectionRecord
    start: float
    auth_start: int
    fields: dict[str, Any] = field(default_factory=dict)


class QKDLink:
    """A simulated link between Alice and Bob with its post-processing.

    ``rng`` drives the physics and every public random choice; ``psk`` bootstraps the
    authentication (default: ``auth_psk_bytes`` from ``rng``, shared by both ends);
    ``tamper`` lets a test play an active attacker on the classical channel.
    """

    def __init__(
        self,
        link: LinkParams,
        post: PostProcessingParams | None = None,
        *,
        rng: np.random.Generator,
        psk: bytes | None = None,
        tamper: Tamper | None = None,
    ) -> None:
        if not isinstance(link, LinkParams):
            raise ParameterError("link must be a LinkParams")
        if not isinstance(rng, np.random.Generator):
            raise ParameterError(
                "rng must be a numpy.random.Generator (numpy.random.default_rng(seed))"
            )
        self.link = link
        self.post = post or PostProcessingParams()
        self.rng = rng
        psk = psk if psk is not None else rng.bytes(self.post.auth_psk_bytes)
        if len(psk) < 64:
            raise ParameterError("the pre-shared authentication key must be at least 64 bytes")
        self._alice_pool, self._bob_pool = AuthKeyPool(psk), AuthKeyPool(psk)
        self.channel = AuthenticatedChannel(self._alice_pool, self._bob_pool, tamper=tamper)
        self._index = 0

    @property
    def auth_bits_consumed(self) -> int:
        return 8 * self._alice_pool.consumed

    @property
    def auth_bytes_available(self) -> int:
        return self._alice_pool.available

    def run_block(self, sink: KeySink | None = None) -> BlockStats:
        """Simulate and post-process one block; deliver its key to ``sink`` unless aborted."""
        start = time.perf_counter()
        auth_start = self._alice_pool.consumed
        self.channel.begin_block()
        messages0 = self.channel.messages
        rec = simulate_block(self.link, self.post.pulses_per_block, rng=self.rng)
        blk = _Block(self._index, rec, start, auth_start)
        self._index += 1
        try:
            result = self._post_process(blk, sink)
        except AuthenticationError as exc:
            result = self._abort(blk, f"authentication failed: {exc}")
        except ReconciliationError:
            # Inconsistent parities mean tampering: the deferred tags would not verify.
            result = self._abort(blk, "authentication failed: error correction diverged")
        return replace(result, messages=self.channel.messages - messages0)

    def run(
        self,
        blocks: int,
        sink: KeySink | None = None,
        *,
        progress: Callable[[BlockStats], None] | None = None,
    ) -> LinkResult:
        if not isinstance(blocks, int) or blocks < 1:
            raise ParameterError(f"blocks must be a positive int, got {blocks!r}")
        start = time.perf_counter()
        consumed0 = self.auth_bits_consumed
        out = []
        for _ in range(blocks):
            stats = self.run_block(sink)
            out.append(stats)
            if progress is not None:
                progress(stats)
        return LinkResult(
            link=self.link,
            post=self.post,
            blocks=tuple(out),
            auth_bits_consumed=self.auth_bits_consumed - consumed0,
            elapsed_s=time.perf_counter() - start,
        )

    # -- steps -------------------------------------------------------------------------
    def _abort(self, blk: _Block, reason: str) -> BlockStats:
        f = blk.fields
        rec = blk.rec
        return BlockStats(
            index=blk.index,
            pulses=rec.n_pulses,
            detections=rec.detections,
            raw_key=int(rec.alice_key.size),
            sample_size=f.get("sample_size", 0),
            sample_errors=f.get("sample_errors", 0),
            qber_sample=f.get("qber_sample", float("nan")),
            qber_upper=f.get("qber_upper", float("nan")),
            aborted=True,
            abort_reason=reason,
            leaked_ec=f.get("leaked_ec", 0),
            cascade_rounds=f.get("cascade_rounds", 0),
            auth_bits_consumed=8 * (self._alice_pool.consumed - blk.auth_start),
            true_single_photon=int(rec.counts[0, 1, :, 0].sum()),
            true_single_photon_errors=int(rec.counts[0, 1, 1, 0]),
            elapsed_s=time.perf_counter() - blk.start,
        )

    def _sift_and_sample(self, blk: _Block) -> tuple[np.ndarray, np.ndarray] | None:
        rec, ch, post = blk.rec, self.channel, self.post
        # Sifting: modelled by the per-cell tallies both sides derive from the announcements.
        ch.send(
            "bob", "sift-clicks-and-bases", rec.counts.sum(axis=(0, 1, 2)).astype("<i8").tobytes()
        )
        ch.send(
            "alice",
            "sift-bases-and-intensities",
            rec.counts.sum(axis=(1, 2)).astype("<i8").tobytes(),
        )
        n = int(rec.alice_key.size)
        if n < _MIN_RAW_KEY:
            blk.fields["abort"] = (
                f"raw key too short ({n} < {_MIN_RAW_KEY} bits); send more pulses per block"
            )
            return None
        m = max(1, round(post.sample_fraction * n))
        # a uniform m-subset; its order is irrelevant (sorted), so numpy may skip the
        # shuffle of the drawn subset (a third of the cost)
        positions = np.sort(self.rng.choice(n, size=m, replace=False, shuffle=False))
        payload = (
            positions.astype("<u4").tobytes() + np.packbits(rec.alice_key[positions]).tobytes()
        )
        got = ch.send("alice", "qber-sample", payload)
        pos_rx = np.frombuffer(got[: 4 * m], dtype="<u4").astype(np.int64)
        alice_bits = _bits_from_bytes(got[4 * m :], m)
        errors = int(np.count_nonzero(alice_bits != rec.bob_key[pos_rx]))
        ch.send("bob", "qber-sample-errors", errors.to_bytes(8, "big"))
        qber = errors / m
        upper = qber + math.sqrt(math.log(21 / post.eps_sec) / (2 * m))
        blk.fields.update(sample_size=m, sample_errors=errors, qber_sample=qber, qber_upper=upper)
        if qber > post.qber_threshold:
            blk.fields["abort"] = "QBER above threshold"
            return None
        keep = np.ones(n, dtype=bool)
        keep[positions] = False
        return rec.alice_key[keep], rec.bob_key[keep]

    def _decoy(self, blk: _Block) -> tuple[DecoyEstimate, DecoyEstimate]:
        rec, post = blk.rec, self.post
        self.channel.send("alice", "decoy-pulses", rec.pulses.astype("<i8").tobytes())
        disclosed = np.stack([rec.sifted(0), rec.sifted(1), rec.sifted_errors(1)])
        self.channel.send("bob", "decoy-and-x-statistics", disclosed.astype("<i8").tobytes())
        kwargs: dict[str, Any] = dict(
            link=self.link,
            n_z=rec.sifted(0),
            n_x=rec.sifted(1),
            m_x=rec.sifted_errors(1),
            n_pulses=float(rec.n_pulses),
            key_fraction=1 - blk.fields["sample_size"] / max(1, rec.alice_key.size),
        )
        return estimate_decoy(**kwargs), estimate_decoy(**kwargs, eps_sec=post.eps_sec)

    def _post_process(self, blk: _Block, sink: KeySink | None) -> BlockStats:
        post, ch = self.post, self.channel
        strings = self._sift_and_sample(blk)
        if strings is None:
            return self._abort(blk, blk.fields.pop("abort"))
        alice, bob = strings
        with ch.deferred():
            ec = reconcile(
                alice,
                bob,
                qber_estimate=blk.fields["qber_sample"],
                rng=self.rng,
                passes=post.cascade_passes,
                send=ch.send,
            )
        blk.fields.update(leaked_ec=ec.disclosed_bits, cascade_rounds=ec.rounds)
        vkey = ch.send("alice", "verify-key", self.rng.bytes(32))
        tag = ch.send("alice", "verify-tag", verification_tag(alice, vkey))
        ok = verify_tags(tag, verification_tag(ec.corrected, vkey))
        ch.send("bob", "verify-result", b"\x01" if ok else b"\x00")
        if not ok:
            return self._abort(blk, "verification failed after Cascade")
        est_asym, est_fin = self._decoy(blk)
        leak = ec.disclosed_bits + VERIFY_TAG_BITS
        len_asym = secret_key_length(
            est_asym, leaked_bits=leak, finite_key=False, eps_sec=post.eps_sec, eps_cor=post.eps_cor
        )
        len_fin = secret_key_length(
            est_fin, leaked_bits=leak, finite_key=True, eps_sec=post.eps_sec, eps_cor=post.eps_cor
        )
        chosen = len_fin if post.finite_key else len_asym
        est = est_fin if post.finite_key else est_asym
        out_bits = 8 * (max(0, math.floor(chosen)) // 8)
        qber_key = ec.errors_corrected / alice.size
        blk.fields.update(
            reconciled=int(alice.size),
            verify_collision_bound=verification_collision_bound(int(alice.size)),
            qber_key=qber_key,
            ec_efficiency=ec.efficiency(qber_key),
            y1_lower=est.y1,
            e1_upper=est.phase_error,
            single_photon_lower=est.key_s1,
            length_asymptotic=len_asym,
            length_finite=len_fin,
        )
        if out_bits <= 0:
            return replace(self._abort(blk, "no positive secure key length"), **_done(blk))
        seed = _bits_from_bytes(
            ch.send("alice", "pa-seed", self.rng.bytes((alice.size + out_bits - 1 + 7) // 8)),
            alice.size + out_bits - 1,
        )
        # each side's hash of its own string (Bob's by linearity from Alice's, bit-exact)
        hashed_a, hashed_b = toeplitz_hash_pair(alice, ec.corrected, seed, out_bits)
        key_a = np.packbits(hashed_a).tobytes()
        key_b = np.packbits(hashed_b).tobytes()
        if not hmac.compare_digest(key_a, key_b):  # cannot happen after verification
            return self._abort(blk, "final keys differ (verification collision)")
        return self._deliver(blk, key_a, key_b, out_bits, sink)

    def _deliver(
        self, blk: _Block, key_a: bytes, key_b: bytes, out_bits: int, sink: KeySink | None
    ) -> BlockStats:
        consumed = self._alice_pool.consumed - blk.auth_start
        refill = min(consumed, len(key_a))
        self._alice_pool.refill(key_a[:refill])
        self._bob_pool.refill(key_b[:refill])
        key_a, key_b = key_a[refill:], key_b[refill:]
        rec = blk.rec
        stats = BlockStats(
            index=blk.index,
            pulses=rec.n_pulses,
            detections=rec.detections,
            raw_key=int(rec.alice_key.size),
            aborted=False,
            **_done(blk),
            pa_output=out_bits,
            final_bits=8 * len(key_a),
            auth_bits_consumed=8 * consumed,
            true_single_photon=int(rec.counts[0, 1, :, 0].sum()),
            true_single_photon_errors=int(rec.counts[0, 1, 1, 0]),
            elapsed_s=time.perf_counter() - blk.start,
        )
        if key_a and sink is not None:
            sink.put_block(key_a, key_b, stats)
        return stats


def _done(blk: _Block) -> dict[str, Any]:
    f = dict(blk.fields)
    f["leaked_verify"] = VERIFY_TAG_BITS
    return f


def simulate_link(
    link: LinkParams,
    post: PostProcessingParams | None = None,
    *,
    blocks: int,
    rng: np.random.Generator,
    sink: KeySink | None = None,
    psk: bytes | None = None,
    progress: Callable[[BlockStats], None] | None = None,
) -> LinkResult:
    """Run ``blocks`` blocks of a fresh link; see :class:`QKDLink`."""
    return QKDLink(link, post, rng=rng, psk=psk).run(blocks, sink, progress=progress)
