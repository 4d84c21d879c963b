"""Events the sans-IO :class:`~hybridchan._connection.Connection` hands to its adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ConnectionClosed", "DataReceived", "Event", "HandshakeCompleted", "KeysUpdated"]


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeCompleted:
    """The handshake finished; application data may flow. ``session`` is the handshake's
    ``SessionInfo`` (policy, components, peer identity, QKD key IDs, ...)."""

    session: Any


@dataclass(frozen=True, slots=True, kw_only=True)
class DataReceived:
    """Authenticated application data, in order. Never produced from a forged record."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysUpdated:
    """The traffic key for ``direction`` moved to ``generation``.

    ``qkd_key_id`` names the QKD key mixed in (``None``: plain TLS 1.3-style update,
    which happens only when the session has no QKD component or the policy allows
    falling back).
    """

    direction: Literal["read", "write"]
    generation: int
    qkd_key_id: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed:
    """The peer sent close-notify: no more data will arrive (we may still send)."""


Event = HandshakeCompleted | DataReceived | KeysUpdated | ConnectionClosed
