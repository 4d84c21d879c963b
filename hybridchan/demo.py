"""Embedded defaults and the echo demo: everything in one process, nothing external.

:func:`embedded_configs` builds a matching client/server :class:`ChannelConfig`
pair for any policy: a fresh ML-DSA-65 CA and server certificate (certificate
mode), an in-memory QKD link (:class:`qkd.keysource.InMemoryKeyPool`) for the QKD
policies, or an external PSK for ``qkd-only``. :func:`run_echo_demo` runs a
hybrid+qkd echo over loopback TCP, forces a QKD rekey and prints what was
negotiated (key IDs only, never key material).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from handshake import ExternalPSK, HandshakeConfig
from handshake.pki import Credential, create_ca, issue_certificate
from hybridchan.config import ChannelConfig, RekeySchedule
from qkd.keysource import InMemoryKeyPool

__all__ = ["EmbeddedPKI", "embedded_configs", "run_echo_demo"]

CLIENT_SAE = "sae-client"
SERVER_SAE = "sae-server"
SERVER_NAME = "server.hybridchan.test"


@dataclass(frozen=True, slots=True)
class EmbeddedPKI:
    """A CA with one server and one client certificate (ML-DSA-65 by default)."""

    ca: Credential
    server: Credential
    client: Credential

    @classmethod
    def generate(cls, algorithm: str = "ml-dsa-65") -> EmbeddedPKI:
        ca = create_ca("hybridchan embedded CA", algorithm=algorithm)
        server = issue_certificate(ca, SERVER_NAME, algorithm=algorithm, dns_names=[SERVER_NAME])
        client = issue_certificate(ca, "client.hybridchan.test", algorithm=algorithm, server=False)
        return cls(ca, server, client)

    @classmethod
    def load_or_create(
        cls, directory: str | os.PathLike[str], algorithm: str = "ml-dsa-65"
    ) -> EmbeddedPKI:
        """The PKI stored in ``directory`` (PEM files), created there on first use.

        Lets a server and a client in separate processes share one demo PKI.
        """
        from pathlib import Path

        from handshake.pki import load_credential

        root = Path(directory)
        names = ("ca", "server", "client")
        if not all((root / f"{n}.pem").exists() for n in names):
            root.mkdir(parents=True, exist_ok=True)
            fresh = cls.generate(algorithm)
            for name in names:
                getattr(fresh, name).write(root / f"{name}.pem", root / f"{name}-key.pem")
            return fresh
        ca, server, client = (
            load_credential(root / f"{n}.pem", root / f"{n}-key.pem") for n in names
        )
        return cls(ca, server, client)


def embedded_configs(
    policy: str = "hybrid+qkd",
    *,
    pki: EmbeddedPKI | None = None,
    pool: InMemoryKeyPool | None = None,
    qkd_sources: tuple[Any, Any] | None = None,
    auth_mode: str | None = None,
    mutual: bool = False,
    **channel_options: Any,
) -> tuple[ChannelConfig, ChannelConfig]:
    """``(client_config, server_config)`` for ``policy`` on embedded defaults.

    ``channel_options`` go to both :class:`ChannelConfig` objects (``rekey=...``,
    ``on_qkd_unavailable=...``, timeouts). QKD policies use ``pool`` (a fresh
    unlimited in-memory pool by default), or ``qkd_sources``: the client's and the
    server's own QKD key sources (e.g. the clients of a KME pair).
    """
    needs_qkd = policy in ("hybrid+qkd", "qkd-only")
    if auth_mode is None:
        auth_mode = "psk" if policy == "qkd-only" else "certificate"
    if needs_qkd and pool is None and qkd_sources is None:
        pool = InMemoryKeyPool(os.urandom)
    common: dict[str, Any] = {"policy": policy, "auth_mode": auth_mode}
    client_hs: dict[str, Any] = dict(common, server_name=SERVER_NAME)
    server_hs: dict[str, Any] = dict(common, server_name=SERVER_NAME, mutual=mutual)
    if auth_mode == "certificate":
        pki = pki or EmbeddedPKI.generate()
        client_hs.update(trust_store=(pki.ca.certificate,))
        server_hs.update(credential=pki.server, trust_store=(pki.ca.certificate,))
        if mutual:
            client_hs.update(credential=pki.client)
    elif auth_mode == "psk":
        psk = ExternalPSK(identity=b"embedded-bootstrap", key=os.urandom(32))
        client_hs.update(psks=(psk,))
        server_hs.update(psks=(psk,))
    if qkd_sources is None and pool is not None:
        qkd_sources = (pool.source(CLIENT_SAE), pool.source(SERVER_SAE))
    if qkd_sources is not None and (needs_qkd or auth_mode == "qkd-psk"):
        client_hs.update(qkd_source=qkd_sources[0], peer_sae_id=qkd_sources[1].sae_id)
        server_hs.update(qkd_source=qkd_sources[1], peer_sae_id=qkd_sources[0].sae_id)
    return (
        ChannelConfig(handshake=HandshakeConfig(**client_hs), **channel_options),
        ChannelConfig(handshake=HandshakeConfig(**server_hs), **channel_options),
    )


def run_echo_demo(
    *,
    policy: str = "hybrid+qkd",
    messages: int = 3,
    bulk_bytes: int = 1 << 20,
    echo: Callable[[str], object] = print,
    qkd_sources: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Hybrid+QKD echo over loopback TCP with a forced QKD rekey; prints a summary.

    Returns the figures it printed (components, key IDs, bytes echoed) so callers
    and tests can check them. Never prints key material. QKD keys come from an
    in-memory link unless ``qkd_sources`` (client's, server's) are given.
    """
    from hybridchan._sync import Server, connect

    pool = InMemoryKeyPool(os.urandom) if qkd_sources is None else None
    client_cfg, server_cfg = embedded_configs(policy, pool=pool, qkd_sources=qkd_sources)
    server_cfg = replace(server_cfg, rekey=RekeySchedule(max_bytes=1 << 18))

    def handler(channel: Any) -> None:
        while data := channel.recv(1 << 16):
            channel.sendall(data)

    with Server(server_cfg) as server:
        thread = threading.Thread(target=server.serve_forever, args=(handler,), daemon=True)
        thread.start()
        with connect(server.address, client_cfg) as channel:
            session = channel.session
            echo(
                f"connected to {server.address[0]}:{server.address[1]} as policy {session.policy!r}"
            )
            echo(f"  key exchange components : {' + '.join(session.components)}")
            echo(f"  cipher suite            : {session.cipher_suite}")
            echo(f"  authentication          : {session.auth_mode} ({session.signature_scheme})")
            echo(f"  server identity         : {session.peer_identity}")
            echo(f"  handshake QKD key IDs   : {', '.join(session.qkd_key_ids) or '-'}")
            for i in range(messages):
                line = f"hello #{i} over {policy}".encode()
                channel.sendall(line)
                reply = channel.recv_exactly(len(line))
                echo(f"  echo {i}: {reply.decode()!r}")
            channel.update_keys()
            payload = os.urandom(bulk_bytes)
            reader = threading.Thread(target=lambda: out.append(channel.recv_exactly(bulk_bytes)))
            out: list[bytes] = []
            reader.start()
            channel.sendall(payload)
            reader.join()
            ok = bool(out) and hashlib.sha256(out[0]).digest() == hashlib.sha256(payload).digest()
            conn = channel.connection
            echo(f"  bulk echo of {bulk_bytes} bytes: {'intact' if ok else 'CORRUPTED'} (SHA-256)")
            echo(
                f"  key updates: {conn.write_generation} sent, {conn.read_generation} received; "
                f"QKD keys mixed in: {len(conn.qkd_rekey_ids)}"
            )
            for direction, key_id in conn.qkd_rekey_ids[:4]:
                echo(f"    rekey ({direction:5}) with QKD key {key_id}")
            if len(conn.qkd_rekey_ids) > 4:
                echo(f"    ... and {len(conn.qkd_rekey_ids) - 4} more")
    if pool is not None:
        echo(f"QKD keys issued by the in-memory link: {pool.issued}")
    return {
        "components": tuple(session.components),
        "handshake_qkd_key_ids": tuple(session.qkd_key_ids),
        "rekey_qkd_key_ids": tuple(k for _, k in conn.qkd_rekey_ids),
        "bulk_intact": ok,
        "write_generation": conn.write_generation,
        "read_generation": conn.read_generation,
        "qkd_keys_issued": pool.issued if pool is not None else None,
    }
