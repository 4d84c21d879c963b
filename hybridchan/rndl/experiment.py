"""Record real sessions under several configurations, then judge every adversary.

:func:`record_sessions` runs the same application conversation over real TCP
on loopback for each configuration -- hybridchan channels for ``classical``,
``pqc``, ``hybrid``, ``qkd-only`` and ``hybrid+qkd``, and the OpenSSL TLS 1.3
baselines -- through a :class:`~hybridchan.rndl.capture.CaptureRelay`, with a
key rotation in the middle (mixing a fresh QKD key where QKD is in use). While
recording, an :class:`~hybridchan.rndl.oracle.Escrow` notes the secrets a
future adversary might later obtain (never used by the endpoints).

The QKD configurations draw their QKD keys from a real in-process KME pair
(:func:`hybridchan.cli.kme_cmd.start_loopback_pair`, HTTPS with mutual TLS, a
seeded stand-in link feed): KME A, the client's site, erases delivered keys as it
must; KME B, the server's site, runs with the deliberately insecure
``retain_delivered`` option. A KME adversary later steals a copy of that KME's
SQLite store (:class:`~hybridchan.rndl.oracle.KMEStores`).

:func:`analyse` then plays each adversary against each recording
(:mod:`hybridchan.rndl.adversary`) and builds the :class:`Matrix`.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hybridchan.config import ChannelConfig
from hybridchan.demo import SERVER_NAME, EmbeddedPKI, embedded_configs
from hybridchan.rndl import tls13
from hybridchan.rndl.adversary import attack_hybridchan, attack_tls13
from hybridchan.rndl.capture import CaptureRelay, read_capture
from hybridchan.rndl.oracle import (
    ADVERSARIES,
    Adversary,
    Escrow,
    EscrowKeySource,
    KMEStores,
    Oracle,
    escrow_kem_factory,
)
from hybridchan.rndl.report import Matrix, Outcome
from qkd.keysource import InMemoryKeyPool

__all__ = [
    "CONFIGURATIONS",
    "CONVERSATION",
    "Configuration",
    "Recording",
    "analyse",
    "channel_configs",
    "configuration",
    "escrowed_qkd_sources",
    "escrowed_signing_key",
    "record_sessions",
    "run",
]

CLIENT_SAE, SERVER_SAE = "sae-alice", "sae-bob"

#: The application conversation every configuration carries: (speaker, message).
CONVERSATION: tuple[tuple[str, bytes], ...] = (
    ("client", b"GET /patient/4711/record HTTP/1.1\r\nHost: records.example\r\n\r\n"),
    ("server", b'HTTP/1.1 200 OK\r\n\r\n{"diagnosis": "confidential for 30 years"}'),
    ("client", b"POST /transfer amount=250000&to=CH93-0076-2011-6238-5295-7"),
    ("server", b"OK transfer 81f3 queued; settlement key 0x5eed"),
    ("rekey", b""),
    ("client", b"after the key update: board minutes, merger plans, source code"),
    ("server", b"after the key update: acknowledged, archived for decades"),
)


@dataclass(frozen=True, slots=True)
class Configuration:
    """One way of protecting the conversation."""

    name: str
    description: str
    kind: str  # "hybridchan" or "tls13"
    policy: str = ""
    kems: tuple[str, ...] = ()
    auth: str = "certificate"
    signature: str = "ml-dsa-65"
    tls_group: str = ""

    @property
    def uses_qkd(self) -> bool:
        return self.policy in ("hybrid+qkd", "qkd-only")


CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration(
        "classical",
        "X25519 + Ed25519 certificate",
        "hybridchan",
        "classical",
        ("X25519",),
        signature="ed25519",
    ),
    Configuration(
        "pqc", "ML-KEM-768 + ML-DSA-65 certificate", "hybridchan", "pqc", ("ML-KEM-768",)
    ),
    Configuration(
        "hybrid",
        "X25519MLKEM768 + ML-DSA-65 certificate",
        "hybridchan",
        "hybrid",
        ("X25519MLKEM768",),
    ),
    Configuration(
        "qkd-only", "QKD key + QKD-PSK authentication", "hybridchan", "qkd-only", (), auth="qkd-psk"
    ),
    Configuration(
        "hybrid+qkd",
        "X25519MLKEM768 + QKD key + ML-DSA-65 certificate",
        "hybridchan",
        "hybrid+qkd",
        ("X25519MLKEM768",),
    ),
    Configuration(
        "tls13-x25519",
        "OpenSSL TLS 1.3, X25519, ML-DSA-65 certificate",
        "tls13",
        tls_group="X25519",
    ),
    Configuration(
        "tls13-x25519mlkem768",
        "OpenSSL TLS 1.3, X25519MLKEM768, ML-DSA-65 cert",
        "tls13",
        tls_group="X25519MLKEM768",
    ),
)


def configuration(name: str) -> Configuration:
    """The :class:`Configuration` called ``name`` (one of :data:`CONFIGURATIONS`)."""
    for config in CONFIGURATIONS:
        if config.name == name:
            return config
    names = ", ".join(c.name for c in CONFIGURATIONS)
    raise ValueError(f"unknown configuration {name!r}; choose one of {names}")


@dataclass
class Recording:
    configuration: Configuration
    capture_path: Path
    client_to_server: bytes
    server_to_client: bytes
    components: tuple[str, ...] = ()
    qkd_key_ids: list[str] = field(default_factory=list)
    #: The KME stores that served this recording's QKD keys (``None``: no QKD).
    kme_stores: KMEStores | None = None

    @property
    def total(self) -> int:
        return len(self.client_to_server) + len(self.server_to_client)


# ---- configurations as channels ---------------------------------------------------------


def channel_configs(
    config: Configuration,
    *,
    pki: EmbeddedPKI | None = None,
    qkd_sources: tuple[Any, Any] | None = None,
    kem_factory: Callable[[str, str], Any] | None = None,
    allow_fallback: bool = False,
    **channel_options: Any,
) -> tuple[ChannelConfig, ChannelConfig]:
    """``(client, server)`` ChannelConfigs for a hybridchan ``config``: the one place.

    Built on :func:`hybridchan.demo.embedded_configs`: the client trusts ``pki.ca``, the
    server presents ``pki.server`` (a mixed ``EmbeddedPKI`` gives a server the client
    does not trust); ``qkd_sources`` are the client's and the server's QKD key sources.
    ``kem_factory`` (the referee's escrow hook) goes to the client, whose key pairs the
    key shares are; ``channel_options`` (timeouts) to both.
    """
    if config.kind != "hybridchan":
        raise ValueError(f"configuration {config.name!r} is not a hybridchan channel")
    client, server = embedded_configs(
        config.policy, pki=pki, qkd_sources=qkd_sources, auth_mode=config.auth, **channel_options
    )
    common: dict[str, Any] = {"kems": config.kems or None, "allow_fallback": allow_fallback}
    client_extra = {"kem_factory": kem_factory} if kem_factory is not None else {}
    return (
        replace(client, handshake=replace(client.handshake, **common, **client_extra)),
        replace(server, handshake=replace(server.handshake, **common)),
    )


# ---- running the conversation ------------------------------------------------------------


def escrowed_signing_key(escrow: Escrow, pki: EmbeddedPKI, algorithm: str) -> None:
    """Note the server's signing key: what a later theft of long-term keys yields."""
    escrow.note_long_term(f"server signing key {algorithm}", pki.server.private_key)


@dataclass
class _Credentials:
    pkis: dict[str, EmbeddedPKI]
    files: dict[str, Path]


def _credentials(workdir: Path, escrow: Escrow) -> _Credentials:
    pkis, files = {}, {}
    for alg in ("ed25519", "ml-dsa-65"):
        pkis[alg] = pki = EmbeddedPKI.generate(alg)
        escrowed_signing_key(escrow, pki, alg)
        (workdir / f"ca-{alg}.pem").write_bytes(pki.ca.cert_pem())
        pki.server.write(workdir / f"leaf-{alg}.pem", workdir / f"leaf-{alg}.key")
        files[f"ca-{alg}"] = workdir / f"ca-{alg}.pem"
        files[f"leaf-{alg}"] = workdir / f"leaf-{alg}.pem"
        files[f"key-{alg}"] = workdir / f"leaf-{alg}.key"
    return _Credentials(pkis, files)


def escrowed_qkd_sources(
    escrow: Escrow, ids: list[str] | None = None
) -> tuple[EscrowKeySource, EscrowKeySource]:
    """The client's and server's sources of one fresh in-memory QKD link, escrowed.

    No KME behind it (active scenario (c) uses it); the passive matrix uses a KME pair.
    """
    pool = InMemoryKeyPool(os.urandom)
    return (
        EscrowKeySource(pool.source(CLIENT_SAE), escrow, ids),
        EscrowKeySource(pool.source(SERVER_SAE), escrow, ids),
    )


class _KMESites:
    """A loopback KME pair for the recorded QKD link, started on first use.

    Site A (the client's) erases delivered keys; site B (the server's) retains them.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._pair: Any = None
        self._clients: list[Any] = []

    def sources(self, escrow: Escrow, ids: list[str]) -> tuple[EscrowKeySource, EscrowKeySource]:
        """The client's and the server's key sources at their own KMEs (referee-escrowed)."""
        if self._pair is None:
            from hybridchan.cli.kme_cmd import start_loopback_pair

            self._pair = start_loopback_pair(
                self.directory,
                [CLIENT_SAE],
                [SERVER_SAE],
                initial_blocks=8,  # 32 KiB of key material: plenty for a few sessions
                background_feed=False,
                tls_backend="python",
                retain_delivered_b=True,
            )
        client, server = self._pair.client(CLIENT_SAE), self._pair.client(SERVER_SAE)
        self._clients += [client, server]
        return EscrowKeySource(client, escrow, ids), EscrowKeySource(server, escrow, ids)

    @property
    def stores(self) -> KMEStores:
        return KMEStores(self.directory / "kme_a.sqlite", self.directory / "kme_b.sqlite")

    def stop(self) -> None:
        """Stop both KMEs: their stores are closed (and scrubbed) as after a shutdown."""
        for client in self._clients:  # idle keep-alive connections would delay the shutdown
            client.close()
        self._clients.clear()
        if self._pair is not None:
            self._pair.stop()
            self._pair = None


def _recv_exactly(recv: Callable[[int], bytes], n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = recv(n - len(out))
        if not chunk:
            raise ConnectionError("peer closed early")
        out += chunk
    return bytes(out)


def _converse(client: Any, server: Any, rekey: Callable[[], None]) -> tuple[bytes, bytes]:
    """Play CONVERSATION; ``client``/``server`` have ``sendall`` and ``recv``."""
    c2s, s2c = bytearray(), bytearray()
    for speaker, message in CONVERSATION:
        if speaker == "rekey":
            rekey()
            continue
        src, dst, log = (client, server, c2s) if speaker == "client" else (server, client, s2c)
        src.sendall(message)
        if _recv_exactly(dst.recv, len(message)) != message:
            raise RuntimeError("conversation corrupted in transit")
        log += message
    return bytes(c2s), bytes(s2c)


def _record_hybridchan(
    config: Configuration, creds: _Credentials, escrow: Escrow, workdir: Path, kmes: _KMESites
) -> Recording:
    import hybridchan

    ids: list[str] = []
    client_cfg, server_cfg = channel_configs(
        config,
        pki=creds.pkis[config.signature] if config.auth == "certificate" else None,
        qkd_sources=kmes.sources(escrow, ids) if config.uses_qkd else None,
        kem_factory=escrow_kem_factory(escrow),
        timeout=30,
    )
    server = hybridchan.Server(server_cfg)
    accepted: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: accepted.setdefault("ch", server.accept()), daemon=True
    )
    thread.start()
    relay = CaptureRelay(server.address, workdir / config.name, label=config.name)
    with relay:
        client = hybridchan.connect(relay.address, client_cfg)
        thread.join(30)
        peer = accepted["ch"]
        try:
            c2s, s2c = _converse(client, peer, lambda: _rekey(client))
            components = tuple(client.session.components)
        finally:
            client.close()
            peer.close()
            server.close()
        relay.wait_idle()
    stores = kmes.stores if config.uses_qkd else None
    return Recording(config, relay.files[0], c2s, s2c, components, ids, stores)


def _rekey(client: Any) -> None:
    """Client rotates its key and asks the server to rotate too (a fresh QKD key each,
    where QKD is in use); the server answers with its own update before it next sends."""
    client.update_keys(request_peer=True)


def _record_tls13(
    config: Configuration, creds: _Credentials, escrow: Escrow, workdir: Path
) -> Recording:
    from OpenSSL import SSL

    keylog = tls13.KeyLog()
    alg = "ml-dsa-65"
    server_ctx = tls13.server_context(
        creds.files[f"leaf-{alg}"], creds.files[f"key-{alg}"], group=config.tls_group
    )
    client_ctx = tls13.client_context(
        creds.files[f"ca-{alg}"], group=config.tls_group, keylog=keylog
    )
    listener = socket.create_server(("127.0.0.1", 0))
    box: dict[str, Any] = {}

    def accept() -> None:
        sock, _ = listener.accept()
        conn = SSL.Connection(server_ctx, sock)
        conn.set_accept_state()
        conn.do_handshake()
        box["server"], box["sock"] = conn, sock

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    relay = CaptureRelay(listener.getsockname()[:2], workdir / config.name, label=config.name)
    with relay:
        sock = socket.create_connection(relay.address, timeout=30)
        sock.settimeout(None)  # pyOpenSSL treats a socket timeout as non-blocking mode
        client = SSL.Connection(client_ctx, sock)
        client.set_tlsext_host_name(SERVER_NAME.encode())
        client.set_connect_state()
        client.do_handshake()
        thread.join(30)
        server = box["server"]
        group = client.get_group_name()
        c2s, s2c = _converse(client, server, lambda: None)  # TLS baseline: no QKD rekey
        for conn in (client, server):
            conn.shutdown()
        sock.close()
        box["sock"].close()
        listener.close()
        relay.wait_idle()
    escrow.tls_secrets[keylog.client_random] = dict(keylog.secrets)
    return Recording(config, relay.files[0], c2s, s2c, (str(group),))


def record_sessions(
    workdir: str | Path,
    configurations: Sequence[Configuration] = CONFIGURATIONS,
    *,
    escrow: Escrow | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Recording], Escrow]:
    """Run and record the conversation once per configuration."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    escrow = escrow if escrow is not None else Escrow()
    creds = _credentials(workdir, escrow)
    recordings = []
    kmes = _KMESites(workdir / "kme")
    try:
        for config in configurations:
            if progress is not None:
                progress(f"recording {config.name}: {config.description}")
            if config.kind == "hybridchan":
                recordings.append(_record_hybridchan(config, creds, escrow, workdir, kmes))
            else:
                recordings.append(_record_tls13(config, creds, escrow, workdir))
    finally:
        kmes.stop()  # the sessions are over; the stores stay on disk, to be stolen later
    return recordings, escrow


def _judge(recording: Recording, adversary: Adversary, escrow: Escrow) -> Outcome:
    capture = read_capture(recording.capture_path)
    oracle = Oracle(escrow, adversary, recording.kme_stores)
    attack = attack_hybridchan if recording.configuration.kind == "hybridchan" else attack_tls13
    result = attack(capture, oracle)
    # Count only bytes that really are the conversation (a prefix in each direction).
    correct = sum(
        len(got) if want.startswith(got) else 0
        for got, want in (
            (result.client_to_server, recording.client_to_server),
            (result.server_to_client, recording.server_to_client),
        )
    )
    return Outcome(
        configuration=recording.configuration.name,
        adversary=adversary.name,
        recovered_bytes=correct,
        total_bytes=recording.total,
        protected_by=tuple(dict.fromkeys(result.missing)),
        note="; ".join(result.notes),
    )


def analyse(
    recordings: Sequence[Recording], escrow: Escrow, adversaries: Iterable[Adversary] = ADVERSARIES
) -> Matrix:
    """Every adversary against every recording."""
    adversaries = tuple(adversaries)
    outcomes = tuple(_judge(r, a, escrow) for r in recordings for a in adversaries)
    return Matrix(
        configurations=tuple(r.configuration.name for r in recordings),
        adversaries=tuple(a.name for a in adversaries),
        outcomes=outcomes,
    )


def run(
    workdir: str | Path,
    configurations: Sequence[Configuration] = CONFIGURATIONS,
    adversaries: Iterable[Adversary] = ADVERSARIES,
    *,
    progress: Callable[[str], None] | None = None,
) -> Matrix:
    """Record every configuration, then judge every adversary: the whole analysis."""
    recordings, escrow = record_sessions(workdir, configurations, progress=progress)
    return analyse(recordings, escrow, adversaries)
