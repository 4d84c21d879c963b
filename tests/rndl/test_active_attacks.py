"""Active attacks through a man-in-the-middle relay (issue 7, part 5), over loopback TCP.

Each scenario runs real channels for every configuration; certificates are made once
per process (``hybridchan.rndl.active._pki`` is cached).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridchan.rndl import active
from hybridchan.rndl.active import CONFIGURATIONS, REQUEST, SERVER_NAME

CERTIFICATE_CONFIGS = ("classical", "pqc", "hybrid")

# What stops Eve in (a): (who notices, alert). Certificates: Alice's own check of the
# chain. qkd-only: Eve cannot produce the QKD-PSK (her binder check fails; Bob does not
# know her key ID). hybrid+qkd: Eve lacks the QKD component, so Alice cannot even
# decrypt Eve's first encrypted record; the certificate check is never reached.
EXPECTED_A = {
    "classical": ("AuthenticationError", "client sent", "unknown_ca (48)"),
    "pqc": ("AuthenticationError", "client sent", "unknown_ca (48)"),
    "hybrid": ("AuthenticationError", "client sent", "unknown_ca (48)"),
    "qkd-only": ("AuthenticationError", "client received", "decrypt_error (51)"),
    "hybrid+qkd": ("BadRecordMAC", "client sent", "bad_record_mac (20)"),
}


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_a_mitm_without_keys_fails_and_reads_nothing(name: str) -> None:
    result = active.mitm_without_keys(name)

    assert not result.client.handshake_completed
    assert not result.attack_succeeded
    assert result.attacker_read == b""
    assert result.client.received == b"" and result.server.received == b""
    error, who, alert = EXPECTED_A[name]
    assert result.client.error == error
    seen = result.client.alert_sent if who == "client sent" else result.client.alert_received
    assert seen == alert, result.client.describe()
    assert not result.attacker.towards_client.handshake_completed


@pytest.mark.parametrize("name", CERTIFICATE_CONFIGS)
def test_a_certificate_configs_the_client_itself_rejects_eves_ca(name: str) -> None:
    result = active.mitm_without_keys(name)

    assert result.client.error == "AuthenticationError"
    assert "own self-signed CA" in result.attacker_holds
    # Bob authenticates no client here: Eve's upstream half completes, but gets nothing.
    assert result.server.handshake_completed and result.server.received == b""


@pytest.mark.parametrize("name", ["qkd-only", "hybrid+qkd"])
def test_a_qkd_configs_bob_does_not_know_eves_key_ids(name: str) -> None:
    result = active.mitm_without_keys(name)

    assert not result.server.handshake_completed
    assert result.server.alert_sent == "qkd_key_unknown (221)"


def test_a_hybrid_qkd_with_eve_holding_the_qkd_links_the_certificate_still_stops_her() -> None:
    result = active.mitm_without_keys("hybrid+qkd", eve_controls_qkd_links=True)

    assert result.client.error == "AuthenticationError"
    assert result.client.alert_sent == "unknown_ca (48)"
    assert result.attacker_read == b""


def test_a_qkd_links_variant_is_refused_where_it_makes_no_sense() -> None:
    with pytest.raises(ValueError, match="hybrid\\+qkd"):
        active.mitm_without_keys("qkd-only", eve_controls_qkd_links=True)
    with pytest.raises(ValueError, match="unknown configuration"):
        active.mitm_without_keys("tls12")


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_b_stolen_authentication_key_during_the_handshake_wins_everywhere(name: str) -> None:
    result = active.mitm_with_stolen_keys(name)

    assert result.client.handshake_completed and result.server.handshake_completed
    assert result.attack_succeeded
    assert REQUEST in result.attacker.read_from_client
    # Eve redirected the transfer and hid it in Bob's confirmation.
    assert result.server.received == REQUEST.replace(b"1234", b"6666")
    assert result.client.received == b"done: " + REQUEST
    assert result.attacker_modified


@pytest.mark.parametrize("name", ["qkd-only", "hybrid+qkd"])
def test_b_qkd_is_no_exception_eve_runs_one_link_per_victim(name: str) -> None:
    result = active.mitm_with_stolen_keys(name)

    assert "QKD" in result.client.components and "QKD" in result.server.components
    # Alice and Bob consumed keys of two different links: none of their key IDs match.
    assert result.client.qkd_key_ids and result.server.qkd_key_ids
    assert not set(result.client.qkd_key_ids) & set(result.server.qkd_key_ids)


@pytest.mark.parametrize("name", (*CERTIFICATE_CONFIGS, "hybrid+qkd"))
def test_b_alice_believes_she_talks_to_bob(name: str) -> None:
    result = active.mitm_with_stolen_keys(name)

    assert result.client.peer_identity == SERVER_NAME


# (c): the key-exchange components that stay unknown to Eve with the stolen key.
EXPECTED_C_MISSING = {
    "classical": ("X25519",),
    "pqc": ("ML-KEM-768",),
    "hybrid": ("ML-KEM-768", "X25519"),
    "qkd-only": ("QKD",),  # the stolen QKD-PSK is granted; the confidentiality key is not
    "hybrid+qkd": ("ML-KEM-768", "X25519", "QKD"),
}


@pytest.mark.parametrize("name", CONFIGURATIONS)
def test_c_key_stolen_after_the_session_does_not_open_the_recording(name: str) -> None:
    result = active.stolen_key_after_session(name)

    assert result.session.handshake_completed
    assert result.recorded_bytes > len(REQUEST)
    assert result.attacker_recovered == b""
    assert "tag does not verify" in result.attacker_failure
    # Positive control: the same attack with an oracle granting everything reads it all.
    assert result.referee_recovered == REQUEST + b"done: " + REQUEST
    assert result.stays_secret
    assert result.missing
    assert result.missing == EXPECTED_C_MISSING[name]


def test_c_keeps_the_capture_file_when_asked(tmp_path: Path) -> None:
    result = active.stolen_key_after_session("hybrid", tmp_path)

    files = list(tmp_path.glob("*.hcap"))
    assert len(files) == 1 and result.stays_secret


def test_d_quantum_eavesdropper_aborts_the_link_and_the_channel_fails_closed() -> None:
    result = active.quantum_channel_eavesdropper(1.0)

    assert result.link_aborted and result.key_bits_delivered == 0
    assert result.qber > result.qber_threshold
    client = result.fail_closed_client
    assert not client.handshake_completed
    assert client.error == "KeyUnavailableError"
    assert client.alert_sent == "qkd_key_unavailable (220)"
    assert client.detail is not None and "QBER" in client.detail
    server = result.fail_closed_server
    assert not server.handshake_completed
    assert server.alert_received == "qkd_key_unavailable (220)"  # Alice's alert reached Bob
    assert server.received == b""


def test_d_with_allow_fallback_it_continues_as_hybrid_and_says_so() -> None:
    result = active.quantum_channel_eavesdropper(1.0)

    for side in (result.fallback_client, result.fallback_server):
        assert side.handshake_completed
        assert "QKD" not in side.components
        assert side.fallback is not None and "continued as 'hybrid'" in side.fallback
    assert result.fallback_client.received == b"done: " + REQUEST


def test_d_control_without_eavesdropper_the_link_feeds_the_channel() -> None:
    result = active.quantum_channel_eavesdropper(0.0)

    assert not result.link_aborted and result.key_bits_delivered > 0
    assert result.qber < result.qber_threshold
    assert result.fail_closed_client.handshake_completed
    assert "QKD" in result.fail_closed_client.components
    assert result.fail_closed_client.fallback is None
