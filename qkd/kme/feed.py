"""Where the KME pair's key material comes from: a :class:`KeyFeed` of numbered blocks.

A QKD link delivers the *same* block at both ends. Anything that yields
:class:`KeyBlock` objects in increasing ``block_id`` order can feed a
:class:`qkd.kme.pair.KMEPair` (``pair.feed_from(feed, count)``) or push into
it directly (``pair.push(block)``: the key sink the link simulation calls).

:class:`SeededKeyFeed` is the stand-in until the link simulation is wired in:
block ``i`` is SHAKE-256(seed || i), so a restarted feeder regenerates exactly
the same blocks and re-sending them is harmless (the store ignores old blocks).
It is *not* QKD: with a known seed every key is known. Use a random seed.

:class:`LinkKeyFeed` runs the simulated link (:class:`qkd.sim.QKDLink`, or anything
with ``run_block(sink)`` calling ``sink.put_block(alice_key, bob_key, stats)``)
and numbers its distilled blocks; aborted blocks (QBER too high) yield nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["KeyBlock", "KeyBlockSink", "KeyFeed", "LinkKeyFeed", "SeededKeyFeed"]


@dataclass(frozen=True, slots=True)
class KeyBlock:
    """Final key from the link, identical at both sites. ``repr`` hides ``data``."""

    block_id: int
    data: bytes = field(repr=False)


def agreed_key(alice_key: bytes, bob_key: bytes) -> bytes:
    """The block both link ends distilled; refused (constant time) if they differ."""
    if len(alice_key) != len(bob_key) or not hmac.compare_digest(alice_key, bob_key):
        raise ValueError("the two ends of the link distilled different keys; block refused")
    return bytes(alice_key)


@runtime_checkable
class KeyFeed(Protocol):
    """A source of key blocks, read in order."""

    def next_blocks(self, count: int) -> list[KeyBlock]:
        """Up to ``count`` further blocks (fewer, or none, when the link has no more yet)."""
        ...


@runtime_checkable
class KeyBlockSink(Protocol):
    """Where a link puts its blocks (the KME pair implements it)."""

    def push(self, block: KeyBlock) -> None: ...


class SeededKeyFeed:
    """Deterministic blocks from a seed (default: 32 random bytes), ``block_size`` bytes each."""

    def __init__(self, seed: bytes | None = None, *, block_size: int = 4096, start: int = 0):
        if not 16 <= block_size <= 1 << 20:
            raise ValueError(f"block_size must be 16..1048576 bytes, got {block_size}")
        self._seed = os.urandom(32) if seed is None else bytes(seed)
        self.block_size = block_size
        self.next_id = start

    def next_blocks(self, count: int) -> list[KeyBlock]:
        blocks = [self.block(self.next_id + i) for i in range(count)]
        self.next_id += count
        return blocks

    def block(self, block_id: int) -> KeyBlock:
        digest = hashlib.shake_256(self._seed + block_id.to_bytes(8, "big"))
        return KeyBlock(block_id, digest.digest(self.block_size))

    def __repr__(self) -> str:
        return f"<SeededKeyFeed block_size={self.block_size} next_id={self.next_id}>"


class LinkKeyFeed:
    """Blocks distilled by a simulated QKD link, numbered from ``start``.

    Each call to :meth:`next_blocks` runs up to ``count`` link blocks; an aborted
    block delivers no key, so fewer blocks may come back. The two ends' keys are
    compared in constant time and a mismatch is refused (it would mean the
    post-processing failed silently).
    """

    def __init__(self, link: Any, *, start: int = 0) -> None:
        if not callable(getattr(link, "run_block", None)):
            raise TypeError("link must have run_block(sink), e.g. qkd.sim.QKDLink")
        self._link = link
        self.next_id = start
        self._pending: list[KeyBlock] = []
        self.aborted = 0

    def put_block(self, alice_key: bytes, bob_key: bytes, stats: object = None) -> None:
        """The link's key sink: file one distilled block (both ends must agree)."""
        self._pending.append(KeyBlock(self.next_id, agreed_key(alice_key, bob_key)))
        self.next_id += 1

    def next_blocks(self, count: int) -> list[KeyBlock]:
        for _ in range(count):
            before = len(self._pending)
            self._link.run_block(self)
            if len(self._pending) == before:
                self.aborted += 1
        blocks, self._pending = self._pending, []
        return blocks

    def __repr__(self) -> str:
        return f"<LinkKeyFeed next_id={self.next_id} aborted={self.aborted}>"
