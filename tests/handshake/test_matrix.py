"""Every policy x authentication mode completes and both sides derive identical keys."""

from __future__ import annotations

import pytest

from handshake import Epoch, PolicyError
from handshake.keyschedule import traffic_keys
from tests.handshake.helpers import (
    AUTH_MODES,
    CLIENT_SAE,
    POLICIES,
    SERVER_SAE,
    assert_same_keys,
    configs,
    run_pair,
)

_EXPECTED_COMPONENTS = {
    "classical": ("X25519",),
    "pqc": ("ML-KEM-768",),
    "hybrid": ("X25519", "ML-KEM-768"),
    "hybrid+qkd": ("X25519", "ML-KEM-768", "QKD"),
    "qkd-only": ("QKD",),
}
_ALLOWED = [
    (p, a) for p in POLICIES for a in AUTH_MODES if p != "qkd-only" or a in ("psk", "qkd-psk")
]


@pytest.mark.parametrize("mutual", [False, True], ids=["server-auth", "mutual"])
@pytest.mark.parametrize(("policy", "auth"), _ALLOWED)
def test_policy_auth_matrix(policy: str, auth: str, mutual: bool) -> None:
    client_cfg, server_cfg = configs(policy, auth, mutual=mutual)
    result = run_pair(client_cfg, server_cfg)
    assert_same_keys(result)
    cs, ss = result.client_session, result.server_session
    assert cs is not None and ss is not None
    assert cs.components == _EXPECTED_COMPONENTS[policy]
    assert cs.policy == ss.policy == policy
    assert cs.cipher_suite == "TLS_AES_256_GCM_SHA384"
    assert cs.qkd_key_ids == ss.qkd_key_ids
    qkd_keys = ("QKD" in cs.components) + (auth == "qkd-psk")
    assert len(set(cs.qkd_key_ids)) == qkd_keys  # one distinct key per purpose
    if auth in ("certificate", "composite"):
        assert cs.peer_identity == "server.example"
        assert cs.peer_certificate is not None
        assert cs.signature_scheme == ("mldsa65_ed25519" if auth == "composite" else "mldsa65")
        assert (ss.peer_identity == "client-1") is mutual
    elif auth == "raw-key":
        assert cs.peer_identity is not None and cs.peer_identity.startswith("spki-sha256:")
        assert (ss.peer_identity is not None) is mutual
    else:
        assert cs.mutual and ss.mutual and cs.peer_identity == ss.peer_identity
    if qkd_keys:
        assert ss.peer_sae_id == CLIENT_SAE and cs.peer_sae_id == SERVER_SAE
    key, iv = traffic_keys(result.client_keys[(Epoch.APPLICATION, "write")])
    assert len(key) == 32 and len(iv) == 12
    assert cs.export_keying_material(b"test") == ss.export_keying_material(b"test")


@pytest.mark.parametrize("auth", ["certificate", "raw-key"])
def test_qkd_only_refuses_public_key_auth(auth: str) -> None:
    with pytest.raises(PolicyError, match="does not allow auth_mode"):
        configs("qkd-only", auth)


@pytest.mark.parametrize(
    "algorithm", ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87", "ed25519", "ecdsa-p256"]
)
def test_every_signature_algorithm(algorithm: str) -> None:
    result = run_pair(*configs("hybrid", "certificate", algorithm=algorithm, mutual=True))
    assert_same_keys(result)
    scheme = {
        "ml-dsa-44": "mldsa44",
        "ml-dsa-65": "mldsa65",
        "ml-dsa-87": "mldsa87",
        "ed25519": "ed25519",
        "ecdsa-p256": "ecdsa_secp256r1_sha256",
    }[algorithm]
    assert result.client_session is not None and result.server_session is not None
    assert result.client_session.signature_scheme == scheme
    assert result.server_session.signature_scheme == scheme


@pytest.mark.parametrize(
    ("policy", "kems", "components"),
    [
        ("hybrid", ("X25519MLKEM768",), ("X25519MLKEM768",)),
        ("hybrid", ("X25519", "ML-KEM-1024"), ("X25519", "ML-KEM-1024")),
        ("pqc", ("ML-KEM-1024",), ("ML-KEM-1024",)),
        ("hybrid+qkd", ("X25519MLKEM768",), ("X25519MLKEM768", "QKD")),
    ],
)
@pytest.mark.parametrize("backend", ["auto", "pure"])
def test_kem_choices_and_backends(
    policy: str, kems: tuple[str, ...], components: tuple[str, ...], backend: str
) -> None:
    result = run_pair(*configs(policy, "psk", kems=kems, kem_backend=backend))
    assert_same_keys(result)
    assert result.client_session is not None
    assert result.client_session.components == components


def test_server_preference_picks_among_offers() -> None:
    client, server = configs(
        "hybrid",
        "psk",
        client={"kems": ("X25519", "ML-KEM-768", "ML-KEM-1024", "X25519MLKEM768")},
        server={"kems": ("X25519MLKEM768", "ML-KEM-1024", "X25519")},
    )
    result = run_pair(client, server)
    assert_same_keys(result)
    assert result.client_session is not None
    assert result.client_session.components == ("X25519MLKEM768",)
