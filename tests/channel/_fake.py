"""A tiny handshake that follows docs/core-contract.md, to test the channel core alone.

It is not secure (both sides derive secrets from the two public randoms); it exists
so the record layer, key updates and adapters can be tested without the real
handshake's KEMs and certificates, quickly and deterministically.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from typing import Any

from handshake.errors import AuthenticationError, ProtocolError
from handshake.events import Epoch, HandshakeComplete, KeysReady, SendData, SessionInfo

_CH, _SH, _SFIN, _CFIN = b"CH", b"SH", b"SF", b"CF"
_MSG = 2 + 32


class FakeHandshake:
    def __init__(
        self,
        *,
        client: bool,
        random: Callable[[int], bytes],
        components: tuple[str, ...] = ("X25519", "ML-KEM-768"),
        qkd_source: Any = None,
        peer_sae_id: str | None = None,
        fail_with: Exception | None = None,
    ) -> None:
        self.client = client
        self._random = random
        self._components = components
        self._qkd_source = qkd_source
        self._peer_sae_id = peer_sae_id
        self._fail_with = fail_with
        self._events: deque[Any] = deque()
        self._buf = bytearray()
        self._expect = (_SH, Epoch.INITIAL) if client else (_CH, Epoch.INITIAL)
        self._crand = b""
        self._srand = b""

    def _secret(self, label: str) -> bytes:
        return hashlib.sha384(label.encode() + self._crand + self._srand).digest()

    def start(self) -> None:
        if self.client:
            self._crand = self._random(32)
            self._events.append(SendData(epoch=Epoch.INITIAL, data=_CH + self._crand))

    def receive(self, epoch: Epoch, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= _MSG:
            msg = bytes(self._buf[:_MSG])
            del self._buf[:_MSG]
            self._handle(epoch, msg[:2], msg[2:])

    def _handle(self, epoch: Epoch, kind: bytes, body: bytes) -> None:
        want, want_epoch = self._expect
        if kind != want or epoch != want_epoch:
            raise ProtocolError(f"fake: expected {want!r} in {want_epoch}, got {kind!r} in {epoch}")
        if self._fail_with is not None:
            raise self._fail_with
        ev = self._events.append
        if kind == _CH:
            self._crand, self._srand = body, self._random(32)
            ev(SendData(epoch=Epoch.INITIAL, data=_SH + self._srand))
            ev(KeysReady(epoch=Epoch.HANDSHAKE, direction="write", secret=self._secret("s hs")))
            ev(KeysReady(epoch=Epoch.HANDSHAKE, direction="read", secret=self._secret("c hs")))
            ev(SendData(epoch=Epoch.HANDSHAKE, data=_SFIN + self._secret("sf")[:32]))
            ev(KeysReady(epoch=Epoch.APPLICATION, direction="write", secret=self._secret("s ap")))
            self._expect = (_CFIN, Epoch.HANDSHAKE)
        elif kind == _SH:
            self._srand = body
            ev(KeysReady(epoch=Epoch.HANDSHAKE, direction="read", secret=self._secret("s hs")))
            self._expect = (_SFIN, Epoch.HANDSHAKE)
        elif kind == _SFIN:
            if body != self._secret("sf")[:32]:
                raise AuthenticationError("fake: bad server Finished")
            ev(KeysReady(epoch=Epoch.HANDSHAKE, direction="write", secret=self._secret("c hs")))
            ev(SendData(epoch=Epoch.HANDSHAKE, data=_CFIN + self._secret("cf")[:32]))
            ev(KeysReady(epoch=Epoch.APPLICATION, direction="write", secret=self._secret("c ap")))
            ev(KeysReady(epoch=Epoch.APPLICATION, direction="read", secret=self._secret("s ap")))
            ev(HandshakeComplete(session=self._session()))
            self._expect = (b"--", Epoch.APPLICATION)
        else:
            if body != self._secret("cf")[:32]:
                raise AuthenticationError("fake: bad client Finished")
            ev(KeysReady(epoch=Epoch.APPLICATION, direction="read", secret=self._secret("c ap")))
            ev(HandshakeComplete(session=self._session()))
            self._expect = (b"--", Epoch.APPLICATION)

    def _session(self) -> SessionInfo:
        return SessionInfo(
            role="client" if self.client else "server",
            policy="fake",
            components=self._components,
            cipher_suite="AES_256_GCM_SHA384",
            auth_mode="fake",
            mutual=False,
            signature_scheme=None,
            peer_identity="fake-server" if self.client else "fake-client",
            qkd_source=self._qkd_source,
            peer_sae_id=self._peer_sae_id,
        )

    def next_event(self) -> Any:
        return self._events.popleft() if self._events else None
