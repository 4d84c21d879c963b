"""Active attacks: a man-in-the-middle relay and the four attack scenarios of issue 7.

Theory of operation
-------------------
:class:`MitmRelay` is Eve on the wire. For each victim connection it runs *two real
hybridchan handshakes* at once: as the server towards the client (Alice), with
whatever credential Eve holds, and as a client towards the real server (Bob). If both
succeed it forwards the application plaintext between the two channels, reading it
and optionally changing it (``tamper``). If either fails, nothing is forwarded.

The scenarios run real channels over loopback TCP, one per :data:`CONFIGURATIONS`
entry (the hybridchan configurations of :mod:`hybridchan.rndl.experiment`, whose
:func:`~hybridchan.rndl.experiment.channel_configs` builds every endpoint's config),
and return frozen result dataclasses saying what each party saw:

(a) :func:`mitm_without_keys` -- Eve has her own CA, her own QKD link and guesses
    the QKD keys she cannot get. Authentication fails; no application byte reaches her.
(b) :func:`mitm_with_stolen_keys` -- Eve holds the server's certificate key during the
    handshake; for QKD she controlled the bootstrap authentication of the QKD link, so
    she runs two links, Alice<->Eve and Eve<->Bob (two ``InMemoryKeyPool`` objects).
    The attack succeeds everywhere, QKD included: QKD needs authentication too.
(c) :func:`stolen_key_after_session` -- an honest session is recorded
    (:class:`~hybridchan.rndl.capture.CaptureRelay`) while an
    :class:`~hybridchan.rndl.oracle.Escrow` notes its secrets; later Eve steals the
    long-term authentication key (for ``qkd-only`` the QKD-PSK) and runs the passive
    attack, :func:`~hybridchan.rndl.adversary.attack_hybridchan`, with an oracle that
    grants only that. The key exchange was ephemeral: its components stay unknown and
    the first AEAD tag fails. The referee's oracle (every capability) runs the *same*
    attack on the same recording and recovers everything: the failure is the missing
    secret, not a broken attack.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from cryptography.hazmat.primitives import serialization

from handshake.alerts import AlertDescription
from hybridchan._sync import Channel, Server, connect, wrap_socket
from hybridchan.config import ChannelConfig
from hybridchan.demo import SERVER_NAME, EmbeddedPKI
from hybridchan.errors import error_name
from hybridchan.rndl import experiment
from hybridchan.rndl.adversary import attack_hybridchan, client_hello, qkd_psk_key_id
from hybridchan.rndl.capture import Capture, CaptureRelay, read_capture
from hybridchan.rndl.experiment import CLIENT_SAE, SERVER_SAE, Configuration
from hybridchan.rndl.oracle import ADVERSARIES, REFEREE, Escrow, Oracle, escrow_kem_factory
from qkd.keysource import InMemoryKeyPool, KeyUnavailableError, QKDKey
from qkd.sim import (
    BlockStats,
    Eavesdropper,
    LinkParams,
    ListKeySink,
    PostProcessingParams,
    QKDLink,
)

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

#: What Alice sends (one line) and the account Eve redirects it to in scenario (b).
REQUEST: Final = b"transfer 100 EUR to account 1234\n"
_VICTIM_ACCOUNT: Final = b"account 1234"
_EVE_ACCOUNT: Final = b"account 6666"
_TIMEOUT: Final = 10.0


# -- configurations ------------------------------------------------------------------------

#: Names of the configurations every scenario runs: the hybridchan configurations of
#: :data:`hybridchan.rndl.experiment.CONFIGURATIONS` (the TLS baselines have no MITM here).
CONFIGURATIONS: Final = tuple(c.name for c in experiment.CONFIGURATIONS if c.kind == "hybridchan")


def configuration(name: str) -> Configuration:
    """The :class:`~hybridchan.rndl.experiment.Configuration` called ``name``."""
    if name not in CONFIGURATIONS:
        raise ValueError(
            f"unknown configuration {name!r}; choose one of {', '.join(CONFIGURATIONS)}"
        )
    return experiment.configuration(name)


@functools.lru_cache(maxsize=8)
def _pki(algorithm: str, owner: str) -> EmbeddedPKI:
    """A CA and a server certificate for :data:`SERVER_NAME`, made once per process.

    ``owner="victims"`` is the real PKI Alice trusts; ``owner="eve"`` is Eve's own
    self-signed CA issuing a certificate with the very same name.
    """
    return EmbeddedPKI.generate(algorithm)


def _victims_pki(conf: Configuration) -> EmbeddedPKI | None:
    return _pki(conf.signature, "victims") if conf.auth == "certificate" else None


Sources = tuple[Any, Any] | None


def _pair(
    conf: Configuration, pki: EmbeddedPKI | None, sources: Sources, **options: Any
) -> tuple[ChannelConfig, ChannelConfig]:
    """(client, server) configs: a pair of victims, or Eve's two halves (client, server)."""
    return experiment.channel_configs(
        conf, pki=pki, qkd_sources=sources, handshake_timeout=_TIMEOUT, timeout=_TIMEOUT, **options
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


def _failed(party: str, exc: BaseException) -> SideOutcome:
    return SideOutcome(
        party=party,
        handshake_completed=False,
        error=error_name(exc),
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

    ``missing`` names the key-exchange components whose secrets Eve could not obtain,
    ``attacker_recovered`` is what she decrypted with the stolen key (empty) and
    ``attacker_failure`` the attack's notes: why each component stayed unknown and where
    decryption stopped. ``referee_recovered`` is what the same attack recovers with an
    oracle that grants everything (the positive control).
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
    victims: tuple[ChannelConfig, ChannelConfig],
    eve: tuple[ChannelConfig, ChannelConfig],
    tamper: Tamper | None = None,
) -> MitmResult:
    """Alice -> Eve -> Bob. ``victims`` is (Alice, Bob); ``eve`` (her client, her server)."""
    alice, bob = victims
    eve_client, eve_server = eve
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


def _link() -> InMemoryKeyPool:
    return InMemoryKeyPool(os.urandom)


def _links_through_eve() -> tuple[Sources, Sources]:
    """Two QKD links, Alice<->Eve and Eve<->Bob: (Alice's, Bob's) and (Eve's client, server)."""
    alice_eve, eve_bob = _link(), _link()
    return (
        (alice_eve.source(CLIENT_SAE), eve_bob.source(SERVER_SAE)),
        (eve_bob.source(CLIENT_SAE), alice_eve.source(SERVER_SAE)),
    )


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
    real = _victims_pki(conf)
    # Eve's client half trusts the real CA; her server half presents her own certificate.
    rogue = _pki(conf.signature, "eve") if real else None
    eve_pki = EmbeddedPKI(real.ca, rogue.server, rogue.client) if real and rogue else None
    holds = "own self-signed CA" if rogue else ""
    victims: Sources = None
    eve: Sources = None
    if eve_controls_qkd_links:
        victims, eve = _links_through_eve()
        holds += " + QKD links Alice<->Eve, Eve<->Bob"
    elif conf.uses_qkd:
        link, eve_link = _link(), _link()
        victims = (link.source(CLIENT_SAE), link.source(SERVER_SAE))
        eve = (eve_link.source(CLIENT_SAE), _GuessingKeySource(SERVER_SAE))
        holds = (holds + " + " if holds else "") + "own QKD link, guesses the victims' QKD keys"
    return _attack(
        "a: MITM without keys",
        conf,
        holds,
        victims=_pair(conf, real, victims),
        eve=_pair(conf, eve_pki, eve),
    )


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
    real = _victims_pki(conf)
    victims, eve = _links_through_eve() if conf.uses_qkd else (None, None)
    parts = ["server's certificate key"] if real else []
    if conf.uses_qkd:
        parts.append("QKD link bootstrap auth (links Alice<->Eve, Eve<->Bob)")
    return _attack(
        "b: MITM with a stolen authentication key",
        conf,
        " + ".join(parts),
        victims=_pair(conf, real, victims),
        eve=_pair(conf, real, eve),
        tamper=_redirect,
    )


# -- (c) -----------------------------------------------------------------------------------

#: Eve in (c): the long-term keys (and the QKD-PSK) stolen after the session, nothing else.
_THIEF: Final = next(a for a in ADVERSARIES if a.name == "stolen-keys")


def _record_session(conf: Configuration, escrow: Escrow, root: Path) -> tuple[SideOutcome, Capture]:
    """One honest session through the recorder; the referee's escrow notes its secrets."""
    real = _victims_pki(conf)
    if real is not None:
        experiment.escrowed_signing_key(escrow, real, conf.signature)
    sources = experiment.escrowed_qkd_sources(escrow) if conf.uses_qkd else None
    alice, bob = _pair(conf, real, sources, kem_factory=escrow_kem_factory(escrow))
    with _bob(bob) as (address, _box), CaptureRelay(address, root, label=conf.name) as recorder:
        session = _alice(recorder.address, alice)
        recorder.wait_idle()
    return session, read_capture(recorder.files[0])


def _steal(conf: Configuration, capture: Capture, escrow: Escrow) -> tuple[str, str]:
    """Eve's theft after the session: (description, its label in the escrow).

    ``qkd-only`` authenticates with a QKD-PSK (its key ID is in the recorded
    ClientHello): Eve takes it from a KME that kept it, noted as a long-term secret.
    The confidentiality QKD key stays out of her reach (she compromised no KME).
    """
    hello = client_hello(capture)
    key_id = qkd_psk_key_id(hello) if hello is not None else None
    if conf.auth == "certificate":
        return f"Bob's {conf.signature} certificate private key", (
            f"server signing key {conf.signature}"
        )
    if key_id is None:
        raise RuntimeError(f"the {conf.name} recording holds no QKD-PSK offer: did it fail?")
    escrow.note_long_term(f"qkd-psk:{key_id}", escrow.qkd_keys[key_id])
    return (
        f"the session's QKD-PSK (authentication key {key_id}) from a KME that kept it",
        f"qkd-psk:{key_id}",
    )


def _as_bytes(secret: Any) -> bytes:
    if isinstance(secret, bytes):
        return secret
    der: bytes = secret.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return der


def stolen_key_after_session(name: str, directory: str | Path | None = None) -> RecordingResult:
    """(c) Record an honest session; steal the long-term key afterwards; try to decrypt.

    Both attempts run :func:`~hybridchan.rndl.adversary.attack_hybridchan` on the same
    recording: Eve's oracle grants only the stolen key, the referee's everything.
    ``directory`` keeps the capture file (default: a temporary directory).
    """
    conf = configuration(name)
    escrow = Escrow()
    with contextlib.ExitStack() as stack:
        root = (
            Path(directory)
            if directory
            else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        )
        session, capture = _record_session(conf, escrow, root)
    stolen, label = _steal(conf, capture, escrow)
    oracle = Oracle(escrow, _THIEF)
    # The stolen key is no input to the key exchange. The best Eve can do is to put what
    # she holds where the unknown component secrets go; the first AEAD tag tells her no.
    held = _as_bytes(oracle.long_term_secret(label))
    eve = attack_hybridchan(capture, oracle, stand_in=hashlib.sha384(held).digest())
    referee = attack_hybridchan(capture, Oracle(escrow, REFEREE))
    return RecordingResult(
        configuration=conf.name,
        session=session,
        recorded_bytes=len(capture.client_to_server) + len(capture.server_to_client),
        stolen=stolen,
        missing=tuple(dict.fromkeys(m for m in eve.missing if m != "handshake keys")),
        attacker_recovered=eve.client_to_server + eve.server_to_client,
        attacker_failure="; ".join(eve.notes),
        referee_recovered=referee.client_to_server + referee.server_to_client,
    )


# -- (d) -----------------------------------------------------------------------------------


def _run_link(fraction: float, *, seed: int) -> tuple[BlockStats, bytes]:
    """One post-processing block on a 10 km link; returns its stats and distilled key."""
    eve = Eavesdropper(kind="intercept-resend", fraction=fraction) if fraction else Eavesdropper()
    link = QKDLink(
        LinkParams(distance_km=10, eve=eve),
        PostProcessingParams(pulses_per_block=10**7),
        rng=np.random.default_rng(seed),
    )
    sink = ListKeySink()
    stats = link.run(1, sink).blocks[0]
    return stats, b"".join(alice_key for alice_key, _, _ in sink.blocks)


def _pool_from_link(stats: BlockStats, key: bytes, key_size: int = 32) -> InMemoryKeyPool:
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
    real = _victims_pki(conf)
    stats, key = _run_link(fraction, seed=seed)
    runs: list[tuple[SideOutcome, SideOutcome]] = []
    for fallback in (False, True):
        pool = _pool_from_link(stats, key)
        sources = (pool.source(CLIENT_SAE), pool.source(SERVER_SAE))
        alice, bob = _pair(conf, real, sources, allow_fallback=fallback)
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
