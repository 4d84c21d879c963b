"""Certificate handling: the parse cache remembers parsing, never a verdict; chain limits.

A certificate seen (and accepted) before must still be checked in full on every
handshake: clock, trust store, CA signature and name.
"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives import serialization

from handshake import AlertDescription as A
from handshake import HandshakeError, PolicyError, auth
from handshake.messages import MAX_CHAIN_LENGTH, CertificateType
from handshake.pki import create_ca, issue_certificate
from tests.handshake.helpers import NOW, NOW_DT, SERVER_NAME, configs, pki


def _der(cred: object) -> bytes:
    return cred.certificate.public_bytes(serialization.Encoding.DER)  # type: ignore[attr-defined]


def _verify(
    der: bytes, *, trust: tuple, now: float = NOW, name: str = SERVER_NAME
) -> auth.PeerAuth:
    return auth.verify_peer_certificate(
        CertificateType.x509,
        [[der]],
        trust_store=trust,
        pinned_keys=(),
        now=now,
        expected_name=name,
    )


def _alert(der: bytes, **kw: object) -> A:
    with pytest.raises(HandshakeError) as info:
        _verify(der, **kw)  # type: ignore[arg-type]
    return info.value.alert


def test_every_check_runs_again_for_a_cached_certificate() -> None:
    p = pki()
    leaf = _der(p.server["ml-dsa-65"])
    trust = (p.ca.certificate,)
    first = _verify(leaf, trust=trust)
    assert first.identity == SERVER_NAME and first.algorithms == ("ml-dsa-65",)
    assert leaf in auth._PARSED  # parsed once, remembered
    assert _alert(leaf, trust=trust, now=NOW + 900 * 86400) == A.certificate_expired
    assert _alert(leaf, trust=(p.other_ca.certificate,)) == A.unknown_ca
    assert _alert(leaf, trust=trust, name="other.example") == A.bad_certificate
    assert _verify(leaf, trust=trust).identity == SERVER_NAME


def test_same_named_ca_with_another_key_is_refused_after_caching() -> None:
    """The issuer's signature is verified each time: a CA with the same name but another
    key does not inherit the earlier success."""
    p = pki()
    leaf = _der(p.server["ed25519"])
    _verify(leaf, trust=(p.ca.certificate,))
    impostor = create_ca("Test Root", algorithm="ml-dsa-65", now=NOW_DT)
    assert impostor.certificate.subject == p.ca.certificate.subject
    assert _alert(leaf, trust=(impostor.certificate,)) == A.unknown_ca


def test_tampered_copy_of_a_cached_certificate_is_refused() -> None:
    p = pki()
    leaf = bytearray(_der(p.server["ml-dsa-44"]))
    _verify(bytes(leaf), trust=(p.ca.certificate,))
    leaf[-10] ^= 1  # inside the signature: still parses, must not verify
    assert _alert(bytes(leaf), trust=(p.ca.certificate,)) == A.unknown_ca


def test_cache_stays_bounded() -> None:
    ca = create_ca("Bound Root", algorithm="ed25519", now=NOW_DT)
    for i in range(auth._MAX_PARSED + 20):
        cred = issue_certificate(
            ca, f"host{i}.example", algorithm="ed25519", dns_names=[f"host{i}.example"], now=NOW_DT
        )
        _verify(_der(cred), trust=(ca.certificate,), name=f"host{i}.example")
        assert len(auth._PARSED) <= auth._MAX_PARSED


def test_overlong_credential_chain_is_refused_at_configuration() -> None:
    """A chain longer than a Certificate message can carry is an error, not a silent cut."""
    p = pki()
    leaf = p.server["ed25519"]
    long = dataclasses.replace(leaf, chain=(p.ca.certificate,) * MAX_CHAIN_LENGTH)
    with pytest.raises(PolicyError, match=r"carries 9 certificates.*at most 8"):
        configs("hybrid", "certificate", server={"credential": long})
    ok = dataclasses.replace(leaf, chain=(p.ca.certificate,) * (MAX_CHAIN_LENGTH - 1))
    configs("hybrid", "certificate", server={"credential": ok})
