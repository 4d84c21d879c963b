"""The authenticated classical channel of the post-processing.

Every message is authenticated with a Wegman-Carter MAC: Poly1305 (an epsilon-almost-
Delta-universal polynomial hash mod 2^130 - 5) under a hash key r drawn once per block,
with its output encrypted by a fresh 128-bit one-time pad s per message. The forgery
probability per message of L bytes is at most 8 ceil(L/16) / 2^106, with no
computational assumption, as long as r and every s are secret and uniform.

The keys come from an :class:`AuthKeyPool`: at bootstrap a pre-shared key; afterwards
each successful block refills what it consumed from its own output (design.md: "a small
part of the produced key"). Alice and Bob hold equal pools and draw from them in the same
order, so their tags agree.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from cryptography.hazmat.primitives.poly1305 import Poly1305

from qkd.sim._errors import AuthenticationError, AuthKeyExhaustedError

__all__ = ["TAG_BYTES", "AuthKeyPool", "AuthenticatedChannel", "Frame"]

TAG_BYTES = 16
_MAX_PAYLOAD = 1 << 30

Tamper = Callable[["Frame"], "Frame"]


class AuthKeyPool:
    """Secret authentication key of one party; consume-once, never reused."""

    def __init__(self, psk: bytes) -> None:
        self._buf = bytearray(psk)
        self.consumed = 0

    def __repr__(self) -> str:
        return f"AuthKeyPool(available={len(self._buf)} bytes, consumed={self.consumed})"

    @property
    def available(self) -> int:
        return len(self._buf)

    def take(self, n: int) -> bytes:
        if n > len(self._buf):
            raise AuthKeyExhaustedError(
                f"authentication key pool has {len(self._buf)} bytes, {n} needed; "
                "restart the link with a fresh pre-shared key"
            )
        out = bytes(self._buf[:n])
        del self._buf[:n]
        self.consumed += n
        return out

    def refill(self, key: bytes) -> None:
        self._buf += key


@dataclass(frozen=True, slots=True)
class Frame:
    """One message on the wire: sender, kind, sequence number, payload, tag."""

    sender: str
    kind: str
    seq: int
    payload: bytes
    tag: bytes

    def authenticated_data(self) -> bytes:
        return _authenticated_data(self.sender, self.kind, self.seq, self.payload)


def _authenticated_data(sender: str, kind: str, seq: int, payload: bytes) -> bytes:
    """What a tag covers: a length-prefixed header naming sender, kind, seq, length."""
    head = f"{sender}|{kind}|{seq}|{len(payload)}|".encode()
    return len(head).to_bytes(2, "big") + head + payload


class AuthenticatedChannel:
    """Alice's and Bob's ends of the post-processing channel, in one process.

    ``send`` authenticates with the sender's pool, passes the frame through ``tamper``
    (an active attacker, for tests) and verifies it with the receiver's pool; a bad tag
    raises :class:`AuthenticationError` and the block must be abandoned.
    """

    def __init__(
        self, alice: AuthKeyPool, bob: AuthKeyPool, *, tamper: Tamper | None = None
    ) -> None:
        self._pools = {"alice": alice, "bob": bob}
        self._tamper = tamper
        self._hash_keys: dict[str, bytes] = {}
        self._seq = 0
        self._deferred: dict[str, list[bytes]] | None = None
        self._sent: dict[str, list[bytes]] = {"alice": [], "bob": []}
        self.messages = 0

    def begin_block(self) -> None:
        """Draw this block's Wegman-Carter hash key r (reused within the block only)."""
        self._hash_keys = {name: pool.take(16) for name, pool in self._pools.items()}

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Authenticate a burst of interactive messages with one tag per direction.

        Inside the block frames travel untagged; on exit each sender tags the exact
        sequence of frames it sent and the receiver checks it against the frames it got.
        Used for Cascade, whose hundreds of round trips would otherwise cost more key
        than they distil. Safe because nothing secret is output before the check: every
        parity Alice discloses is counted as leaked whatever Bob asked, Bob's corrections
        are checked by the verification hash, and a failed check discards the block.
        """
        if self._deferred is not None:
            raise RuntimeError("deferred authentication does not nest")
        self._deferred = {"alice": [], "bob": []}
        sent: dict[str, list[bytes]] = {"alice": [], "bob": []}
        self._sent = sent
        try:
            yield
        finally:
            received, self._deferred = self._deferred, None
        for sender in ("alice", "bob"):
            tag = self._tag(sender, b"".join(sent[sender]))
            receiver = "bob" if sender == "alice" else "alice"
            expected = self._tag(receiver, b"".join(received[sender]))
            self.messages += 1
            if not hmac.compare_digest(expected, tag):
                raise AuthenticationError(
                    f"the interactive transcript from {sender} failed authentication; "
                    "the block is discarded"
                )

    def _tag(self, owner: str, data: bytes) -> bytes:
        """``owner``'s Wegman-Carter tag of ``data``: its block hash key, a fresh pad."""
        pad = self._pools[owner].take(TAG_BYTES)
        return Poly1305.generate_tag(self._hash_keys[owner] + pad, data)

    def _send_deferred(
        self, received: dict[str, list[bytes]], sender: str, kind: str, payload: bytes
    ) -> bytes:
        """An untagged frame inside :meth:`deferred`; both ends log what they saw."""
        seq = self._seq
        self._seq += 1
        data = _authenticated_data(sender, kind, seq, payload)
        self._sent[sender].append(data)
        if self._tamper is not None:
            payload = self._tamper(Frame(sender, kind, seq, payload, b"")).payload
            data = _authenticated_data(sender, kind, seq, payload)
        # untampered, the receiver got exactly the bytes the sender framed
        received[sender].append(data)
        return payload

    def send(self, sender: str, kind: str, payload: bytes) -> bytes:
        if self._deferred is not None:
            return self._send_deferred(self._deferred, sender, kind, payload)
        if len(payload) > _MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes exceeds {_MAX_PAYLOAD}")
        receiver = "bob" if sender == "alice" else "alice"
        if not self._hash_keys:
            raise RuntimeError("begin_block() must be called before sending")
        seq = self._seq
        tag = self._tag(sender, _authenticated_data(sender, kind, seq, payload))
        frame = Frame(sender, kind, seq, payload, tag)
        if self._tamper is not None:
            frame = self._tamper(frame)
        self._seq += 1
        self.messages += 1
        # the receiver checks what arrived against the header it expects
        expected = self._tag(receiver, _authenticated_data(sender, kind, seq, frame.payload))
        if not hmac.compare_digest(expected, frame.tag):
            raise AuthenticationError(
                f"message {kind!r} #{seq} from {sender} failed authentication; "
                "the block is discarded"
            )
        return frame.payload
