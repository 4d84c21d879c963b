"""The QKD key-source interface the handshake consumes, and an in-memory pair.

Theory of operation
-------------------
A QKD link leaves identical key material at two sites. Each site's key manager
(KME) hands keys to its applications (SAEs). The side that starts a handshake
(the *initiator*, ETSI "master SAE") asks its key source for a fresh key
addressed to the peer SAE and gets ``(key_id, key)``; it sends only ``key_id``
on the wire. The responder (ETSI "slave SAE") asks its own key source for the
key with that ID. Each key is delivered to each side at most once.

Every implementation -- the in-memory pair below, the ETSI GS QKD 014 KME
clients in :mod:`qkd.kme` -- follows :class:`QKDKeySource` and raises only the
errors defined here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "InMemoryKeyPool",
    "KeyAlreadyUsedError",
    "KeySourceError",
    "KeyUnavailableError",
    "QKDKey",
    "QKDKeySource",
    "UnknownKeyIDError",
]


class KeySourceError(Exception):
    """Root of every key-source error. Messages never contain key material."""


class KeyUnavailableError(KeySourceError):
    """No key can be had now: the pool is empty, the link aborted, or the KME is down."""


class UnknownKeyIDError(KeySourceError):
    """The key ID is not known to this key source (or is addressed to another SAE)."""


class KeyAlreadyUsedError(KeySourceError):
    """The key with this ID was already delivered here; a QKD key is used only once."""


@dataclass(frozen=True, slots=True)
class QKDKey:
    """One QKD key as delivered to an SAE.

    ``key_id`` is a UUID string (ETSI GS QKD 014 ``key_ID``); ``key`` is the
    key material. ``repr`` never shows the key.
    """

    key_id: str
    key: bytes = field(repr=False)


@runtime_checkable
class QKDKeySource(Protocol):
    """What the handshake needs from a QKD key manager.

    ``sae_id`` is the local SAE; ``peer_sae_id`` the remote one.
    """

    @property
    def sae_id(self) -> str: ...

    def new_key(self, peer_sae_id: str, size_bytes: int = 32) -> QKDKey:
        """Reserve a fresh key for ``peer_sae_id`` (initiator side, ETSI enc_keys).

        Raises :class:`KeyUnavailableError` when no key can be had.
        """
        ...

    def get_key(self, peer_sae_id: str, key_id: str) -> QKDKey:
        """Fetch the key the peer reserved under ``key_id`` (responder side, ETSI dec_keys).

        Raises :class:`UnknownKeyIDError`, :class:`KeyAlreadyUsedError` or
        :class:`KeyUnavailableError`.
        """
        ...


def uuid4_text(random16: bytes) -> str:
    """``str(uuid.UUID(bytes=random16, version=4))`` without building a UUID object
    (a key ID per handshake: this is on the hot path)."""
    if len(random16) != 16:
        raise ValueError(f"a UUID needs 16 random bytes, got {len(random16)}")
    b = bytearray(random16)
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class InMemoryKeyPool:
    """Both ends of a simulated QKD link in one process: tests and the embedded demo.

    Key material comes from ``fill`` (default: ``os.urandom``-like source given by
    the caller as ``random_bytes``), as if distilled by the link. ``capacity`` caps
    the number of keys the link can still produce (``None``: unlimited);
    ``abort()`` simulates a link abort (QBER above threshold): every later
    ``new_key`` raises :class:`KeyUnavailableError`.

    Use :meth:`source` to get the key source of one SAE.
    """

    def __init__(
        self,
        random_bytes: Callable[[int], bytes],
        *,
        capacity: int | None = None,
    ) -> None:
        self._random_bytes = random_bytes
        self._capacity = capacity
        self._lock = threading.Lock()
        self._aborted: str | None = None
        # key_id -> (master SAE, slave SAE, key); removed once the slave fetched it.
        self._pending: OrderedDict[str, tuple[str, str, bytes]] = OrderedDict()
        self._delivered: set[str] = set()
        self.issued = 0

    def source(self, sae_id: str) -> _PoolSource:
        return _PoolSource(self, sae_id)

    def abort(self, reason: str = "QBER above threshold") -> None:
        with self._lock:
            self._aborted = reason

    @property
    def remaining(self) -> int | None:
        return None if self._capacity is None else self._capacity - self.issued

    def _new(self, master: str, slave: str, size: int) -> QKDKey:
        if size <= 0 or size > 1024:
            raise ValueError(f"key size must be 1..1024 bytes, got {size}")
        with self._lock:
            if self._aborted is not None:
                raise KeyUnavailableError(
                    f"QKD link aborted ({self._aborted}); no new keys until it recovers"
                )
            if self._capacity is not None and self.issued >= self._capacity:
                raise KeyUnavailableError(
                    "QKD key pool empty: the link has produced no further key yet; "
                    "retry later or lower the rekey rate"
                )
            self.issued += 1
            key_id = uuid4_text(self._random_bytes(16))
            key = self._random_bytes(size)
            self._pending[key_id] = (master, slave, key)
            return QKDKey(key_id, key)

    def _get(self, slave: str, master: str, key_id: str) -> QKDKey:
        with self._lock:
            if key_id in self._delivered:
                raise KeyAlreadyUsedError(
                    f"QKD key {key_id} was already delivered; keys are single-use"
                )
            entry = self._pending.get(key_id)
            if entry is None or entry[1] != slave or entry[0] != master:
                raise UnknownKeyIDError(
                    f"no QKD key {key_id} addressed from SAE {master!r} to SAE {slave!r}"
                )
            del self._pending[key_id]
            self._delivered.add(key_id)
            return QKDKey(key_id, entry[2])


class _PoolSource:
    """One SAE's view of an :class:`InMemoryKeyPool`."""

    def __init__(self, pool: InMemoryKeyPool, sae_id: str) -> None:
        self._pool = pool
        self._sae_id = sae_id

    @property
    def sae_id(self) -> str:
        return self._sae_id

    def new_key(self, peer_sae_id: str, size_bytes: int = 32) -> QKDKey:
        return self._pool._new(self._sae_id, peer_sae_id, size_bytes)

    def get_key(self, peer_sae_id: str, key_id: str) -> QKDKey:
        return self._pool._get(self._sae_id, peer_sae_id, key_id)

    def __repr__(self) -> str:
        return f"<QKD key source for SAE {self._sae_id!r}>"
