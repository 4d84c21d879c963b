"""Events the handshake hands to its driver (the record layer / channel).

All are frozen, keyword-only dataclasses. Secrets never appear in ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

from handshake.keyschedule import export_keying_material

__all__ = ["Epoch", "Event", "HandshakeComplete", "KeysReady", "SendData", "SessionInfo"]


class Epoch(IntEnum):
    """Which keys protect the records carrying handshake bytes."""

    INITIAL = 0  # plaintext records: ClientHello, ServerHello
    HANDSHAKE = 1  # handshake traffic secrets
    APPLICATION = 2  # application traffic secrets


@dataclass(frozen=True, slots=True, kw_only=True)
class SendData:
    """Handshake bytes to send in records protected for ``epoch``."""

    epoch: Epoch
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysReady:
    """Install ``secret`` as the traffic secret of ``epoch`` in ``direction``.

    Derive the AES-256-GCM key and IV with :func:`handshake.keyschedule.traffic_keys`.
    Emitted before any :class:`SendData` that must be protected with it.
    """

    epoch: Epoch
    direction: Literal["read", "write"]
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """What was negotiated; handed over in :class:`HandshakeComplete`.

    ``components`` lists the key-exchange components in key-schedule order, e.g.
    ``("X25519", "ML-KEM-768", "QKD")``. ``auth_mode`` is ``"certificate"``,
    ``"raw-key"``, ``"psk"`` or ``"qkd-psk"``; ``signature_scheme`` names the peer's
    CertificateVerify scheme (None for PSK modes). ``peer_identity`` is the peer
    certificate's subject CN, ``"spki-sha256:<hex>"`` for a pinned raw key, the PSK
    identity, or ``"qkd-psk:<key_id>"``. ``qkd_key_ids`` lists the QKD keys consumed
    (confidentiality key first, then the authentication key). ``fallback`` says, in
    words, which stated fallback the policy took (None if none).
    """

    role: Literal["client", "server"]
    policy: str
    components: tuple[str, ...]
    cipher_suite: str
    auth_mode: str
    mutual: bool
    signature_scheme: str | None
    peer_identity: str | None
    peer_certificate: Any = field(default=None, repr=False)
    qkd_key_ids: tuple[str, ...] = ()
    qkd_source: Any = field(default=None, repr=False)
    local_sae_id: str | None = None
    peer_sae_id: str | None = None
    server_name: str = ""
    fallback: str | None = None
    kem_backends: tuple[str, ...] = ()
    transcript_hash: bytes = field(default=b"", repr=False)
    exporter_secret: bytes = field(default=b"", repr=False)
    resumption_secret: bytes = field(default=b"", repr=False)

    def export_keying_material(self, label: bytes, context: bytes = b"", length: int = 32) -> bytes:
        """RFC 8446-style exporter bound to this session."""
        return export_keying_material(self.exporter_secret, label, context, length)


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeComplete:
    """The handshake finished; both sides hold identical application secrets."""

    session: SessionInfo


Event = SendData | KeysReady | HandshakeComplete
