"""In-memory client+server pair, deterministic randomness and a cached test PKI."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from handshake import (
    AlertDescription,
    ClientHandshake,
    Epoch,
    ExternalPSK,
    HandshakeComplete,
    HandshakeConfig,
    HandshakeError,
    KeysReady,
    SendData,
    ServerHandshake,
    SessionInfo,
)
from handshake.auth import spki_der
from handshake.pki import Credential, create_ca, issue_certificate
from qkd.keysource import InMemoryKeyPool

NOW = 1_780_000_000.0  # 2026-05-28, inside every test certificate's validity
NOW_DT = dt.datetime.fromtimestamp(NOW, dt.UTC)
SERVER_NAME = "server.example"
CLIENT_SAE, SERVER_SAE = "sae-client", "sae-server"

POLICIES = ("classical", "pqc", "hybrid", "hybrid+qkd", "qkd-only")
AUTH_MODES = ("certificate", "composite", "raw-key", "psk", "qkd-psk")


class DetRandom:
    """Deterministic byte stream (SHAKE-256 of a label and a counter)."""

    def __init__(self, label: str) -> None:
        self._label = label.encode()
        self._counter = 0

    def __call__(self, n: int) -> bytes:
        self._counter += 1
        return hashlib.shake_256(self._label + self._counter.to_bytes(8, "big")).digest(n)


@dataclass
class Pki:
    ca: Credential
    other_ca: Credential
    server: dict[str, Credential]
    client: dict[str, Credential]


@functools.cache
def pki() -> Pki:
    ca = create_ca("Test Root", algorithm="ml-dsa-65", now=NOW_DT)
    other = create_ca("Evil Root", algorithm="ed25519", now=NOW_DT)
    algs = ("ml-dsa-44", "ml-dsa-65", "ml-dsa-87", "ed25519", "ecdsa-p256")
    server = {
        a: issue_certificate(ca, SERVER_NAME, algorithm=a, dns_names=[SERVER_NAME], now=NOW_DT)
        for a in algs
    }
    client = {a: issue_certificate(ca, "client-1", algorithm=a, now=NOW_DT) for a in algs}
    return Pki(ca, other, server, client)


PSK = ExternalPSK(identity=b"bootstrap-psk-1", key=bytes(range(32)))


def configs(
    policy: str,
    auth: str,
    *,
    pool: InMemoryKeyPool | None = None,
    mutual: bool = False,
    algorithm: str = "ml-dsa-65",
    **overrides: Any,
) -> tuple[HandshakeConfig, HandshakeConfig]:
    """A matching (client, server) configuration pair."""
    p = pki()
    pool = pool or InMemoryKeyPool(DetRandom("qkd-" + policy + auth))
    c: dict[str, Any] = {"policy": policy, "server_name": SERVER_NAME}
    s: dict[str, Any] = {"policy": policy, "server_name": SERVER_NAME, "mutual": mutual}
    if policy in ("hybrid+qkd", "qkd-only") or auth == "qkd-psk":
        c.update(qkd_source=pool.source(CLIENT_SAE), peer_sae_id=SERVER_SAE)
        s.update(qkd_source=pool.source(SERVER_SAE), peer_sae_id=CLIENT_SAE)
    if auth in ("certificate", "composite"):
        c.update(auth_mode="certificate", trust_store=(p.ca.certificate,))
        s.update(auth_mode="certificate", trust_store=(p.ca.certificate,))
        if auth == "composite":
            s["credential"] = (p.server["ml-dsa-65"], p.server["ed25519"])
            c["credential"] = (p.client["ml-dsa-65"], p.client["ed25519"])
        else:
            s["credential"] = p.server[algorithm]
            c["credential"] = p.client[algorithm]
    elif auth == "raw-key":
        skey, ckey = p.server[algorithm], p.client[algorithm]
        c.update(auth_mode="raw-key", credential=ckey, pinned_keys=(_spki(skey),))
        s.update(auth_mode="raw-key", credential=skey, pinned_keys=(_spki(ckey),))
    elif auth == "psk":
        c.update(auth_mode="psk", psks=(PSK,))
        s.update(auth_mode="psk", psks=(PSK,))
    else:
        c.update(auth_mode="qkd-psk")
        s.update(auth_mode="qkd-psk")
    c.update(overrides.pop("client", {}))
    s.update(overrides.pop("server", {}))
    c.update(overrides)
    s.update(overrides)
    return HandshakeConfig(**c), HandshakeConfig(**s)


def _spki(cred: Credential) -> bytes:
    return spki_der(cred.private_key.public_key())


Tamper = Callable[[str, Epoch, bytes], bytes | None]


@dataclass
class PairResult:
    client: ClientHandshake
    server: ServerHandshake
    client_keys: dict[tuple[Epoch, str], bytes] = field(default_factory=dict)
    server_keys: dict[tuple[Epoch, str], bytes] = field(default_factory=dict)
    client_session: SessionInfo | None = None
    server_session: SessionInfo | None = None
    wire: list[tuple[str, Epoch, bytes]] = field(default_factory=list)
    #: ("client" | "server", error) raised by the receiving side, if any
    error: tuple[str, HandshakeError] | None = None

    @property
    def completed(self) -> bool:
        return self.client_session is not None and self.server_session is not None


def make_pair(
    client_cfg: HandshakeConfig,
    server_cfg: HandshakeConfig,
    *,
    seed: str = "pair",
    now: float = NOW,
) -> tuple[ClientHandshake, ServerHandshake]:
    client = ClientHandshake(client_cfg, random=DetRandom(seed + "-c"), now=lambda: now)
    server = ServerHandshake(server_cfg, random=DetRandom(seed + "-s"), now=lambda: now)
    return client, server


def run_pair(
    client_cfg: HandshakeConfig,
    server_cfg: HandshakeConfig,
    *,
    seed: str = "pair",
    now: float = NOW,
    tamper: Tamper | None = None,
) -> PairResult:
    """Run a handshake in memory; ``tamper(direction, epoch, data)`` may rewrite or drop
    (return None) each flight. A HandshakeError stops the run and lands in ``error``."""
    client, server = make_pair(client_cfg, server_cfg, seed=seed, now=now)
    result = PairResult(client, server)
    try:
        client.start()
    except HandshakeError as exc:
        result.error = ("client", exc)
        return result
    drive(result, tamper)
    return result


def drive(result: PairResult, tamper: Tamper | None = None) -> None:
    """Move events between the two sides until nothing moves or one side fails."""
    for _ in range(10):
        try:
            moved = _pump(result.client, result.server, "c2s", result, tamper)
        except HandshakeError as exc:
            result.error = ("server", exc)
            return
        try:
            moved |= _pump(result.server, result.client, "s2c", result, tamper)
        except HandshakeError as exc:
            result.error = ("client", exc)
            return
        if not moved:
            return


def expect_alert(result: PairResult, side: str, alert: int, match: str = "") -> HandshakeError:
    """Assert that ``side`` failed with ``alert`` (and a message containing ``match``)."""
    assert not result.completed, "the handshake completed although it should have failed"
    assert result.error is not None, "the handshake stalled without an error"
    got_side, exc = result.error
    assert (got_side, AlertDescription(exc.alert)) == (side, AlertDescription(alert)), str(exc)
    assert match in str(exc), str(exc)
    return exc


def _pump(src: Any, dst: Any, direction: str, result: PairResult, tamper: Tamper | None) -> bool:
    moved = False
    keys = result.client_keys if direction == "c2s" else result.server_keys
    while (event := src.next_event()) is not None:
        moved = True
        if isinstance(event, SendData):
            data: bytes | None = event.data
            if tamper is not None:
                data = tamper(direction, event.epoch, event.data)
            result.wire.append((direction, event.epoch, event.data))
            if data:
                dst.receive(event.epoch, data)
        elif isinstance(event, KeysReady):
            keys[(event.epoch, event.direction)] = event.secret
        elif isinstance(event, HandshakeComplete):
            if direction == "c2s":
                result.client_session = event.session
            else:
                result.server_session = event.session
    return moved


def assert_same_keys(result: PairResult) -> None:
    assert result.completed, "handshake did not complete"
    ck, sk = result.client_keys, result.server_keys
    for epoch in (Epoch.HANDSHAKE, Epoch.APPLICATION):
        assert ck[(epoch, "write")] == sk[(epoch, "read")]
        assert ck[(epoch, "read")] == sk[(epoch, "write")]
        assert ck[(epoch, "write")] != ck[(epoch, "read")]
    cs, ss = result.client_session, result.server_session
    assert cs is not None and ss is not None
    assert cs.exporter_secret == ss.exporter_secret
    assert cs.resumption_secret == ss.resumption_secret
    assert cs.transcript_hash == ss.transcript_hash
    assert cs.components == ss.components


def wrong_key() -> bytes:
    return spki_der(ed25519.Ed25519PrivateKey.generate().public_key())
