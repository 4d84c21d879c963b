"""The KEM interface, backends, hybrid combiners and every error case."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kem

ALL = [
    ("X25519", "openssl"),
    ("ML-KEM-768", "openssl"),
    ("ML-KEM-1024", "openssl"),
    ("X25519MLKEM768", "openssl"),
    ("ML-KEM-768", "pure"),
    ("ML-KEM-1024", "pure"),
    ("ML-KEM-512", "pure"),
    ("X25519MLKEM768", "pure"),
]
SIZES = {
    "X25519": (32, 32, 32),
    "ML-KEM-512": (800, 768, 32),
    "ML-KEM-768": (1184, 1088, 32),
    "ML-KEM-1024": (1568, 1568, 32),
    "X25519MLKEM768": (1216, 1120, 64),
}


@pytest.mark.parametrize(("name", "backend"), ALL)
def test_roundtrip_and_sizes(name: str, backend: str) -> None:
    k = kem.get_kem(name, backend)
    assert (k.public_key_size, k.ciphertext_size, k.shared_secret_size) == SIZES[name]
    pair = k.generate_keypair()
    ct, ss = k.encapsulate(pair.public)
    assert (len(pair.public), len(ct), len(ss)) == SIZES[name]
    assert k.decapsulate(pair.private, ct) == ss
    other = k.generate_keypair()
    assert k.decapsulate(other.private, ct) != ss
    assert repr(pair.private) not in repr(pair)


def test_names_are_normalised() -> None:
    assert kem.get_kem("mlkem768").name == "ML-KEM-768"
    assert kem.get_kem("ml_kem_1024").name == "ML-KEM-1024"
    assert kem.get_kem("x25519mlkem768").name == "X25519MLKEM768"


def test_auto_prefers_openssl() -> None:
    assert kem.get_kem("ML-KEM-768").backend == "openssl"
    assert kem.get_kem("ML-KEM-512").backend in ("liboqs", "pure")


def test_x25519mlkem768_layout_is_mlkem_first() -> None:
    hybrid = kem.get_kem("X25519MLKEM768", "pure")
    mlkem, x = kem.get_kem("ML-KEM-768", "pure"), kem.get_kem("X25519")
    seed = bytes(range(64)) + bytes(range(100, 132))
    rand = bytes(range(200, 232)) + bytes(range(7, 39))
    pair = hybrid.generate_keypair(seed)
    ml_pair, x_pair = mlkem.generate_keypair(seed[:64]), x.generate_keypair(seed[64:])
    assert pair.public == ml_pair.public + x_pair.public
    ct, ss = hybrid.encapsulate(pair.public, rand)
    ml_ct, ml_ss = mlkem.encapsulate(ml_pair.public, rand[:32])
    x_ct, x_ss = x.encapsulate(x_pair.public, rand[32:])
    assert ct == ml_ct + x_ct
    assert ss == ml_ss + x_ss
    assert hybrid.decapsulate(pair.private, ct) == ss


def test_hybrid_interoperates_across_backends() -> None:
    a, b = kem.get_kem("X25519MLKEM768", "openssl"), kem.get_kem("X25519MLKEM768", "pure")
    pair = a.generate_keypair()
    ct, ss = b.encapsulate(pair.public)
    assert a.decapsulate(pair.private, ct) == ss


def test_combined_kem_agrees_and_binds_every_component() -> None:
    c = kem.combined(["X25519", "ML-KEM-768", "ML-KEM-1024"])
    pair = c.generate_keypair()
    ct, ss = c.encapsulate(pair.public)
    assert c.decapsulate(pair.private, ct) == ss
    assert len(ss) == c.shared_secret_size
    # The secret is the labelled, length-prefixed concatenation of the parts' secrets, in order.
    offsets = [sum(p.ciphertext_size for p in c.parts[:i]) for i in range(len(c.parts) + 1)]
    part_secrets = [
        part.decapsulate(sub.private, ct[offsets[i] : offsets[i + 1]])
        for i, (part, sub) in enumerate(zip(c.parts, pair.private.pairs, strict=True))
    ]
    assert ss == kem.combine_secrets(
        c.label, [(p.name, s) for p, s in zip(c.parts, part_secrets, strict=True)]
    )
    # Tampering with any one part's ciphertext changes the combined secret.
    for i, part in enumerate(c.parts):
        start = sum(p.ciphertext_size for p in c.parts[:i])
        tampered = bytearray(ct)
        tampered[start] ^= 1
        if part.name == "X25519":
            # A different X25519 point gives a different secret (or a low-order refusal).
            with contextlib.suppress(kem.LowOrderPointError):
                assert c.decapsulate(pair.private, bytes(tampered)) != ss
        else:
            assert c.decapsulate(pair.private, bytes(tampered)) != ss  # implicit rejection


@settings(max_examples=60, deadline=None)
@given(
    secrets=st.lists(st.binary(min_size=1, max_size=48), min_size=1, max_size=4),
    index=st.integers(min_value=0, max_value=3),
    replacement=st.binary(min_size=1, max_size=48),
)
def test_combine_secrets_changes_when_any_component_changes(
    secrets: list[bytes], index: int, replacement: bytes
) -> None:
    index %= len(secrets)
    names = [f"c{i}" for i in range(len(secrets))]
    base = kem.combine_secrets(b"label", list(zip(names, secrets, strict=True)))
    changed = list(secrets)
    changed[index] = replacement
    other = kem.combine_secrets(b"label", list(zip(names, changed, strict=True)))
    assert (other == base) == (replacement == secrets[index])


def test_combine_secrets_is_injective_across_boundaries() -> None:
    one = kem.combine_secrets(b"L", [("a", b"xy"), ("b", b"z")])
    two = kem.combine_secrets(b"L", [("a", b"x"), ("b", b"yz")])
    assert one != two
    assert kem.combine_secrets(b"L", [("a", b"x")]) != kem.combine_secrets(b"M", [("a", b"x")])


# ---- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "backend"), ALL)
def test_wrong_length_public_key(name: str, backend: str) -> None:
    k = kem.get_kem(name, backend)
    with pytest.raises(kem.InvalidKeyError, match=f"must be {k.public_key_size} bytes"):
        k.encapsulate(bytes(k.public_key_size - 1))


@pytest.mark.parametrize(("name", "backend"), ALL)
def test_wrong_length_ciphertext(name: str, backend: str) -> None:
    k = kem.get_kem(name, backend)
    pair = k.generate_keypair()
    with pytest.raises(kem.InvalidCiphertextError, match=f"must be {k.ciphertext_size} bytes"):
        k.decapsulate(pair.private, bytes(k.ciphertext_size + 1))


@pytest.mark.parametrize(("name", "backend"), ALL)
def test_wrong_types(name: str, backend: str) -> None:
    k = kem.get_kem(name, backend)
    with pytest.raises(kem.InvalidKeyError, match="must be bytes"):
        k.encapsulate("not bytes")  # type: ignore[arg-type]
    ct, _ = k.encapsulate(k.generate_keypair().public)
    with pytest.raises(kem.InvalidKeyError, match="private key must come from"):
        k.decapsulate(b"raw bytes are not a private key", ct)


@pytest.mark.parametrize("backend", ["openssl", "pure"])
def test_non_canonical_mlkem_public_key(backend: str) -> None:
    k = kem.get_kem("ML-KEM-768", backend)
    with pytest.raises(kem.InvalidKeyError, match="not a valid encoding"):
        k.encapsulate(b"\xff" * 1184)


# Low-order points of Curve25519 (RFC 7748 / "May the Fourth" list).
LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@pytest.mark.parametrize("point", LOW_ORDER)
def test_x25519_low_order_points_refused(point: bytes) -> None:
    x = kem.get_kem("X25519")
    with pytest.raises(kem.LowOrderPointError, match="low-order"):
        x.encapsulate(point)
    with pytest.raises(kem.LowOrderPointError):
        x.decapsulate(x.generate_keypair().private, point)


def test_unknown_names() -> None:
    with pytest.raises(kem.UnknownAlgorithmError, match="expected one of"):
        kem.get_kem("Kyber-9000")
    with pytest.raises(kem.UnknownAlgorithmError, match="unknown backend 'bogus'"):
        kem.get_kem("ML-KEM-768", "bogus")
    with pytest.raises(kem.UnknownAlgorithmError):
        kem.get_kem(768)  # type: ignore[arg-type]


def test_backend_without_algorithm() -> None:
    with pytest.raises(kem.BackendUnavailableError, match="does not offer ML-KEM-512"):
        kem.get_kem("ML-KEM-512", "openssl")


def test_openssl_refuses_injected_encapsulation_randomness() -> None:
    k = kem.get_kem("ML-KEM-768", "openssl")
    with pytest.raises(kem.KEMError, match="backend='pure'"):
        k.encapsulate(k.generate_keypair().public, bytes(32))


def test_unavailable_backend_names_the_reason() -> None:
    reason = kem.oqs_status()
    if reason is None:
        pytest.skip("liboqs is present on this machine")
    with pytest.raises(kem.BackendUnavailableError, match="liboqs"):
        kem.get_kem("ML-KEM-768", "liboqs")
    info = {b.name: b for b in kem.backend_report()}
    assert not info["liboqs"].available
    assert info["liboqs"].reason == reason


def test_liboqs_detection_never_triggers_download(tmp_path: Path) -> None:
    """With liboqs-python installed but no liboqs, asking must not import ``oqs``
    (whose import would start a git clone + build), must not create ~/_oqs, and
    must return promptly with the reason."""
    code = (
        "import sys, kem; r = kem.oqs_status(); kem.backend_report(); kem.kem_report();"
        "print(r); print('oqs' in sys.modules)"
    )
    env = {**os.environ, "HOME": str(tmp_path), "OQS_INSTALL_PATH": str(tmp_path / "nowhere")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    if kem.find_liboqs() is None:
        assert "liboqs shared library not found" in out[0] or "not installed" in out[0]
        assert out[1] == "False"
    assert not (tmp_path / "_oqs").exists()
