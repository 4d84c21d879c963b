"""Future adversaries and the oracle that simulates what they can break.

"Breaking" an algorithm is simulated, never assumed: while sessions are being
recorded, the :class:`Escrow` notes every private key generated behind a public
value (ephemeral KEM keys, long-term signing keys) and, for the omniscient
:data:`REFEREE` only, every QKD key delivered. Later, an :class:`Oracle` built for
one adversary hands out only what that adversary's capabilities cover -- the
private key behind a given public value for a broken algorithm, a signing key
after a theft. A compromised KME is not simulated at all: the oracle copies the
real KME's SQLite key store (:class:`KMEStores`) and grants a QKD key only if its
bits are in the copy -- found by :meth:`qkd.keystore.KeyStore.stored_bits`.
Everything else the adversary must derive itself from the recording.
"""

from __future__ import annotations

import enum
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kem
from qkd.keysource import QKDKey
from qkd.keystore import KeyStore

__all__ = [
    "ADVERSARIES",
    "REFEREE",
    "Adversary",
    "Capability",
    "Escrow",
    "EscrowKEM",
    "EscrowKeySource",
    "KMEStores",
    "NotGranted",
    "Oracle",
    "escrow_kem_factory",
    "read_stolen_store",
]


class Capability(enum.Enum):
    """What a future adversary can do, stated precisely."""

    #: A cryptographically relevant quantum computer: breaks X25519 (ECDH) and
    #: forges/recovers ECDSA and Ed25519 keys (Shor).
    QUANTUM = "quantum"
    #: Later theft of long-term signing keys (certificate keys, ML-DSA included)
    #: and external PSKs -- after the sessions ended.
    STEAL_LONG_TERM_KEYS = "steal-long-term-keys"
    #: A later cryptanalytic break of ML-KEM (not known today).
    BREAK_MLKEM = "break-ml-kem"
    #: Later compromise of a KME that kept delivered keys instead of erasing them.
    KME_RETAINED = "kme-retained-keys"
    #: Later compromise of a KME that erased keys once delivered (as it must).
    KME_ERASED = "kme-erased-keys"


# Which algorithms each capability breaks, for the oracle.
_BREAKS: dict[Capability, frozenset[str]] = {
    Capability.QUANTUM: frozenset({"X25519", "ECDSA-P256", "Ed25519"}),
    Capability.BREAK_MLKEM: frozenset({"ML-KEM-768", "ML-KEM-1024"}),
    Capability.STEAL_LONG_TERM_KEYS: frozenset(),
    Capability.KME_RETAINED: frozenset(),
    Capability.KME_ERASED: frozenset(),
}


_KME = frozenset({Capability.KME_RETAINED, Capability.KME_ERASED})


@dataclass(frozen=True, slots=True)
class Adversary:
    name: str
    capabilities: frozenset[Capability]
    description: str

    def breaks(self, algorithm: str) -> bool:
        return any(algorithm in _BREAKS[c] for c in self.capabilities)

    @property
    def steals_long_term_keys(self) -> bool:
        return Capability.STEAL_LONG_TERM_KEYS in self.capabilities

    @property
    def omniscient(self) -> bool:
        """The referee: every capability at once (it reads the escrow, not a KME)."""
        return self.capabilities == frozenset(Capability)


def _adv(name: str, description: str, *caps: Capability) -> Adversary:
    return Adversary(name, frozenset(caps), description)


C = Capability
#: The standard adversaries of the RNDL matrix, weakest first.
ADVERSARIES: tuple[Adversary, ...] = (
    _adv("quantum", "quantum computer later: breaks X25519, ECDSA, Ed25519", C.QUANTUM),
    _adv(
        "stolen-keys",
        "long-term signing keys and PSKs stolen after the sessions",
        C.STEAL_LONG_TERM_KEYS,
    ),
    _adv(
        "quantum+stolen-keys",
        "quantum computer and stolen long-term keys",
        C.QUANTUM,
        C.STEAL_LONG_TERM_KEYS,
    ),
    _adv(
        "quantum+ml-kem", "quantum computer and a later break of ML-KEM", C.QUANTUM, C.BREAK_MLKEM
    ),
    _adv("kme-erased", "KME compromised later; it had erased delivered keys", C.KME_ERASED),
    _adv("kme-retained", "KME compromised later; it had kept delivered keys", C.KME_RETAINED),
    _adv(
        "quantum+ml-kem+kme-erased",
        "all of the above against an erasing KME",
        C.QUANTUM,
        C.BREAK_MLKEM,
        C.STEAL_LONG_TERM_KEYS,
        C.KME_ERASED,
    ),
    _adv(
        "quantum+ml-kem+kme-retained",
        "all of the above against a retaining KME",
        C.QUANTUM,
        C.BREAK_MLKEM,
        C.STEAL_LONG_TERM_KEYS,
        C.KME_RETAINED,
    ),
)


#: The positive control: every capability, so the oracle grants all the escrow holds
#: (QKD keys included). Decrypting with it shows a recording is readable.
REFEREE: Adversary = Adversary(
    "referee", frozenset(Capability), "omniscient referee: everything the escrow holds"
)


class NotGranted(LookupError):
    """The adversary's capabilities do not cover this request."""


@dataclass
class Escrow:
    """Everything an omniscient referee saw while sessions were recorded.

    Filled by the experiment harness (never by the channel itself): KEM private
    keys by ``(algorithm, public value)``, long-term signing keys and PSKs by
    label, QKD keys by key ID (for the :data:`REFEREE` only: a KME adversary reads
    the KME's stolen store instead, see :class:`KMEStores`), and OpenSSL TLS key
    logs by client random.
    """

    kem_private: dict[tuple[str, bytes], Any] = field(default_factory=dict, repr=False)
    long_term: dict[str, Any] = field(default_factory=dict, repr=False)
    qkd_keys: dict[str, bytes] = field(default_factory=dict, repr=False)
    tls_secrets: dict[bytes, dict[str, bytes]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def note_kem_key(self, algorithm: str, public: bytes, private: Any) -> None:
        with self._lock:
            self.kem_private[(algorithm, bytes(public))] = private

    def note_long_term(self, label: str, secret: Any) -> None:
        with self._lock:
            self.long_term[label] = secret

    def note_qkd_key(self, key_id: str, key: bytes) -> None:
        with self._lock:
            self.qkd_keys[key_id] = bytes(key)


# ---- escrow hooks (the referee's, never the endpoints') ---------------------------------


class EscrowKEM:
    """Delegates to a real KEM and notes each generated private key by public value."""

    def __init__(self, inner: kem.KEM, escrow: Escrow) -> None:
        self._inner, self._escrow = inner, escrow

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def generate_keypair(self, seed: bytes | None = None) -> kem.KeyPair:
        pair = self._inner.generate_keypair(seed)
        parts = getattr(self._inner, "parts", None)
        if parts is None:
            self._escrow.note_kem_key(self._inner.name, pair.public, pair.private)
        else:  # a hybrid: escrow each component on its own
            for part, sub in zip(parts, pair.private.pairs, strict=True):
                self._escrow.note_kem_key(part.name, sub.public, sub.private)
        return pair


def escrow_kem_factory(escrow: Escrow) -> Callable[[str, str], Any]:
    """A ``HandshakeConfig.kem_factory`` whose KEMs note their private keys in ``escrow``."""

    def factory(name: str, backend: str) -> Any:
        return EscrowKEM(kem.get_kem(name, backend), escrow)

    return factory


class EscrowKeySource:
    """A QKD key source whose deliveries are also noted in the escrow (the referee's view).

    ``ids`` (optional) collects the key IDs this source drew with ``new_key``.
    """

    def __init__(self, inner: Any, escrow: Escrow, ids: list[str] | None = None) -> None:
        self._inner, self._escrow = inner, escrow
        self._ids = ids if ids is not None else []

    @property
    def sae_id(self) -> str:
        return str(self._inner.sae_id)

    def new_key(self, peer_sae_id: str, size_bytes: int = 32) -> QKDKey:
        key: QKDKey = self._inner.new_key(peer_sae_id, size_bytes)
        self._escrow.note_qkd_key(key.key_id, key.key)
        self._ids.append(key.key_id)
        return key

    def get_key(self, peer_sae_id: str, key_id: str) -> QKDKey:
        key: QKDKey = self._inner.get_key(peer_sae_id, key_id)
        self._escrow.note_qkd_key(key.key_id, key.key)
        return key


@dataclass(frozen=True, slots=True)
class KMEStores:
    """The key-store files of the two KMEs that served the recorded QKD link.

    ``erasing``: the client's site (KME A), which erased delivered keys as it must;
    ``retaining``: the server's site (KME B), run with the insecure
    ``retain_delivered`` option. Both held the same key material.
    """

    erasing: Path
    retaining: Path

    def store_for(self, adversary: Adversary) -> Path | None:
        """The store ``adversary`` compromised (``None``: no KME)."""
        if Capability.KME_RETAINED in adversary.capabilities:
            return self.retaining
        if Capability.KME_ERASED in adversary.capabilities:
            return self.erasing
        return None


def read_stolen_store(store: Path, key_id: str) -> bytes | None:
    """The compromise itself: copy the store's file(s), look ``key_id`` up in the copy.

    The database and any ``-wal`` file are copied (what a thief takes from the disk);
    the copy is opened with the store's own :class:`KeyStore` and read with
    :meth:`KeyStore.stored_bits`. ``None``: the bits are not in the files.
    """
    if not store.exists():
        raise NotGranted(f"there is no KME store file at {store} to steal")
    with tempfile.TemporaryDirectory(prefix="stolen-kme-") as loot:
        copy = Path(loot) / store.name
        for suffix in ("", "-wal"):
            source = store.with_name(store.name + suffix)
            if source.exists():
                shutil.copyfile(source, copy.with_name(copy.name + suffix))
        with KeyStore(copy) as stolen:
            return stolen.stored_bits(key_id)


class Oracle:
    """What one adversary may learn from the escrow or a stolen KME store -- nothing more.

    ``kme_stores``: where the KMEs of the recorded QKD link keep their stores; an
    adversary with a KME capability gets a QKD key only if the bits are in the
    copy of its KME's store file.
    """

    def __init__(
        self, escrow: Escrow, adversary: Adversary, kme_stores: KMEStores | None = None
    ) -> None:
        self._escrow = escrow
        self._kme_stores = kme_stores
        self.adversary = adversary

    def kem_private_key(self, algorithm: str, public: bytes) -> Any:
        """The private key behind ``public`` if the adversary breaks ``algorithm``."""
        if not self.adversary.breaks(algorithm):
            raise NotGranted(f"{self.adversary.name} cannot break {algorithm}")
        try:
            return self._escrow.kem_private[(algorithm, bytes(public))]
        except KeyError:
            raise NotGranted(f"no {algorithm} key with that public value was recorded") from None

    def long_term_secret(self, label: str) -> Any:
        if not self.adversary.steals_long_term_keys:
            raise NotGranted(f"{self.adversary.name} has not stolen long-term keys")
        try:
            return self._escrow.long_term[label]
        except KeyError:
            raise NotGranted(f"no long-term secret {label!r}") from None

    def qkd_key(self, key_id: str) -> bytes:
        """A QKD key: the referee's from the escrow; anyone else's from a stolen KME store."""
        if self.adversary.omniscient:
            try:
                return self._escrow.qkd_keys[key_id]
            except KeyError:
                raise NotGranted(f"no QKD key {key_id} was delivered while recording") from None
        stores = self._kme_stores
        store = stores.store_for(self.adversary) if stores is not None else None
        if store is None:
            if stores is None and self.adversary.capabilities & _KME:
                raise NotGranted("no KME served this recording: there is no store to steal")
            raise NotGranted(f"{self.adversary.name} has not compromised a KME")
        bits = read_stolen_store(store, key_id)
        if bits is None:
            raise NotGranted(
                f"QKD key {key_id} is not in the stolen KME store {store.name}: "
                "erased after delivery (or never held)"
            )
        return bits

    def tls_secrets(
        self, client_random: bytes, group_algorithms: tuple[str, ...]
    ) -> dict[str, bytes]:
        """OpenSSL TLS 1.3 traffic secrets -- only if every group component is broken.

        OpenSSL does not expose its ephemeral private keys, so for the TLS
        baseline a broken key exchange is simulated by releasing the key log.
        """
        missing = [a for a in group_algorithms if not self.adversary.breaks(a)]
        if missing:
            raise NotGranted(f"{self.adversary.name} cannot break {', '.join(missing)}")
        try:
            return self._escrow.tls_secrets[client_random]
        except KeyError:
            raise NotGranted("no TLS key log for that session") from None
