"""Handshake latency: hybridchan's sans-IO handshake vs OpenSSL TLS 1.3, same process.

Figures (milliseconds per complete handshake, both sides, in memory): the median over
interleaved rounds of each round's mean over 20 handshakes (500 per candidate). A mean,
because one ML-DSA signature takes anywhere from 0.4 to 5 ms (rejection sampling).

* ``handshake/openssl-tls13``: the baseline -- OpenSSL TLS 1.3 through pyOpenSSL over
  memory BIOs, X25519MLKEM768 group, AES-256-GCM-SHA384, no session cache,
  ``OP_NO_TICKET`` (our handshake issues no tickets). The server presents an ML-DSA-65
  leaf issued by an ML-DSA-65 root; the client verifies the chain *and the host name*
  (``X509_VERIFY_PARAM_set1_host``) in C, with no Python verify callback -- the same
  checks our client makes (chain signature, validity, name).
* ``handshake/full``: X25519 + ML-KEM-768 + a 32-byte QKD key from the in-memory pool,
  server authenticated by the same ML-DSA-65 certificate chain. Target: ratio <= 1.0.
* ``handshake/full/primitives``: the cryptographic operations of one full handshake
  timed on their own, called exactly as the handshake calls them: X25519 and ML-KEM-768
  key generation, encapsulation and decapsulation, one ML-DSA-65 signature, two ML-DSA-65
  verifications (CertificateVerify and the leaf certificate's signature), one QKD key
  reserved and fetched. ``.../protocol-overhead`` is total minus primitives: codec, state
  machines, key schedule (HMACs, transcript hashing), certificate parsing and the
  validity/name/CA checks, events and SessionInfo.
* ``handshake/full/no-qkd`` (extra, no target): the same handshake under policy ``hybrid``
  -- X25519 + ML-KEM-768 and nothing else, the key exchange of OpenSSL's X25519MLKEM768
  -- so the like-for-like ratio shows what the QKD component costs and what it does not.
* ``handshake/qkd-psk``: **the QKD-PSK handshake of the ">= 4x faster" target**
  (ratio <= 0.25): policy ``qkd-only`` with QKD-PSK authentication, i.e. one QKD key as
  the key-exchange component and a second one as the PSK -- no public-key operation at
  all, which is the point of the QKD-PSK mode.
* ``handshake/qkd-psk/hybrid+qkd`` (extra, no target): the same QKD-PSK authentication
  under policy ``hybrid+qkd``, so X25519 + ML-KEM-768 still run; their ~0.4 ms alone
  bound this variant to roughly 2x faster than OpenSSL, whatever the protocol costs.

Reproduce: ``.venv/bin/python -m benchmarks --only bench_handshake``.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from OpenSSL import SSL

import kem
from benchmarks._common import Result, interleaved
from handshake import ClientHandshake, HandshakeComplete, HandshakeConfig, SendData, ServerHandshake
from handshake.pki import Credential, create_ca, issue_certificate
from hybridchan.rndl import tls13
from qkd.keysource import InMemoryKeyPool

SERVER_NAME = "bench.example"


def _pki() -> tuple[Credential, Credential]:
    now = dt.datetime.now(dt.UTC)
    ca = create_ca("bench root", algorithm="ml-dsa-65", now=now)
    leaf = issue_certificate(
        ca, SERVER_NAME, algorithm="ml-dsa-65", dns_names=[SERVER_NAME], now=now
    )
    return ca, leaf


# -- ours -----------------------------------------------------------------------------------


def _our_configs(
    ca: Credential, leaf: Credential, policy: str, auth: str
) -> tuple[HandshakeConfig, HandshakeConfig]:
    pool = InMemoryKeyPool(os.urandom)
    common: dict[str, Any] = {"policy": policy, "auth_mode": auth, "server_name": SERVER_NAME}
    client = HandshakeConfig(
        **common,
        trust_store=(ca.certificate,),
        qkd_source=pool.source("sae-a"),
        peer_sae_id="sae-b",
    )
    server = HandshakeConfig(
        **common,
        credential=leaf if auth == "certificate" else None,
        qkd_source=pool.source("sae-b"),
        peer_sae_id="sae-a",
    )
    return client, server


def our_handshake(client_cfg: HandshakeConfig, server_cfg: HandshakeConfig) -> None:
    client = ClientHandshake(client_cfg, random=os.urandom, now=time.time)
    server = ServerHandshake(server_cfg, random=os.urandom, now=time.time)
    client.start()
    done = 0
    for _ in range(4):
        for src, dst in ((client, server), (server, client)):
            while (event := src.next_event()) is not None:
                if isinstance(event, SendData):
                    dst.receive(event.epoch, event.data)
                elif isinstance(event, HandshakeComplete):
                    done += 1
    if done != 2:
        raise RuntimeError("benchmark handshake did not complete")


def primitives(ca: Credential, leaf: Credential) -> Callable[[], None]:
    """The cryptographic operations of one full handshake, nothing else.

    Called as the handshake calls them (same KEM objects and randomness sizes, same
    ML-DSA keys); everything else -- parsing, name/validity checks, hashing the
    transcript, HKDF -- is protocol overhead.
    """
    x25519, mlkem = kem.get_kem("X25519"), kem.get_kem("ML-KEM-768")
    pool = InMemoryKeyPool(os.urandom)
    a, b = pool.source("sae-a"), pool.source("sae-b")
    data = os.urandom(130)  # signed content: 64 spaces, context, 0, SHA-384 (~130 bytes)
    public: Any = leaf.certificate.public_key()
    issuer: Any = ca.certificate.public_key()
    tbs, cert_signature = leaf.certificate.tbs_certificate_bytes, leaf.certificate.signature

    def run() -> None:
        for k in (x25519, mlkem):
            pair = k.generate_keypair(os.urandom(k.seed_size) if k.supports_derandomized else None)
            rnd = os.urandom(k.randomness_size) if k.supports_derandomized else None
            ct, _ = k.encapsulate(pair.public, rnd)
            k.decapsulate(pair.private, ct)
        signature = leaf.private_key.sign(data)  # type: ignore[call-arg]
        public.verify(signature, data)  # CertificateVerify
        issuer.verify(cert_signature, tbs)  # the leaf certificate's signature
        key = a.new_key("sae-b")
        b.get_key("sae-a", key.key_id)

    return run


# -- OpenSSL baseline -----------------------------------------------------------------------


def _openssl_contexts(
    ca: Credential, leaf: Credential, workdir: Path, *, host: str = SERVER_NAME
) -> tuple[SSL.Context, SSL.Context]:
    """The standard TLS 1.3 baseline: X25519MLKEM768, no tickets, chain and host name
    verified by OpenSSL in C (``hybridchan.rndl.tls13``)."""
    leaf.write(workdir / "leaf.pem", workdir / "leaf.key")
    (workdir / "ca.pem").write_bytes(ca.cert_pem())
    client = tls13.client_context(workdir / "ca.pem", group="X25519MLKEM768", verify_host=host)
    server = tls13.server_context(
        workdir / "leaf.pem", workdir / "leaf.key", group="X25519MLKEM768"
    )
    return client, server


def _check_openssl_verifies(ca: Credential, leaf: Credential, workdir: Path) -> None:
    """The baseline must do the work ours does: a wrong host name or an unknown CA fails."""
    other = create_ca("other root", algorithm="ml-dsa-65", now=dt.datetime.now(dt.UTC))
    for root, host in ((ca, "wrong.example"), (other, SERVER_NAME)):
        client_ctx, _ = _openssl_contexts(root, leaf, workdir, host=host)
        _, server_ctx = _openssl_contexts(ca, leaf, workdir)
        try:
            openssl_handshake(client_ctx, server_ctx)
        except SSL.Error:
            continue
        raise RuntimeError(f"OpenSSL baseline accepted {host!r} / {root.certificate.subject}")


def openssl_handshake(client_ctx: SSL.Context, server_ctx: SSL.Context) -> SSL.Connection:
    """One baseline handshake over memory BIOs; returns the client connection."""
    client, _ = tls13.memory_handshake(client_ctx, server_ctx, server_name=SERVER_NAME)
    return client


# -- run ------------------------------------------------------------------------------------


def run(quick: bool) -> list[Result]:
    from OpenSSL._util import lib

    repeat, number = (4, 4) if quick else (25, 20)
    ca, leaf = _pki()
    with tempfile.TemporaryDirectory() as tmp:
        _check_openssl_verifies(ca, leaf, Path(tmp))
        client_ctx, server_ctx = _openssl_contexts(ca, leaf, Path(tmp))
        conn = openssl_handshake(client_ctx, server_ctx)
        group = conn.get_group_name()
        if str(group).lower() != "x25519mlkem768":
            raise RuntimeError(f"OpenSSL negotiated {group}, not X25519MLKEM768")
        if lib.SSL_get_verify_result(conn._ssl) != 0:  # X509_V_OK
            raise RuntimeError("OpenSSL baseline did not verify the server chain")

        full = _our_configs(ca, leaf, "hybrid+qkd", "certificate")
        no_qkd = _our_configs(ca, leaf, "hybrid", "certificate")
        qkd_psk = _our_configs(ca, leaf, "qkd-only", "qkd-psk")
        hybrid_psk = _our_configs(ca, leaf, "hybrid+qkd", "qkd-psk")
        ms = interleaved(
            {
                "openssl": lambda: openssl_handshake(client_ctx, server_ctx),
                "full": lambda: our_handshake(*full),
                "no-qkd": lambda: our_handshake(*no_qkd),
                "primitives": primitives(ca, leaf),
                "qkd-psk": lambda: our_handshake(*qkd_psk),
                "hybrid-psk": lambda: our_handshake(*hybrid_psk),
            },
            repeat=repeat,
            number=number,
        )
    openssl_ms, full_ms, no_qkd_ms, prim_ms, psk_ms, hybrid_psk_ms = (
        ms[k] for k in ("openssl", "full", "no-qkd", "primitives", "qkd-psk", "hybrid-psk")
    )
    base: dict[str, Any] = {
        "baseline": openssl_ms,
        "baseline_name": "openssl-tls13/X25519MLKEM768+ML-DSA-65",
    }
    return [
        Result(
            "handshake/openssl-tls13",
            openssl_ms,
            "ms",
            notes=f"group {group}, chain + host name verified in C, OP_NO_TICKET, no cache",
        ),
        Result(
            "handshake/full",
            full_ms,
            "ms",
            **base,
            target="ratio <= 1.0",
            notes="X25519+ML-KEM-768+QKD, ML-DSA-65 cert chain + name verified, server auth",
        ),
        Result(
            "handshake/full/primitives",
            prim_ms,
            "ms",
            baseline=full_ms,
            baseline_name="handshake/full",
            notes="X25519+ML-KEM-768 keygen/encap/decap, ML-DSA-65 sign + 2 verify, QKD key",
        ),
        Result(
            "handshake/full/protocol-overhead",
            max(full_ms - prim_ms, 0.0),
            "ms",
            baseline=full_ms,
            baseline_name="handshake/full",
            notes="codec, state machines, key schedule, transcript, cert parsing and checks",
        ),
        Result(
            "handshake/full/no-qkd",
            no_qkd_ms,
            "ms",
            **base,
            notes="extra: policy hybrid (X25519+ML-KEM-768 only, OpenSSL's key exchange), same cert",
        ),
        Result(
            "handshake/qkd-psk",
            psk_ms,
            "ms",
            **base,
            target="ratio <= 0.25 (>= 4x faster)",
            notes="primary QKD-PSK figure: policy qkd-only, QKD key + QKD-PSK, no public-key ops",
        ),
        Result(
            "handshake/qkd-psk/hybrid+qkd",
            hybrid_psk_ms,
            "ms",
            **base,
            notes="extra: QKD-PSK auth with X25519+ML-KEM-768+QKD (KEMs alone ~0.4 ms)",
        ),
    ]


if __name__ == "__main__":
    for r in run(quick=False):
        print(r.to_json())
