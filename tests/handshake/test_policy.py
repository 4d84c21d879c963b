"""Policies: QKD source failures fail closed (alert 220, cause named) unless the stated
fallback is allowed, in which case SessionInfo says so; configuration is validated."""

from __future__ import annotations

import dataclasses

import pytest

from handshake import AlertDescription as A
from handshake import (
    ClientHandshake,
    HandshakeConfig,
    HandshakeError,
    PolicyError,
    ServerHandshake,
)
from qkd.keysource import InMemoryKeyPool, KeyUnavailableError, QKDKey
from tests.handshake.helpers import (
    SERVER_SAE,
    DetRandom,
    assert_same_keys,
    configs,
    expect_alert,
    pki,
    run_pair,
)


def _pool(**kw: object) -> InMemoryKeyPool:
    return InMemoryKeyPool(DetRandom("policy-pool"), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("policy", ["hybrid+qkd", "qkd-only"])
def test_aborted_link_fails_closed(policy: str) -> None:
    pool = _pool()
    pool.abort("QBER 14% above threshold")
    result = run_pair(*configs(policy, "psk", pool=pool))
    exc = expect_alert(result, "client", A.qkd_key_unavailable, "QBER 14% above threshold")
    assert "confidentiality key" in str(exc)


def test_empty_pool_fails_closed_for_qkd_psk() -> None:
    result = run_pair(*configs("hybrid", "qkd-psk", pool=_pool(capacity=0)))
    expect_alert(result, "client", A.qkd_key_unavailable, "pool empty")


def test_client_side_fallback_is_stated() -> None:
    pool = _pool()
    pool.abort()
    result = run_pair(*configs("hybrid+qkd", "certificate", pool=pool, allow_fallback=True))
    assert_same_keys(result)
    cs, ss = result.client_session, result.server_session
    assert cs is not None and ss is not None
    assert cs.components == ss.components == ("X25519", "ML-KEM-768")
    assert cs.fallback is not None and "QBER above threshold" in cs.fallback
    assert "'hybrid'" in cs.fallback
    assert ss.fallback is not None and "offered no QKD key" in ss.fallback
    assert cs.qkd_key_ids == ()


class _BrokenResponder:
    """Server key source whose KME is down."""

    sae_id = SERVER_SAE

    def new_key(self, peer_sae_id: str, size_bytes: int = 32) -> QKDKey:
        raise KeyUnavailableError("KME unreachable")

    def get_key(self, peer_sae_id: str, key_id: str) -> QKDKey:
        raise KeyUnavailableError("KME unreachable (connection refused)")


def test_server_side_failure_fails_closed() -> None:
    result = run_pair(
        *configs("hybrid+qkd", "certificate", server={"qkd_source": _BrokenResponder()})
    )
    expect_alert(result, "server", A.qkd_key_unavailable, "connection refused")


def test_server_side_fallback_is_stated() -> None:
    result = run_pair(
        *configs(
            "hybrid+qkd",
            "certificate",
            allow_fallback=True,
            server={"qkd_source": _BrokenResponder()},
        )
    )
    assert_same_keys(result)
    cs, ss = result.client_session, result.server_session
    assert cs is not None and ss is not None
    assert "QKD" not in cs.components
    assert ss.fallback is not None and "connection refused" in ss.fallback
    assert cs.fallback is not None and "declined" in cs.fallback
    assert cs.qkd_key_ids == ss.qkd_key_ids == ()


def test_fallback_not_used_when_qkd_works() -> None:
    result = run_pair(*configs("hybrid+qkd", "certificate", allow_fallback=True))
    assert_same_keys(result)
    assert result.client_session is not None
    assert result.client_session.fallback is None
    assert result.client_session.components[-1] == "QKD"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"policy": "quantum"}, "unknown policy"),
        ({"policy": "qkd-only", "auth_mode": "certificate"}, "does not allow auth_mode"),
        ({"policy": "classical", "kems": ("ML-KEM-768",)}, "not allowed by policy"),
        ({"policy": "pqc", "kems": ("X25519MLKEM768",)}, "not allowed by policy"),
        ({"policy": "hybrid", "allow_fallback": True}, "has no fallback"),
        ({"policy": "hybrid+qkd"}, "needs a QKD key source"),
        ({"auth_mode": "qkd-psk"}, "needs a QKD key source"),
        ({"auth_mode": "psk"}, "ExternalPSK"),
        ({"auth_mode": "sso"}, "unknown auth_mode"),
        ({"qkd_key_size": 8}, "qkd_key_size"),
        ({"kem_backend": "opensll"}, "unknown kem_backend 'opensll'"),
        ({"kems": ("X25519", "X25519")}, "lists a key exchange twice"),
        ({"server_name": "bank.éxample"}, "server_name must be ASCII"),
        ({"server_name": "a" * 256}, "at most 255"),
    ],
)
def test_config_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        HandshakeConfig(**kwargs)  # type: ignore[arg-type]


def test_role_checks() -> None:
    with pytest.raises(PolicyError, match="server_name"):
        ClientHandshake(HandshakeConfig(), random=DetRandom("x"), now=lambda: 0.0)
    with pytest.raises(PolicyError, match="needs a credential"):
        ServerHandshake(HandshakeConfig(), random=DetRandom("x"), now=lambda: 0.0)
    client, _ = configs("hybrid+qkd", "psk")
    with pytest.raises(PolicyError, match="peer_sae_id"):
        ClientHandshake(
            dataclasses.replace(client, peer_sae_id=None), random=DetRandom("x"), now=lambda: 0.0
        )


def test_peer_check_material_matches_the_auth_mode() -> None:
    """A CA store cannot check a raw key and pins cannot check a chain: refused up front."""
    client, server = configs("hybrid", "raw-key")
    trust_only = dataclasses.replace(client, pinned_keys=(), trust_store=(pki().ca.certificate,))
    with pytest.raises(PolicyError, match="client checking raw public keys needs pinned_keys"):
        ClientHandshake(trust_only, random=DetRandom("x"), now=lambda: 0.0)
    cert_client, cert_server = configs("hybrid", "certificate", mutual=True)
    pins_only = dataclasses.replace(cert_client, trust_store=(), pinned_keys=(b"spki",))
    with pytest.raises(PolicyError, match="client checking certificates needs trust_store"):
        ClientHandshake(pins_only, random=DetRandom("x"), now=lambda: 0.0)
    server_pins = dataclasses.replace(cert_server, trust_store=(), pinned_keys=(b"spki",))
    with pytest.raises(PolicyError, match="server requiring client authentication"):
        ServerHandshake(server_pins, random=DetRandom("x"), now=lambda: 0.0)
    no_pins = dataclasses.replace(server, pinned_keys=())
    ServerHandshake(no_pins, random=DetRandom("x"), now=lambda: 0.0)  # no mutual: no pins needed


def test_pqc_policy_refuses_classical_signatures() -> None:
    result = run_pair(*configs("pqc", "certificate", algorithm="ed25519"))
    expect_alert(result, "server", A.handshake_failure, "ed25519")


def test_errors_latch() -> None:
    """After any error the handshake refuses further use, repeating the alert."""
    _, server = configs("hybrid", "psk")
    s = ServerHandshake(server, random=DetRandom("latch"), now=lambda: 0.0)
    with pytest.raises(HandshakeError) as first:
        s.receive(0, b"\x01\x00\x00\x01\x00")
    assert first.value.alert == A.decode_error
    with pytest.raises(HandshakeError, match="already failed") as again:
        s.receive(0, b"")
    assert again.value.alert == A.decode_error
