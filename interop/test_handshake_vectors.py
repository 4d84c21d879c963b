"""Deterministic handshake transcripts committed under ``interop/vectors/``.

Each vector fixes every input -- the random bytes each side draws (in draw order), the
QKD keys, the PSK, the certificates (Ed25519, deterministic) and the clock -- and records
every wire message and the derived secrets. ML-KEM runs on the ``pure`` backend, which
honours explicit randomness (FIPS 203 ``d || z`` seeds, encapsulation ``m``); X25519 takes
its private key from the drawn bytes. Another implementation can replay the draws and
compare byte for byte.

Regenerate after an intentional protocol change::

    .venv/bin/python -m interop.test_handshake_vectors --write
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from handshake import (
    ClientHandshake,
    Epoch,
    ExternalPSK,
    HandshakeComplete,
    HandshakeConfig,
    KeysReady,
    SendData,
    ServerHandshake,
)
from handshake.messages import MessageBuffer
from handshake.pki import Credential
from qkd.keysource import InMemoryKeyPool

VECTOR_DIR = Path(__file__).parent / "vectors"
NOW = 1_780_000_000.0
SERVER_NAME = "server.example"
CASES: dict[str, dict[str, Any]] = {
    "hybrid+qkd_qkd-psk": {"policy": "hybrid+qkd", "auth_mode": "qkd-psk"},
    "hybrid_x25519mlkem768_psk": {
        "policy": "hybrid",
        "auth_mode": "psk",
        "kems": ("X25519MLKEM768",),
    },
    "pqc_mlkem1024_psk": {"policy": "pqc", "auth_mode": "psk", "kems": ("ML-KEM-1024",)},
    "qkd-only_qkd-psk": {"policy": "qkd-only", "auth_mode": "qkd-psk"},
    "hybrid_ed25519-cert_mutual": {"policy": "hybrid", "auth_mode": "certificate", "mutual": True},
}


class RecordingRandom:
    """SHAKE-256(label || counter) stream that records every draw."""

    def __init__(self, label: str) -> None:
        self.label = label.encode()
        self.draws: list[str] = []

    def __call__(self, n: int) -> bytes:
        out = hashlib.shake_256(self.label + len(self.draws).to_bytes(8, "big")).digest(n)
        self.draws.append(out.hex())
        return out


def _ed25519(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(label.encode()).digest())


def _cert(
    subject: str,
    key: ed25519.Ed25519PrivateKey,
    issuer: str,
    signer: ed25519.Ed25519PrivateKey,
    *,
    ca: bool,
    serial: int,
) -> x509.Certificate:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), False)
    return builder.sign(signer, None)


def _fixed_pki() -> tuple[x509.Certificate, Credential, Credential]:
    root_key = _ed25519("vector root")
    root = _cert("Vector Root", root_key, "Vector Root", root_key, ca=True, serial=1)
    skey, ckey = _ed25519("vector server"), _ed25519("vector client")
    server = Credential(
        _cert(SERVER_NAME, skey, "Vector Root", root_key, ca=False, serial=2), skey, (root,)
    )
    client = Credential(
        _cert("client.example", ckey, "Vector Root", root_key, ca=False, serial=3), ckey, (root,)
    )
    return root, server, client


def generate(name: str) -> dict[str, Any]:
    case = dict(CASES[name])
    pool_random = RecordingRandom(f"{name} qkd link")
    pool = InMemoryKeyPool(pool_random)
    psk = ExternalPSK(identity=b"vector-psk", key=hashlib.sha384(b"vector psk").digest())
    common: dict[str, Any] = {"kem_backend": "pure", "server_name": SERVER_NAME, **case}
    client_kw, server_kw = dict(common), dict(common)
    client_kw.pop("mutual", None)
    inputs: dict[str, Any] = {"now": NOW, **{k: v for k, v in case.items()}}
    if case["policy"] in ("hybrid+qkd", "qkd-only") or case["auth_mode"] == "qkd-psk":
        client_kw.update(qkd_source=pool.source("sae-A"), peer_sae_id="sae-B")
        server_kw.update(qkd_source=pool.source("sae-B"), peer_sae_id="sae-A")
        inputs.update(client_sae_id="sae-A", server_sae_id="sae-B")
    if case["auth_mode"] == "psk":
        client_kw["psks"] = server_kw["psks"] = (psk,)
        inputs["psk"] = {"identity": psk.identity.hex(), "key": psk.key.hex()}
    if case["auth_mode"] == "certificate":
        root, server_cred, client_cred = _fixed_pki()
        client_kw.update(trust_store=(root,), credential=client_cred)
        server_kw.update(trust_store=(root,), credential=server_cred)
        inputs["certificates_pem"] = {
            "root": root.public_bytes(serialization.Encoding.PEM).decode(),
            "server": server_cred.certificate.public_bytes(serialization.Encoding.PEM).decode(),
            "client": client_cred.certificate.public_bytes(serialization.Encoding.PEM).decode(),
        }
        inputs["ed25519_private_keys_sha256_of"] = ["vector server", "vector client"]
    client_rng, server_rng = RecordingRandom(f"{name} client"), RecordingRandom(f"{name} server")
    client = ClientHandshake(HandshakeConfig(**client_kw), random=client_rng, now=lambda: NOW)
    server = ServerHandshake(HandshakeConfig(**server_kw), random=server_rng, now=lambda: NOW)
    out: dict[str, Any] = {"messages": [], "client": {}, "server": {}}
    client.start()
    for _ in range(6):
        _pump(client, server, "client", out)
        _pump(server, client, "server", out)
    for side in ("client", "server"):
        assert "session" in out[side], f"vector {name}: handshake did not complete"
    inputs["kems"] = list(case.get("kems", ()))
    return {
        "name": name,
        "description": "hybridchan v1 handshake; see docs/protocol.md. Random draws are in order.",
        "inputs": inputs,
        "client_random_draws": client_rng.draws,
        "server_random_draws": server_rng.draws,
        "qkd_link_random_draws": pool_random.draws,
        **out,
    }


def _pump(src: Any, dst: Any, side: str, out: dict[str, Any]) -> None:
    while (event := src.next_event()) is not None:
        if isinstance(event, SendData):
            buf = MessageBuffer()
            buf.feed(event.data)
            while (item := buf.pop()) is not None:
                out["messages"].append(
                    {
                        "from": side,
                        "epoch": Epoch(event.epoch).name,
                        "type": type(item[0]).__name__,
                        "hex": item[1].hex(),
                    }
                )
            dst.receive(event.epoch, event.data)
        elif isinstance(event, KeysReady):
            out[side][f"{Epoch(event.epoch).name.lower()}_{event.direction}_secret"] = (
                event.secret.hex()
            )
        elif isinstance(event, HandshakeComplete):
            s = event.session
            out[side]["session"] = {
                "components": list(s.components),
                "qkd_key_ids": list(s.qkd_key_ids),
                "peer_identity": s.peer_identity,
                "transcript_hash": s.transcript_hash.hex(),
                "exporter_secret": s.exporter_secret.hex(),
                "resumption_secret": s.resumption_secret.hex(),
            }


def _path(name: str) -> Path:
    return VECTOR_DIR / f"handshake_{name.replace('+', 'plus')}.json"


@pytest.mark.parametrize("name", sorted(CASES))
def test_vector_reproduces(name: str) -> None:
    path = _path(name)
    assert path.exists(), f"{path} missing; run python -m interop.test_handshake_vectors --write"
    expected = json.loads(path.read_text())
    got = json.loads(json.dumps(generate(name)))
    for key in ("messages", "client", "server", "client_random_draws", "server_random_draws"):
        assert got[key] == expected[key], f"{name}: {key} differs from the committed vector"
    assert got == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_vector_is_self_consistent(name: str) -> None:
    vec = json.loads(_path(name).read_text())
    c, s = vec["client"], vec["server"]
    assert c["session"] == {**s["session"], "peer_identity": c["session"]["peer_identity"]}
    assert c["application_write_secret"] == s["application_read_secret"]
    transcript = b"".join(bytes.fromhex(m["hex"]) for m in vec["messages"])
    assert hashlib.sha384(transcript).hexdigest() == c["session"]["transcript_hash"]


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit("usage: python -m interop.test_handshake_vectors --write")
    VECTOR_DIR.mkdir(exist_ok=True)
    for case_name in sorted(CASES):
        _path(case_name).write_text(json.dumps(generate(case_name), indent=1) + "\n")
        print("wrote", _path(case_name))
