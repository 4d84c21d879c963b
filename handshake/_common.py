"""Machinery shared by the client and server state machines (private).

Theory of operation
-------------------
A handshake object owns a transcript hash, one :class:`MessageBuffer` per epoch, a queue
of events and the current *state*. A state is a small object that knows which single
message it accepts next and holds only the secrets valid at that point; its ``handle``
returns the next state. Anything else is "unexpected message: expected X, got Y". After
any error the handshake is dead: every later call raises the same error again.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import kem
from handshake.alerts import AlertDescription
from handshake.config import HandshakeConfig
from handshake.errors import (
    HandshakeError,
    KeyUnavailableError,
    PolicyError,
    ProtocolError,
    QKDKeyError,
)
from handshake.events import Epoch, Event, HandshakeComplete, KeysReady, SendData
from handshake.messages import Message, MessageBuffer, frame
from qkd import keysource as qkd_keysource

RandomFn = Callable[[int], bytes]
_EPOCHS = tuple(Epoch)  # iterating the enum class itself is slow; done once per handshake
NowFn = Callable[[], float]


class State(Protocol):
    name: str
    epoch: Epoch

    def handle(self, msg: Message, raw: bytes) -> State: ...


def unexpected(expected: str, got: Message | str) -> ProtocolError:
    got_name = got if isinstance(got, str) else type(got).__name__
    return ProtocolError(
        f"unexpected message: expected {expected}, got {got_name}",
        alert=AlertDescription.unexpected_message,
    )


class Transcript:
    """Running SHA-384 over the framed handshake messages."""

    __slots__ = ("_digest", "_hash")

    def __init__(self) -> None:
        self._hash = hashlib.sha384()
        self._digest: bytes | None = None  # TH of the messages so far, until the next add

    def add(self, raw: bytes) -> None:
        self._hash.update(raw)
        self._digest = None

    def digest(self) -> bytes:
        if self._digest is None:
            self._digest = self._hash.copy().digest()
        return self._digest


class Done:
    """Terminal state: the handshake completed; further handshake messages are unexpected."""

    name = "Done"
    epoch = Epoch.APPLICATION

    def handle(self, msg: Message, raw: bytes) -> State:
        raise unexpected("nothing (handshake complete)", msg)


class HandshakeBase:
    """Event queue, buffering, transcript and the error latch."""

    def __init__(self, config: HandshakeConfig, random: RandomFn, now: NowFn) -> None:
        self.config = config
        self.random = random
        self.now = now
        self.transcript = Transcript()
        self._events: deque[Event] = deque()
        self._pending = bytearray()
        self._buffers = {epoch: MessageBuffer() for epoch in _EPOCHS}
        self._state: State | None = None
        self._error: HandshakeError | None = None
        self.complete = False

    # -- driver API ------------------------------------------------------------------

    def receive(self, epoch: Epoch | int, data: bytes) -> None:
        """Feed handshake bytes that arrived in records of ``epoch``."""
        self._guard(lambda: self._receive(epoch, data))

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    @property
    def state_name(self) -> str:
        return "Failed" if self._error else (self._state.name if self._state else "Start")

    # -- helpers for states ----------------------------------------------------------

    def push(self, msg: Message) -> None:
        """Frame ``msg``, add it to the transcript and to the outgoing flight."""
        raw = frame(msg)
        self.transcript.add(raw)
        self._pending += raw

    def flush(self, epoch: Epoch) -> None:
        """Emit the pending flight as one SendData for ``epoch``."""
        if self._pending:
            self._events.append(SendData(epoch=epoch, data=bytes(self._pending)))
            self._pending.clear()

    def send_raw(self, epoch: Epoch, raw: bytes) -> None:
        """Send an already framed and transcript-hashed message (the bound ClientHello)."""
        self._events.append(SendData(epoch=epoch, data=raw))

    def keys(self, epoch: Epoch, direction: str, secret: bytes) -> None:
        self._events.append(KeysReady(epoch=epoch, direction=direction, secret=secret))  # type: ignore[arg-type]

    def finish(self, event: HandshakeComplete) -> None:
        self.complete = True
        self._events.append(event)

    def kem_for(self, name: str) -> kem.KEM:
        try:
            factory = self.config.kem_factory or kem.get_kem
            return factory(name, self.config.kem_backend)
        except kem.KEMError as exc:
            raise HandshakeError(f"key exchange {name} unavailable: {exc}") from None

    def kem_random(self, k: kem.KEM, size: int) -> bytes | None:
        """Injected randomness for KEMs that honour it; None lets the backend draw."""
        return self.random(size) if k.supports_derandomized else None

    # -- internals -------------------------------------------------------------------

    def _guard(self, action: Callable[[], None]) -> None:
        if self._error is not None:
            raise HandshakeError(
                f"handshake already failed ({self._error}); start a new one",
                alert=self._error.alert,
            )
        try:
            action()
        except HandshakeError as exc:
            self._error = exc
            raise
        except Exception as exc:  # a bug or backend failure: never leak raw exceptions
            self._error = HandshakeError(f"internal error: {type(exc).__name__}: {exc}")
            raise self._error from exc

    def _receive(self, epoch: Epoch | int, data: bytes) -> None:
        try:
            if type(epoch) is not Epoch:  # the enum call is slow; drivers pass Epochs
                epoch = Epoch(epoch)
        except ValueError:
            raise ProtocolError(
                f"unknown epoch {epoch}", alert=AlertDescription.illegal_parameter
            ) from None
        buffer = self._buffers[epoch]
        buffer.feed(data)
        while (item := buffer.pop()) is not None:
            msg, raw = item
            state = self._state
            if state is None:
                raise unexpected("nothing before start()", msg)
            if epoch != state.epoch:
                raise ProtocolError(
                    f"unexpected message: {type(msg).__name__} arrived in epoch "
                    f"{epoch.name}, expected {state.epoch.name} ({state.name})",
                    alert=AlertDescription.unexpected_message,
                )
            self._state = state.handle(msg, raw)
            if self._state.epoch != epoch and len(buffer):
                raise ProtocolError(
                    f"{len(buffer)} bytes of handshake data left in epoch {epoch.name} "
                    "after the keys changed",
                    alert=AlertDescription.unexpected_message,
                )


def require_peer_check(cfg: HandshakeConfig, role: str) -> None:
    """The material to check the peer's Certificate must match the auth mode: a CA store
    for X.509 chains, pins for raw keys (else every handshake would fail at that step)."""
    if cfg.auth_mode == "certificate" and not cfg.trust_store:
        raise PolicyError(f"a {role} checking certificates needs trust_store (its CAs)")
    if cfg.auth_mode == "raw-key" and not cfg.pinned_keys:
        raise PolicyError(f"a {role} checking raw public keys needs pinned_keys (SPKI DER)")


def qkd_error(exc: qkd_keysource.KeySourceError, what: str) -> HandshakeError:
    """Map a key-source error to the handshake error naming its cause."""
    if isinstance(exc, qkd_keysource.UnknownKeyIDError | qkd_keysource.KeyAlreadyUsedError):
        return QKDKeyError(f"{what}: {exc}")
    return KeyUnavailableError(f"{what}: QKD key source failed: {exc}")


def call_source(fn: Callable[[], Any], what: str) -> Any:
    try:
        return fn()
    except qkd_keysource.KeySourceError as exc:
        raise qkd_error(exc, what) from None
