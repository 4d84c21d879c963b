"""Sans-IO hybrid handshake: X25519 + ML-KEM + QKD keys, ML-DSA / PSK / QKD-PSK auth.

Bytes in, events and bytes out (h11 / aioquic style)::

    hs = ClientHandshake(config, random=os.urandom, now=time.time)
    hs.start()
    hs.receive(Epoch.INITIAL, data_from_peer)
    while (event := hs.next_event()) is not None:
        ...  # SendData, KeysReady, HandshakeComplete

See ``docs/protocol.md`` for the wire format, key schedule and policies.
"""

from handshake import events, keyschedule, messages
from handshake._client import ClientHandshake
from handshake._server import ServerHandshake
from handshake.alerts import AlertDescription, decode_alert, encode_alert
from handshake.config import ExternalPSK, HandshakeConfig
from handshake.errors import (
    AuthenticationError,
    HandshakeError,
    KeyUnavailableError,
    PeerAlertError,
    PolicyError,
    ProtocolError,
    QKDKeyError,
    alert_for,
)
from handshake.events import Epoch, HandshakeComplete, KeysReady, SendData, SessionInfo
from handshake.policy import POLICIES

__all__ = [
    "POLICIES",
    "AlertDescription",
    "AuthenticationError",
    "ClientHandshake",
    "Epoch",
    "ExternalPSK",
    "HandshakeComplete",
    "HandshakeConfig",
    "HandshakeError",
    "KeyUnavailableError",
    "KeysReady",
    "PeerAlertError",
    "PolicyError",
    "ProtocolError",
    "QKDKeyError",
    "SendData",
    "ServerHandshake",
    "SessionInfo",
    "alert_for",
    "decode_alert",
    "encode_alert",
    "events",
    "keyschedule",
    "messages",
]
