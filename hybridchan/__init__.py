"""hybridchan — quantum-safe secure channels.

Keys come from X25519, ML-KEM and (simulated) QKD together; records are protected
with AES-256-GCM; traffic keys are refreshed on a schedule, mixing in fresh QKD
keys. Two APIs run on one sans-IO core::

    import hybridchan
    with hybridchan.connect(("127.0.0.1", 4433), config) as channel:   # blocking
        channel.sendall(b"hello"); channel.recv(1024)

    reader, writer = await hybridchan.open_connection("127.0.0.1", 4433, config)  # asyncio

See ``docs/channel.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hybridchan._aio import ChannelReader, ChannelWriter, open_connection, start_server
    from hybridchan._sync import Channel, Server, connect, wrap_socket
    from hybridchan.config import ChannelConfig, RekeySchedule
    from hybridchan.errors import (
        AuthenticationError,
        BadRecordMAC,
        ChannelClosed,
        ChannelError,
        ClosedWithoutHandshake,
        ConfigError,
        ConnectTimeout,
        ForeignProtocolError,
        HandshakeError,
        HandshakeTimeout,
        KeyUnavailableError,
        PolicyError,
        ProtocolError,
        TruncatedError,
    )

__all__ = [
    "AuthenticationError",
    "BadRecordMAC",
    "Channel",
    "ChannelClosed",
    "ChannelConfig",
    "ChannelError",
    "ChannelReader",
    "ChannelWriter",
    "ClosedWithoutHandshake",
    "ConfigError",
    "ConnectTimeout",
    "ForeignProtocolError",
    "HandshakeError",
    "HandshakeTimeout",
    "KeyUnavailableError",
    "PolicyError",
    "ProtocolError",
    "RekeySchedule",
    "Server",
    "TruncatedError",
    "connect",
    "open_connection",
    "start_server",
    "wrap_socket",
]
__version__ = "0.1.0"

# Imported lazily so that ``import hybridchan`` (and the CLI) stay light and a layer
# that is still missing does not break the others.
_LAZY: dict[str, str] = {
    "Channel": "hybridchan._sync",
    "Server": "hybridchan._sync",
    "connect": "hybridchan._sync",
    "wrap_socket": "hybridchan._sync",
    "ChannelReader": "hybridchan._aio",
    "ChannelWriter": "hybridchan._aio",
    "open_connection": "hybridchan._aio",
    "start_server": "hybridchan._aio",
    "ChannelConfig": "hybridchan.config",
    "RekeySchedule": "hybridchan.config",
    "AuthenticationError": "hybridchan.errors",
    "BadRecordMAC": "hybridchan.errors",
    "ChannelClosed": "hybridchan.errors",
    "ChannelError": "hybridchan.errors",
    "ClosedWithoutHandshake": "hybridchan.errors",
    "ConfigError": "hybridchan.errors",
    "ConnectTimeout": "hybridchan.errors",
    "ForeignProtocolError": "hybridchan.errors",
    "HandshakeError": "hybridchan.errors",
    "HandshakeTimeout": "hybridchan.errors",
    "KeyUnavailableError": "hybridchan.errors",
    "PolicyError": "hybridchan.errors",
    "ProtocolError": "hybridchan.errors",
    "TruncatedError": "hybridchan.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hybridchan' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
