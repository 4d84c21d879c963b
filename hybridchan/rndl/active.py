"""Active attacks: a man-in-the-middle relay and the four attack scenarios of issue 7.

Theory of operation
-------------------
:class:`MitmRelay` is Eve on the wire. For each victim connection it runs *two real
hybridchan handshakes* at once: as the server towards the client (Alice), with
whatever credential Eve holds, and as a client towards the real server (Bob). If both
succeed it forwards the application plaintext between the two channels, reading it
and optionally changing it (``tamper``). If either fails, nothing is forwarded.

The scenarios run real channels over loopback TCP, one per :data:`CONFIGURATIONS`
entry, and return frozen result dataclasses saying what each party saw:

(a) :func:`mitm_without_keys` -- Eve has her own CA, her own QKD link and guesses
    the QKD keys she cannot get. Authentication fails; no application byte reaches her.
(b) :func:`mitm_with_stolen_keys` -- Eve holds the server's certificate key during the
    handshake; for QKD she controlled the bootstrap authentication of the QKD link, so
    she runs two links, Alice<->Eve and Eve<->Bob (two ``InMemoryKeyPool`` objects).
    The attack succeeds everywhere, QKD included: QKD needs authentication too.
(c) :func:`stolen_key_after_session` -- an honest session is recorded
    (:class:`~hybridchan.rndl.capture.CaptureRelay`); later Eve steals the long-term
    authentication key and recomputes the key schedule from the recording. The key
    exchange was ephemeral, so the first AEAD tag fails. A referee holding the
    ephemeral secrets runs the *same* decryption code and recovers everything: the
    failure is the missing secret, not a broken attack.
(d) :func:`quantum_channel_eavesdropper` -- intercept-resend on the simulated quantum
    channel pushes the QBER over the threshold, the block aborts, the key pool reports
    the abort, and a ``hybrid+qkd`` channel fails closed (alert 220), or with
    ``allow_fallback=True`` continues as ``hybrid`` and says so.

Nothing here prints or returns key material; results carry key IDs, alert names and
the application plaintext the parties (and Eve) actually saw.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
from cryptography.hazmat.primitives import serialization

import kem
from handshake import HandshakeConfig
from handshake._codec import Reader
from handshake.alerts import AlertDescription
from handshake.keyschedule import EarlySecret, traffic_keys, transcript_hash
from handshake.messages import ClientHello, HandshakeType, QKDKeyRef, ServerHello
from handshake.pki import Credential, create_ca, issue_certificate
from handshake.policy import GROUP_NAMES
from hybridchan._record import HEADER, HEADER_SIZE, ContentType, RecordProtection
from hybridchan._sync import Channel, Server, connect, wrap_socket
from hybridchan.config import ChannelConfig
from hybridchan.errors import BadRecordMAC
from hybridchan.rndl.capture import Capture, CaptureRelay, read_capture
from qkd.keysource import InMemoryKeyPool, KeyUnavailableError, QKDKey
from qkd.sim import Eavesdropper, LinkParams, PostProcessingParams, QKDLink

__all__ = [
    "CONFIGURATIONS",
    "REQUEST",
    "SERVER_NAME",
    "Configuration",
    "EavesdropResult",
    "MitmRelay",
    "MitmResult",
    "MitmSession",
    "RecordingResult",
    "SideOutcome",
    "configuration",
    "mitm_with_stolen_keys",
    "mitm_without_keys",
    "quantum_channel_eavesdropper",
    "stolen_key_after_session",
]

CLIENT_SAE: Final = "sae-alice"
SERVER_SAE: Final = "sae-bob"
SERVER_NAME: Final = "bob.hybridchan.test"
#: What Alice sends (one line) and the account Eve redirects it to in scenario (b).
REQUEST: Final = b"transfer 100 EUR to account 1234\n"
_VICTIM_ACCOUNT: Final = b"account 1234"
_EVE_ACCOUNT: Final = b"account 6666"
_TIMEOUT: Final = 10.0


# -- configurations ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Configuration:
    """One channel configuration of the comparison (see ``docs/rndl.md``).

    ``signature`` is the certificate key algorithm (``None``: PSK-style auth);
    ``kems`` the key-share groups; ``auth_mode`` as in :class:`handshake.HandshakeConfig`.
    """

    name: str
    policy: str
    kems: tuple[str, ...] | None
    auth_mode: str
    signature: str | None

    @property
    def uses_qkd(self) -> bool:
        return self.policy in ("hybrid+qkd", "qkd-only")


_CONFIGURATIONS: Final = {
    c.name: c
    for c in (
        Configuration(
            name="classical", policy="classical", kems=("X25519",),
            auth_mode="certificate", signature="ed25519",
        ),
        Configuration(
            name="pqc", policy="pqc", kems=("ML-KEM-768",),
            auth_mode="certificate", signature="ml-dsa-65",
        ),
        Configuration(
            name="hybrid", policy="hybrid", kems=("X25519MLKEM768",),
            auth_mode="certificate", signature="ml-dsa-65",
        ),
        Configuration(
            name="qkd-only", policy="qkd-only", kems=None, auth_mode="qkd-psk", signature=None
        ),
        Configuration(
            name="hybrid+qkd", policy="hybrid+qkd", kems=("X25519MLKEM768",),
            auth_mode="certificate", signature="ml-dsa-65",
        ),
    )
}  # fmt: skip
#: Names of the configurations every scenario runs.
CONFIGURATIONS: Final = tuple(_CONFIGURATIONS)


def configuration(name: str) -> Configuration:
    """The :class:`Configuration` called ``name`` (one of :data:`CONFIGURATIONS`)."""
    try:
        return _CONFIGURATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown configuration {name!r}; choose one of {', '.join(CONFIGURATIONS)}"
        ) from None


@dataclass(frozen=True, slots=True)
class _PKI:
    ca: Credential
    server: Credential


@functools.lru_cache(maxsize=8)
def _pki(algorithm: str, owner: str) -> _PKI:
    """A CA and a server certificate for :data:`SERVER_NAME`, made once per process.

    ``owner="victims"`` is the real PKI Alice trusts; ``owner="eve"`` is Eve's own
    self-signed CA issuing a certificate with the very same name.
    """
    ca = create_ca(f"{owner} CA", algorithm=algorithm)
    server = issue_certificate(ca, SERVER_NAME, algorithm=algorithm, dns_names=[SERVER_NAME])
    return _PKI(ca, server)


def _channel_config(
    conf: Configuration,
    *,
    server: bool,
    pki: _PKI | None = None,
    qkd_source: Any = None,
    allow_fallback: bool = False,
) -> ChannelConfig:
    """One endpoint's ChannelConfig for ``conf`` (Alice, Bob, or one of Eve's halves).

    A server presents ``pki.server``; a client trusts ``pki.ca``.
    """
    options: dict[str, Any] = {
        "policy": conf.policy,
        "kems": conf.kems,
        "auth_mode": conf.auth_mode,
        "server_name": SERVER_NAME,
        "allow_fallback": allow_fallback,
    }
    if conf.auth_mode == "certificate":
        assert pki is not None
        options["trust_store"] = (pki.ca.certificate,)
        if server:
            options["credential"] = pki.server
    if qkd_source is not None:
        options["qkd_source"] = qkd_source
        options["peer_sae_id"] = CLIENT_SAE if server else SERVER_SAE
    return ChannelConfig(
        handshake=HandshakeConfig(**options), handshake_timeout=_TIMEOUT, timeout=_TIMEOUT
    )


# -- results -------------------------------------------------------------------------------


def _alert_text(value: object) -> str | None:
    if value is None:
        return None
    try:
        desc = AlertDescription(int(value))  # type: ignore[call-overload]
    except ValueError:
        return f"unknown ({value})"
    return f"{desc.name} ({int(desc)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class SideOutcome:
    """What one party saw: did its handshake complete, which error and alert, what data.

    ``alert_sent`` / ``alert_received`` read like ``"unknown_ca (48)"``. ``received``
    is the application plaintext this party received (never key material).
    """

    party: str
    handshake_completed: bool
    error: str | None = None
    detail: str | None = None
    alert_sent: str | None = None
    alert_received: str | None = None
    peer_identity: str | None = None
    components: tuple[str, ...] = ()
    qkd_key_ids: tuple[str, ...] = ()
    fallback: str | None = None
    received: bytes = b""

    @property
    def alert(self) -> str | None:
        """The alert that ended this party's handshake (sent or received), if any."""
        return self.alert_sent or self.alert_received

    def describe(self) -> str:
        if self.handshake_completed:
            via = " + ".join(self.components) or "?"
            extra = f"; fallback: {self.fallback}" if self.fallback else ""
            peer = self.peer_identity or "not authenticated"
            return f"{self.party}: handshake OK ({via}, peer {peer}){extra}"
        alerts = ", ".join(
            f"{what} {alert}"
            for what, alert in (("sent", self.alert_sent), ("received", self.alert_received))
            if alert
        )
        return f"{self.party}: FAILED with {self.error} ({alerts or 'no alert'})"


_PUBLIC_ERRORS: Final = (
    "AuthenticationError",
    "KeyUnavailableError",
    "QKDKeyError",
    "PolicyError",
    "ProtocolError",
)


def _error_name(exc: BaseException) -> str:
    """The public error class to report (a private peer-alert class names its public base)."""
    name = type(exc).__name__
    if not name.startswith("_"):
        return name
    bases = [cls.__name__ for cls in type(exc).__mro__]
    return next((b for b in bases if b in _PUBLIC_ERRORS), name)


def _failed(party: str, exc: BaseException) -> SideOutcome:
    return SideOutcome(
        party=party,
        handshake_completed=False,
        error=_error_name(exc),
        detail=str(exc),
        alert_sent=_alert_text(getattr(exc, "alert_sent", None)),
        alert_received=_alert_text(getattr(exc, "alert_received", None)),
    )


def _completed(party: str, channel: Channel, received: bytes = b"") -> SideOutcome:
    session = channel.session
    return SideOutcome(
        party=party,
        handshake_completed=True,
        peer_identity=channel.peer_identity,
        components=tuple(session.components),
        qkd_key_ids=tuple(session.qkd_key_ids),
        fallback=session.fallback,
        received=received,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MitmSession:
    """One connection through :class:`MitmRelay`: Eve's two halves and what she read."""

    towards_client: SideOutcome
    towards_server: SideOutcome
    read_from_client: bytes = b""
    read_from_server: bytes = b""
    modified: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MitmResult:
    """Outcome of scenario (a) or (b) for one configuration."""

    scenario: str
    configuration: str
    attacker_holds: str
    client: SideOutcome
    server: SideOutcome
    attacker: MitmSession

    @property
    def attacker_read(self) -> bytes:
        """Application plaintext Eve read, both directions."""
        return self.attacker.read_from_client + self.attacker.read_from_server

    @property
    def attacker_modified(self) -> bool:
        """Eve changed plaintext in transit and the victims accepted it."""
        return self.attacker.modified and self.server.received != REQUEST

    @property
    def attack_succeeded(self) -> bool:
        return bool(self.attacker_read)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingResult:
    """Outcome of scenario (c): a recorded session versus a key stolen afterwards.

    ``attacker_recovered`` is what Eve decrypted with the stolen key (empty), and
    ``attacker_failure`` where she stopped. ``referee_recovered`` is what the same
    decryption code recovers with the ephemeral secrets (the positive control).
    """

    configuration: str
    session: SideOutcome
    recorded_bytes: int
    stolen: str
    missing: tuple[str, ...]
    attacker_recovered: bytes
    attacker_failure: str
    referee_recovered: bytes

    @property
    def stays_secret(self) -> bool:
        return not self.attacker_recovered and bool(self.referee_recovered)


@dataclass(frozen=True, slots=True, kw_only=True)
class EavesdropResult:
    """Outcome of scenario (d): the link with Eve on the fiber, then the channel."""

    eavesdropper: str
    qber: float
    qber_threshold: float
    link_aborted: bool
    abort_reason: str | None
    key_bits_delivered: int
    fail_closed_client: SideOutcome
    fail_closed_server: SideOutcome
    fallback_client: SideOutcome
    fallback_server: SideOutcome


# -- the man in the middle ---------------------------------------------------------------


Tamper = Callable[[str, bytes], bytes]


class MitmRelay:
    """Eve between client and ``target``: two real channels, plaintext in between.

    ``impersonate`` is Eve's server-side config (what she presents to the client),
    ``upstream`` her client-side config towards the real server. ``tamper(direction,
    data)`` (``"c2s"`` / ``"s2c"``) may return changed plaintext. Each finished
    connection is appended to :attr:`sessions`. Use as a context manager.
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        impersonate: ChannelConfig,
        upstream: ChannelConfig,
        tamper: Tamper | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.target = target
        self.impersonate = impersonate
        self.upstream = upstream
        self.tamper = tamper
        self.sessions: list[MitmSession] = []
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._listener.getsockname()[:2]
        return str(host), int(port)

    def __enter__(self) -> MitmRelay:
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = _TIMEOUT) -> None:
        """Stop accepting and wait for the relayed connections to end."""
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout)
        self._listener.close()

    def _spawn(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._handle, sock)

    def _handle(self, sock: socket.socket) -> None:
        """Both handshakes at once; forward plaintext only if both completed."""
        halves: dict[str, Channel | BaseException] = {}

        def towards_client() -> None:
            try:
                halves["client"] = wrap_socket(sock, self.impersonate, server_side=True)
            except Exception as exc:
                halves["client"] = exc

        def towards_server() -> None:
            try:
                halves["server"] = connect(self.target, self.upstream)
            except Exception as exc:
                halves["server"] = exc

        workers = [
            threading.Thread(target=f, daemon=True) for f in (towards_client, towards_server)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(2 * _TIMEOUT)
        down, up = halves.get("client"), halves.get("server")
        if isinstance(down, Channel) and isinstance(up, Channel):
            self.sessions.append(self._relay(down, up))
            return
        for half in (down, up):
            if isinstance(half, Channel):
                half.close()
        self.sessions.append(
            MitmSession(
                towards_client=_outcome("Eve as server", down),
                towards_server=_outcome("Eve as client", up),
            )
        )

    def _relay(self, down: Channel, up: Channel) -> MitmSession:
        seen = {"c2s": bytearray(), "s2c": bytearray()}
        changed = threading.Event()

        def pipe(src: Channel, dst: Channel, direction: str) -> None:
            try:
                while data := src.recv(1 << 16):
                    seen[direction] += data
                    out = self.tamper(direction, data) if self.tamper else data
                    if out != data:
                        changed.set()
                    dst.sendall(out)
            except Exception:  # either side may drop; then the other is closed
                pass
            finally:
                dst.close()

        pipes = [
            threading.Thread(target=pipe, args=(down, up, "c2s"), daemon=True),
            threading.Thread(target=pipe, args=(up, down, "s2c"), daemon=True),
        ]
        for p in pipes:
            p.start()
        for p in pipes:
            p.join(2 * _TIMEOUT)
        return MitmSession(
            towards_client=_completed("Eve as server", down),
            towards_server=_completed("Eve as client", up),
            read_from_client=bytes(seen["c2s"]),
            read_from_server=bytes(seen["s2c"]),
            modified=changed.is_set(),
        )


def _outcome(party: str, half: Channel | BaseException | None) -> SideOutcome:
    if isinstance(half, Channel):
        return _completed(party, half)
    if half is None:
        return SideOutcome(party=party, handshake_completed=False, error="did not finish")
    return _failed(party, half)


# -- the victims ---------------------------------------------------------------------------


def _recv_line(channel: Channel) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = channel.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


@contextlib.contextmanager
def _bob(config: ChannelConfig) -> Iterator[tuple[tuple[str, int], dict[str, SideOutcome]]]:
    """Bob: accept one channel, read a line, confirm it. Yields (address, outcome box)."""
    box: dict[str, SideOutcome] = {}
    server = Server(config)

    def serve() -> None:
        try:
            channel = server.accept()
        except Exception as exc:
            box["bob"] = _failed("Bob (server)", exc)
            return
        try:
            with channel:
                line = _recv_line(channel)
                if line:
                    channel.sendall(b"done: " + line)
            box["bob"] = _completed("Bob (server)", channel, line)
        except Exception as exc:
            box["bob"] = _failed("Bob (server)", exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.address, box
    finally:
        thread.join(2 * _TIMEOUT)
        server.shutdown()
        box.setdefault("bob", SideOutcome(party="Bob (server)", handshake_completed=False))


def _alice(address: tuple[str, int], config: ChannelConfig) -> SideOutcome:
    """Alice: connect, send :data:`REQUEST`, read Bob's confirmation."""
    try:
        channel = connect(address, config)
    except Exception as exc:
        return _failed("Alice (client)", exc)
    try:
        with channel:
            channel.sendall(REQUEST)
            reply = _recv_line(channel)
        return _completed("Alice (client)", channel, reply)
    except Exception as exc:
        return _failed("Alice (client)", exc)


def _attack(
    scenario: str,
    conf: Configuration,
    holds: str,
    *,
    alice: ChannelConfig,
    bob: ChannelConfig,
    eve_server: ChannelConfig,
    eve_client: ChannelConfig,
    tamper: Tamper | None = None,
) -> MitmResult:
    with (
        _bob(bob) as (bob_address, box),
        MitmRelay(bob_address, impersonate=eve_server, upstream=eve_client, tamper=tamper) as relay,
    ):
        client = _alice(relay.address, alice)
        relay.stop()
    sessions = relay.sessions or [
        MitmSession(
            towards_client=SideOutcome(party="Eve as server", handshake_completed=False),
            towards_server=SideOutcome(party="Eve as client", handshake_completed=False),
        )
    ]
    return MitmResult(
        scenario=scenario,
        configuration=conf.name,
        attacker_holds=holds,
        client=client,
        server=box["bob"],
        attacker=sessions[0],
    )


# -- QKD helpers ---------------------------------------------------------------------------


class _GuessingKeySource:
    """Eve's stand-in for a KME she does not control: any key ID gets a random guess."""

    def __init__(self, sae_id: str) -> None:
        self._sae_id = sae_id

    @property
    def sae_id(self) -> str:
        return self._sae_id

    def new_key(self, peer_sae_id: str, size_bytes: int = 32) -> QKDKey:
        raise KeyUnavailableError("Eve has no QKD link to this peer")

    def get_key(self, peer_sae_id: str, key_id: str) -> QKDKey:
        return QKDKey(key_id, os.urandom(32))


class _RecordingKeySource:
    """Wraps a key source and keeps what it delivered: the referee's escrow in (c)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.keys: dict[str, bytes] = {}

    @property
    def sae_id(self) -> str:
        return str(self._inner.sae_id)

    def new_key(self, peer_sae_id: str, size_bytes: int = 32) -> QKDKey:
        key: QKDKey = self._inner.new_key(peer_sae_id, size_bytes)
        self.keys[key.key_id] = bytes(key.key)
        return key

    def get_key(self, peer_sae_id: str, key_id: str) -> QKDKey:
        key: QKDKey = self._inner.get_key(peer_sae_id, key_id)
        self.keys[key.key_id] = bytes(key.key)
        return key


def _link() -> InMemoryKeyPool:
    return InMemoryKeyPool(os.urandom)


# -- (a) and (b) ---------------------------------------------------------------------------


def mitm_without_keys(name: str, *, eve_controls_qkd_links: bool = False) -> MitmResult:
    """(a) Eve with her own CA and her own QKD link, none of the victims' secrets.

    For QKD she guesses the keys behind the key IDs Alice sends. With
    ``eve_controls_qkd_links=True`` (``hybrid+qkd`` only) she does hold the QKD keys,
    as in (b), but still not the certificate key: the certificate check stops her.
    """
    conf = configuration(name)
    if eve_controls_qkd_links and conf.policy != "hybrid+qkd":
        raise ValueError(
            "eve_controls_qkd_links applies to 'hybrid+qkd' only (for 'qkd-only' the QKD "
            "links are the authentication: that is mitm_with_stolen_keys)"
        )
    real = _pki(conf.signature, "victims") if conf.signature else None
    rogue = _pki(conf.signature, "eve") if conf.signature else None
    holds = "own self-signed CA" if rogue else ""
    sources: dict[str, Any] = dict.fromkeys(("alice", "bob", "eve_server", "eve_client"))
    if eve_controls_qkd_links:
        alice_eve, eve_bob = _link(), _link()
        sources.update(
            alice=alice_eve.source(CLIENT_SAE),
            eve_server=alice_eve.source(SERVER_SAE),
            eve_client=eve_bob.source(CLIENT_SAE),
            bob=eve_bob.source(SERVER_SAE),
        )
        holds += " + QKD links Alice<->Eve, Eve<->Bob"
    elif conf.uses_qkd:
        link, eve_link = _link(), _link()
        sources.update(
            alice=link.source(CLIENT_SAE),
            bob=link.source(SERVER_SAE),
            eve_server=_GuessingKeySource(SERVER_SAE),
            eve_client=eve_link.source(CLIENT_SAE),
        )
        holds = (holds + " + " if holds else "") + "own QKD link, guesses the victims' QKD keys"
    return _attack(
        "a: MITM without keys",
        conf,
        holds,
        alice=_channel_config(
            conf, server=False, pki=real, qkd_source=sources["alice"]
        ),
        bob=_channel_config(
            conf, server=True, pki=real,
            qkd_source=sources["bob"],
        ),
        eve_server=_channel_config(
            conf, server=True, pki=rogue,
            qkd_source=sources["eve_server"],
        ),
        eve_client=_channel_config(
            conf, server=False, pki=real, qkd_source=sources["eve_client"]
        ),
    )  # fmt: skip


def _redirect(direction: str, data: bytes) -> bytes:
    """Eve's edit: send Alice's money to Eve's account, and hide it in Bob's reply."""
    if direction == "c2s":
        return data.replace(_VICTIM_ACCOUNT, _EVE_ACCOUNT)
    return data.replace(_EVE_ACCOUNT, _VICTIM_ACCOUNT)


def mitm_with_stolen_keys(name: str) -> MitmResult:
    """(b) Eve holds the authentication secret *during* the handshake.

    Certificate configurations: the server's certificate and private key. QKD: Eve
    controlled the QKD links' bootstrap authentication, so Alice's KME shares a link
    with Eve's, and Eve's another with Bob's (two pools); for ``qkd-only`` that also
    gives her the QKD-PSK of each link.
    """
    conf = configuration(name)
    real = _pki(conf.signature, "victims") if conf.signature else None
    alice_eve = _link() if conf.uses_qkd else None
    eve_bob = _link() if conf.uses_qkd else None

    def src(pool: InMemoryKeyPool | None, sae: str) -> Any:
        return pool.source(sae) if pool is not None else None

    parts = ["server's certificate key"] if real else []
    if conf.uses_qkd:
        parts.append("QKD link bootstrap auth (links Alice<->Eve, Eve<->Bob)")
    return _attack(
        "b: MITM with a stolen authentication key",
        conf,
        " + ".join(parts),
        alice=_channel_config(
            conf, server=False, pki=real, qkd_source=src(alice_eve, CLIENT_SAE)
        ),
        bob=_channel_config(
            conf, server=True, pki=real,
            qkd_source=src(eve_bob, SERVER_SAE),
        ),
        eve_server=_channel_config(
            conf, server=True, pki=real,
            qkd_source=src(alice_eve, SERVER_SAE),
        ),
        eve_client=_channel_config(
            conf, server=False, pki=real, qkd_source=src(eve_bob, CLIENT_SAE)
        ),
        tamper=_redirect,
    )  # fmt: skip


# -- (c) -----------------------------------------------------------------------------------


class _EscrowKEM:
    """Delegates to a real KEM and hands each decapsulated secret to the referee."""

    def __init__(self, inner: kem.KEM, name: str, sink: list[tuple[str, bytes]]) -> None:
        self._inner = inner
        self._name = name
        self._sink = sink

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    def decapsulate(self, private: Any, ciphertext: bytes) -> bytes:
        secret = self._inner.decapsulate(private, ciphertext)
        self._sink.append((self._name, bytes(secret)))
        return secret


def _records(stream: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """Split one direction of a recording into ``(type, epoch, header, fragment)``."""
    out, pos = [], 0
    while pos + HEADER_SIZE <= len(stream):
        ctype, epoch, length = HEADER.unpack_from(stream, pos)
        end = pos + HEADER_SIZE + length
        if end > len(stream):
            break
        out.append((ctype, epoch, stream[pos : pos + HEADER_SIZE], stream[pos + HEADER_SIZE : end]))
        pos = end
    return out


def _messages(data: bytes) -> list[bytes]:
    """Split a handshake byte stream into framed messages."""
    out, pos = [], 0
    while pos + 4 <= len(data):
        end = pos + 4 + int.from_bytes(data[pos + 1 : pos + 4], "big")
        out.append(data[pos:end])
        pos = end
    return out


def _hello_pair(capture: Capture) -> tuple[bytes, bytes]:
    """The framed ClientHello and ServerHello (plaintext INITIAL records)."""

    def initial(stream: bytes) -> bytes:
        return b"".join(
            f for t, e, _, f in _records(stream) if e == 0 and t == ContentType.HANDSHAKE
        )

    return _messages(initial(capture.client_to_server))[0], _messages(
        initial(capture.server_to_client)
    )[0]


def _decrypt_recording(
    capture: Capture, psk: bytes | None, components: list[tuple[str, bytes]]
) -> bytes:
    """Recompute the key schedule from the recording and decrypt the application data.

    Raises :class:`~hybridchan.errors.BadRecordMAC` at the first record whose tag does
    not verify under the derived keys. Returns client->server then server->client data.
    """
    ch, sh = _hello_pair(capture)
    handshake = EarlySecret(psk).next(components)
    th = transcript_hash(ch + sh)
    server_hs = RecordProtection(*traffic_keys(handshake.server_traffic(th)))
    server_records = _records(capture.server_to_client)
    flight = b""
    for ctype, epoch, header, fragment in server_records:
        if epoch == 1 and ctype == ContentType.HANDSHAKE:
            flight += server_hs.open(header, memoryview(fragment))
    messages = _messages(flight)
    upto = next(i for i, m in enumerate(messages) if m[0] == HandshakeType.finished)
    th_app = transcript_hash(ch + sh + b"".join(messages[: upto + 1]))
    master = handshake.next()
    plain = b""
    for stream, secret in (
        (capture.client_to_server, master.client_traffic(th_app)),
        (capture.server_to_client, master.server_traffic(th_app)),
    ):
        prot = RecordProtection(*traffic_keys(secret))
        for ctype, epoch, header, fragment in _records(stream):
            if epoch != 2:
                continue
            data = prot.open(header, memoryview(fragment))
            if ctype == ContentType.APPLICATION_DATA:
                plain += data
    return plain


def _negotiated(capture: Capture) -> tuple[list[str], ClientHello]:
    ch, sh = _hello_pair(capture)
    hello = ClientHello.decode(ch[4:])
    server_hello = ServerHello.decode(sh[4:])
    names = [GROUP_NAMES[s.group] for s in server_hello.key_shares]
    if server_hello.qkd_accepted:
        names.append("QKD")
    return names, hello


def _stolen_material(
    conf: Configuration, hello: ClientHello, keys: dict[str, bytes]
) -> tuple[str, bytes, bytes | None]:
    """What Eve steals after the session: (description, bytes she holds, PSK or None)."""
    if conf.auth_mode == "qkd-psk":
        assert hello.psk is not None
        key_id = _psk_key_id(hello)
        psk = keys[key_id]
        return (
            f"the session's QKD-PSK (authentication key {key_id}) from a KME that kept it",
            psk,
            psk,
        )
    assert conf.signature is not None
    private = _pki(conf.signature, "victims").server.private_key
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return f"Bob's {conf.signature} certificate private key", der, None


def _psk_key_id(hello: ClientHello) -> str:
    assert hello.psk is not None
    return QKDKeyRef.read(Reader(hello.psk.identity, "QKD-PSK identity")).key_id


def _record_session(
    conf: Configuration, root: Path
) -> tuple[SideOutcome, Capture, list[tuple[str, bytes]], dict[str, bytes]]:
    """One honest session through the recorder; the referee escrows the session secrets."""
    real = _pki(conf.signature, "victims") if conf.signature else None
    link = _link() if conf.uses_qkd else None
    escrow: list[tuple[str, bytes]] = []
    qkd_escrow = _RecordingKeySource(link.source(CLIENT_SAE)) if link else None
    alice = _channel_config(conf, server=False, pki=real, qkd_source=qkd_escrow)
    escrowing = replace(
        alice.handshake,
        kem_factory=lambda group, backend: _EscrowKEM(kem.get_kem(group, backend), group, escrow),
    )
    alice = replace(alice, handshake=escrowing)
    bob = _channel_config(
        conf, server=True, pki=real, qkd_source=link.source(SERVER_SAE) if link else None
    )
    with _bob(bob) as (address, _box), CaptureRelay(address, root, label=conf.name) as recorder:
        session = _alice(recorder.address, alice)
        recorder.wait_idle()
    capture = read_capture(recorder.files[0])
    return session, capture, escrow, (qkd_escrow.keys if qkd_escrow else {})


def stolen_key_after_session(name: str, directory: str | Path | None = None) -> RecordingResult:
    """(c) Record an honest session; steal the long-term key afterwards; try to decrypt.

    ``directory`` keeps the capture file (default: a temporary directory).
    """
    conf = configuration(name)
    with contextlib.ExitStack() as stack:
        root = (
            Path(directory)
            if directory
            else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        session, capture, escrow, keys = _record_session(conf, root)
    names, hello = _negotiated(capture)
    stolen, material, psk = _stolen_material(conf, hello, keys)
    # Eve: the stolen key is no input to the key exchange. The best she can do is to put
    # what she holds where the component secrets go; the first AEAD tag tells her no.
    guess = hashlib.sha384(material).digest()
    try:
        recovered = _decrypt_recording(capture, psk, [(n, guess) for n in names])
        failure = "decrypted (unexpected)"
    except BadRecordMAC:
        recovered, failure = b"", "first server handshake record: AES-GCM tag does not verify"
    referee_components = list(escrow)
    if hello.qkd_key is not None and "QKD" in names:
        referee_components.append(("QKD", keys[hello.qkd_key.key_id]))
    referee = _decrypt_recording(capture, psk, referee_components)
    missing = tuple(
        f"{n} ephemeral secret" if n != "QKD" else "QKD confidentiality key (erased by the KME)"
        for n in names
    )
    return RecordingResult(
        configuration=conf.name,
        session=session,
        recorded_bytes=len(capture.client_to_server) + len(capture.server_to_client),
        stolen=stolen,
        missing=missing,
        attacker_recovered=recovered,
        attacker_failure=failure,
        referee_recovered=referee,
    )


# -- (d) -----------------------------------------------------------------------------------


def _run_link(fraction: float, *, seed: int) -> tuple[Any, bytes]:
    """One post-processing block on a 10 km link; returns its stats and distilled key."""
    eve = Eavesdropper(kind="intercept-resend", fraction=fraction) if fraction else Eavesdropper()
    link = QKDLink(
        LinkParams(distance_km=10, eve=eve),
        PostProcessingParams(pulses_per_block=10**7),
        rng=np.random.default_rng(seed),
    )
    delivered: list[bytes] = []

    class _Sink:
        def put_block(self, alice_key: bytes, bob_key: bytes, stats: object) -> None:
            delivered.append(alice_key)

    stats = link.run(1, _Sink()).blocks[0]
    return stats, b"".join(delivered)


def _pool_from_link(stats: Any, key: bytes, key_size: int = 32) -> InMemoryKeyPool:
    """A key pool holding exactly what the link distilled; aborted if the block aborted."""
    buffer = bytearray(key)

    def take(n: int) -> bytes:
        chunk = bytes(buffer[:n])
        del buffer[:n]
        return chunk

    pool = InMemoryKeyPool(take, capacity=len(key) // (16 + key_size))
    if stats.aborted:
        pool.abort(
            f"{stats.abort_reason}: QBER {stats.qber_sample:.1%} > "
            f"{PostProcessingParams().qber_threshold:.0%}; eavesdropper on the quantum channel?"
        )
    return pool


def quantum_channel_eavesdropper(fraction: float = 1.0, *, seed: int = 7) -> EavesdropResult:
    """(d) Intercept-resend on the fiber; the link aborts; ``hybrid+qkd`` fails closed.

    Then the same with ``allow_fallback=True`` on both sides: the channel continues as
    ``hybrid`` and says so in ``SessionInfo.fallback``.
    """
    conf = configuration("hybrid+qkd")
    real = _pki("ml-dsa-65", "victims")
    stats, key = _run_link(fraction, seed=seed)
    runs: list[tuple[SideOutcome, SideOutcome]] = []
    for fallback in (False, True):
        pool = _pool_from_link(stats, key)
        alice = _channel_config(
            conf,
            server=False,
            pki=real,
            qkd_source=pool.source(CLIENT_SAE),
            allow_fallback=fallback,
        )
        bob = _channel_config(
            conf, server=True, pki=real,
            qkd_source=pool.source(SERVER_SAE), allow_fallback=fallback,
        )  # fmt: skip
        with _bob(bob) as (address, box):
            client = _alice(address, alice)
        runs.append((client, box["bob"]))
    return EavesdropResult(
        eavesdropper=f"intercept-resend:{fraction:g}" if fraction else "none",
        qber=float(stats.qber_sample),
        qber_threshold=PostProcessingParams().qber_threshold,
        link_aborted=bool(stats.aborted),
        abort_reason=stats.abort_reason,
        key_bits_delivered=8 * len(key),
        fail_closed_client=runs[0][0],
        fail_closed_server=runs[0][1],
        fallback_client=runs[1][0],
        fallback_server=runs[1][1],
    )
