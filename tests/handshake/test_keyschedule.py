"""Key schedule: HKDF against an independent implementation, stage discipline, key update,
and the property that any single unknown component secret keeps the keys unknown."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from handshake import Epoch, keyschedule
from handshake.keyschedule import (
    EarlySecret,
    HmacSha384,
    Labels,
    export_keying_material,
    finished_verify_data,
    hkdf_expand_label,
    hkdf_extract,
    next_traffic_secret,
    traffic_keys,
    transcript_hash,
)
from tests.handshake.helpers import configs, run_pair


@given(
    st.binary(max_size=64),
    st.binary(min_size=1, max_size=64),
    st.binary(max_size=40),
    st.integers(1, 200),
)
@settings(max_examples=50, deadline=None)
def test_hkdf_matches_cryptography(salt: bytes, ikm: bytes, info: bytes, length: int) -> None:
    prk = hkdf_extract(salt, ikm)
    assert prk == hmac.digest(salt or bytes(48), ikm, "sha384")
    expected = HKDF(hashes.SHA384(), length, salt or None, info).derive(ikm)
    assert keyschedule._hkdf_expand(prk, info, length) == expected


def test_expand_label_layout() -> None:
    secret = bytes(range(48))
    info = (
        (48).to_bytes(2, "big")
        + bytes([len(b"hc1 c hs traffic")])
        + b"hc1 c hs traffic"
        + b"\x03abc"
    )
    expected = HKDFExpand(hashes.SHA384(), 48, info).derive(secret)
    assert hkdf_expand_label(secret, Labels.C_HS_TRAFFIC, b"abc", 48) == expected


def test_traffic_keys_and_update() -> None:
    secret = hashlib.sha384(b"s").digest()
    key, iv = traffic_keys(secret)
    assert (len(key), len(iv)) == (32, 12)
    plain = next_traffic_secret(secret)
    assert plain == hkdf_expand_label(secret, b"traffic upd", b"", 48)
    with_qkd = next_traffic_secret(secret, b"\x07" * 32)
    assert with_qkd == hkdf_expand_label(
        hkdf_extract(secret, b"\x07" * 32), b"traffic upd", b"", 48
    )
    assert len({plain, with_qkd, next_traffic_secret(secret, b"\x08" * 32)}) == 3


def test_stages_advance_once() -> None:
    early = EarlySecret(None)
    hs = early.next([("X25519", bytes(32))])
    with pytest.raises(RuntimeError, match="already advanced"):
        early.next([("X25519", bytes(32))])
    hs.next()
    with pytest.raises(RuntimeError):
        hs.next()
    with pytest.raises(ValueError):
        EarlySecret(None).next([])


def test_psk_changes_everything() -> None:
    comps = [("X25519", b"\x01" * 32)]
    th = transcript_hash(b"x")
    a = EarlySecret(None).next(comps).client_traffic(th)
    b = EarlySecret(b"\x02" * 32).next(comps).client_traffic(th)
    c = EarlySecret(b"\x03" * 32).next(comps).client_traffic(th)
    assert len({a, b, c}) == 3
    assert EarlySecret(b"k" * 32).binder_key(qkd=True) != EarlySecret(b"k" * 32).binder_key(
        qkd=False
    )


def test_exporter_and_finished() -> None:
    secret = b"\x05" * 48
    assert export_keying_material(secret, b"a", b"", 32) != export_keying_material(
        secret, b"b", b"", 32
    )
    assert export_keying_material(secret, b"a", b"c", 16) != export_keying_material(
        secret, b"a", b"d", 16
    )
    assert finished_verify_data(secret, b"1" * 48) != finished_verify_data(secret, b"2" * 48)


# -- any one secret suffices --------------------------------------------------------------

NAMES = ("X25519", "ML-KEM-768", "QKD")
_secret = st.binary(min_size=32, max_size=32)


def _schedule(values: list[bytes], psk: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    th = transcript_hash(b"fixed transcript")
    hs = EarlySecret(psk).next(list(zip(NAMES, values, strict=True)))
    c_hs, s_hs = hs.client_traffic(th), hs.server_traffic(th)
    master = hs.next()
    return c_hs, s_hs, master.client_traffic(th)


@settings(max_examples=60, deadline=None)
@given(st.lists(_secret, min_size=3, max_size=3), st.lists(_secret, min_size=3, max_size=3))
def test_any_one_secret_suffices(true: list[bytes], known: list[bytes]) -> None:
    """Replacing any single attacker-known component by its true (unknown) value changes
    every traffic secret compared with the run where all components are attacker-known."""
    all_known = _schedule(known)
    results = {all_known}
    for i in range(3):
        assume(true[i] != known[i])
        mixed = list(known)
        mixed[i] = true[i]
        keys = _schedule(mixed)
        assert all(a != b for a, b in zip(keys, all_known, strict=True))
        results.add(keys)
    assert len(results) == 4


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2), _secret)
def test_any_one_secret_suffices_in_a_real_handshake(index: int, guess: bytes) -> None:
    """An attacker who recomputes the schedule from the recorded transcript with every
    component but one gets the real keys only if the last one is right too."""
    captured: list[list[tuple[str, bytes]]] = []
    original = EarlySecret.next

    def spy(self: EarlySecret, components: list[tuple[str, bytes]]) -> Any:
        captured.append(list(components))
        return original(self, components)

    EarlySecret.next = spy  # type: ignore[method-assign]
    try:
        result = run_pair(*configs("hybrid+qkd", "certificate", algorithm="ed25519"))
    finally:
        EarlySecret.next = original  # type: ignore[method-assign]
    components = captured[0]
    assert [n for n, _ in components] == list(NAMES)
    ch_sh = b"".join(d for _, e, d in result.wire if e == Epoch.INITIAL)
    real = result.client_keys[(Epoch.HANDSHAKE, "write")]
    th = transcript_hash(ch_sh)
    assert EarlySecret(None).next(components).client_traffic(th) == real
    assume(components[index][1] != guess)
    forged = list(components)
    forged[index] = (components[index][0], guess)
    assert EarlySecret(None).next(forged).client_traffic(th) != real


@given(st.binary(max_size=300), st.binary(max_size=400))
def test_hmac_with_precomputed_pads_equals_hmac(key: bytes, msg: bytes) -> None:
    mac = HmacSha384(key)
    assert mac.digest(msg) == hmac.digest(key, msg, "sha384")
    assert mac.digest(msg + b"x") == hmac.digest(key, msg + b"x", "sha384")  # state reused
    assert repr(mac) == "<HmacSha384>"  # never the key
