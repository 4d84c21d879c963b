"""Channel configuration: one frozen, validated object per endpoint.

:class:`ChannelConfig` wraps the handshake's ``HandshakeConfig`` (policy, KEMs,
authentication material, QKD key source, SAE IDs) and adds what the channel
itself needs: record size, rekey schedule, what to do when no QKD key can be
had for a rekey, and timeouts. Every field is checked when the object is built;
a bad value raises :class:`~hybridchan.errors.ConfigError` naming the field and
the values it accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

from hybridchan._record import AEAD_RECORD_LIMIT, MAX_PLAINTEXT
from hybridchan.errors import ConfigError

__all__ = ["ON_QKD_UNAVAILABLE", "ChannelConfig", "RekeySchedule"]

#: Allowed values of :attr:`ChannelConfig.on_qkd_unavailable`.
ON_QKD_UNAVAILABLE: Final = ("fail", "classical")
_MIN_RECORD: Final = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class RekeySchedule:
    """When a sender moves its traffic key forward (whichever limit comes first).

    ``None`` disables a limit. The defaults follow deployed QKD-fed tunnels
    (120 s plus a byte limit). Independently of this schedule the channel always
    rekeys before the AES-GCM usage limit.
    """

    #: Bytes of application data sent under one key.
    max_bytes: int | None = 1 << 30
    #: Records sent under one key (at most the AES-GCM limit, 2**24).
    max_records: int | None = None
    #: Seconds one key may be used for sending.
    max_seconds: float | None = 120.0

    def __post_init__(self) -> None:
        _positive_int("rekey.max_bytes", self.max_bytes, upper=None, optional=True)
        _positive_int("rekey.max_records", self.max_records, upper=AEAD_RECORD_LIMIT, optional=True)
        _timeout("rekey.max_seconds", self.max_seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelConfig:
    """Everything one endpoint needs to open or accept channels.

    ``handshake`` is a :class:`handshake.HandshakeConfig` (policy ``classical``,
    ``pqc``, ``hybrid``, ``hybrid+qkd`` or ``qkd-only``; KEMs; credential and trust
    store, pinned keys or PSK; QKD key source and SAE IDs; server name).
    """

    #: The handshake configuration (see :mod:`handshake`).
    handshake: Any
    #: Largest plaintext per record we send, 256..16384 bytes.
    record_size: int = MAX_PLAINTEXT
    #: When to move the sending key forward.
    rekey: RekeySchedule = field(default_factory=RekeySchedule)
    #: When a QKD session cannot get a fresh QKD key for a rekey: ``"fail"`` closes the
    #: channel (alert qkd_key_unavailable); ``"classical"`` performs a plain TLS 1.3-style
    #: update instead (and accepts one from the peer).
    on_qkd_unavailable: str = "fail"
    #: Seconds the whole handshake may take (``None``: no limit).
    handshake_timeout: float | None = 30.0
    #: Default I/O timeout of sync channels in seconds (``None``: blocking), as ``settimeout``.
    timeout: float | None = None
    #: Buffer limit of asyncio readers (``readline``/``readuntil`` bound), bytes.
    stream_limit: int = 1 << 16

    def __post_init__(self) -> None:
        if self.handshake is None:
            raise ConfigError("handshake is None: pass a handshake.HandshakeConfig")
        _positive_int("record_size", self.record_size, upper=MAX_PLAINTEXT, lower=_MIN_RECORD)
        if not isinstance(self.rekey, RekeySchedule):
            raise ConfigError(
                f"rekey is a {type(self.rekey).__name__}, not a schedule: "
                "pass a hybridchan.RekeySchedule"
            )
        if self.on_qkd_unavailable not in ON_QKD_UNAVAILABLE:
            raise ConfigError(
                f"on_qkd_unavailable is {self.on_qkd_unavailable!r}, which is not allowed: "
                f"use {' or '.join(map(repr, ON_QKD_UNAVAILABLE))}"
            )
        _timeout("handshake_timeout", self.handshake_timeout)
        _timeout("timeout", self.timeout)
        _positive_int("stream_limit", self.stream_limit, upper=None, lower=1024)


def _positive_int(
    name: str, value: object, *, upper: int | None, lower: int = 1, optional: bool = False
) -> None:
    if value is None and optional:
        return
    allowed = f"from {lower} to {upper}" if upper is not None else f"of at least {lower}"
    allowed = f"a whole number {allowed}" + (", or None for no limit" if optional else "")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} is {value!r}, not a whole number: use {allowed}")
    if value < lower or (upper is not None and value > upper):
        raise ConfigError(f"{name} is {value}, which is out of range: use {allowed}")


def _timeout(name: str, value: object) -> None:
    if value is None:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(
            f"{name} is {value!r}, which is not allowed: use a positive number of seconds, "
            "or None for no limit"
        )
