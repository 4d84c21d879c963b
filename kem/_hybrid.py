"""Hybrid KEMs: the TLS X25519MLKEM768 group and a general labelled combiner.

``X25519MLKEM768`` follows the IETF TLS hybrid design (draft-ietf-tls-ecdhe-mlkem):
the ML-KEM part comes first in every field --

    public key    = ML-KEM-768 encapsulation key (1184) || X25519 public (32)
    ciphertext    = ML-KEM-768 ciphertext (1088)       || X25519 ephemeral (32)
    shared secret = ML-KEM-768 secret (32)             || X25519 secret (32)

:class:`CombinedKEM` joins any ordered list of KEMs; its shared secret is
:func:`combine_secrets` over the component secrets, so that each secret is
bound to its position, name and length and none can be shifted into another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kem._base import KEM, KeyPair
from kem._errors import InvalidKeyError, KEMError

__all__ = ["X25519MLKEM768", "CombinedKEM", "combine_secrets"]

_MAX_LABEL = 255
_MAX_NAME = 255
_MAX_SECRET = 0xFFFF


def combine_secrets(label: bytes, components: Sequence[tuple[str, bytes]]) -> bytes:
    """Labelled, length-prefixed concatenation of named secrets, in the given order::

        len(label):u8 || label || count:u8 ||
        for each: len(name):u8 || name || len(secret):u16 || secret

    The encoding is injective: different inputs never give the same bytes, so a
    secret cannot be moved across a component boundary. The output is input
    keying material for HKDF-Extract, not a key by itself.
    """
    if not isinstance(label, bytes) or not 0 < len(label) <= _MAX_LABEL:
        raise KEMError(f"combiner label must be 1..{_MAX_LABEL} bytes")
    if not 0 < len(components) <= 255:
        raise KEMError("combiner needs 1..255 component secrets")
    out = bytearray([len(label)]) + label + bytes([len(components)])
    for name, secret in components:
        raw_name = name.encode("ascii")
        if not 0 < len(raw_name) <= _MAX_NAME:
            raise KEMError(f"component name must be 1..{_MAX_NAME} ASCII bytes, got {name!r}")
        if not isinstance(secret, (bytes, bytearray)) or not 0 < len(secret) <= _MAX_SECRET:
            raise KEMError(f"component {name!r} secret must be 1..{_MAX_SECRET} bytes")
        out += bytes([len(raw_name)]) + raw_name + len(secret).to_bytes(2, "big") + secret
    return bytes(out)


class _Concatenated(KEM):
    """Shared machinery: public keys and ciphertexts are fixed-size concatenations."""

    def __init__(self, name: str, parts: Sequence[KEM]) -> None:
        if not parts:
            raise KEMError("a hybrid KEM needs at least one component")
        self.name = name
        self.parts = tuple(parts)
        self.backend = "+".join(sorted({p.backend for p in parts}))
        self.public_key_size = sum(p.public_key_size for p in parts)
        self.ciphertext_size = sum(p.ciphertext_size for p in parts)
        self.seed_size = sum(p.seed_size for p in parts)
        self.randomness_size = sum(p.randomness_size for p in parts)
        self.supports_derandomized = all(p.supports_derandomized for p in parts)
        self.supports_seeded_keygen = all(p.supports_seeded_keygen for p in parts)

    def _generate(self, seed: bytes | None) -> KeyPair:
        seeds = _split(seed, [p.seed_size for p in self.parts])
        pairs = [p.generate_keypair(s) for p, s in zip(self.parts, seeds, strict=True)]
        return KeyPair(public=b"".join(kp.public for kp in pairs), private=_HybridKey(pairs))

    def _encapsulate(self, public_key: bytes, randomness: bytes | None) -> tuple[bytes, bytes]:
        publics = _split_exact(public_key, [p.public_key_size for p in self.parts])
        rands = _split(randomness, [p.randomness_size for p in self.parts])
        results = [
            p.encapsulate(pk, r) for p, pk, r in zip(self.parts, publics, rands, strict=True)
        ]
        return b"".join(ct for ct, _ in results), self._combine([ss for _, ss in results])

    def _decapsulate(self, private_key: Any, ciphertext: bytes) -> bytes:
        self._check_private(private_key, _HybridKey)
        if len(private_key.pairs) != len(self.parts):
            raise InvalidKeyError(f"{self.name} private key has the wrong number of components")
        cts = _split_exact(ciphertext, [p.ciphertext_size for p in self.parts])
        secrets = [
            p.decapsulate(kp.private, ct)
            for p, kp, ct in zip(self.parts, private_key.pairs, cts, strict=True)
        ]
        return self._combine(secrets)

    def _combine(self, secrets: list[bytes]) -> bytes:
        raise NotImplementedError


class X25519MLKEM768(_Concatenated):
    """The TLS hybrid group X25519MLKEM768 (codepoint 0x11EC)."""

    codepoint = 0x11EC
    shared_secret_size = 64

    def __init__(self, mlkem768: KEM, x25519: KEM) -> None:
        if mlkem768.name != "ML-KEM-768" or x25519.name != "X25519":
            raise KEMError("X25519MLKEM768 needs an ML-KEM-768 and an X25519 component")
        super().__init__("X25519MLKEM768", [mlkem768, x25519])

    def _combine(self, secrets: list[bytes]) -> bytes:
        return secrets[0] + secrets[1]


class CombinedKEM(_Concatenated):
    """Any ordered list of KEMs; the secret is :func:`combine_secrets` over the parts."""

    def __init__(self, parts: Sequence[KEM], *, label: bytes = b"hybridchan combiner v1") -> None:
        super().__init__("+".join(p.name for p in parts), parts)
        self.label = label
        self.shared_secret_size = len(
            combine_secrets(label, [(p.name, bytes(p.shared_secret_size)) for p in parts])
        )

    def _combine(self, secrets: list[bytes]) -> bytes:
        return combine_secrets(
            self.label, [(p.name, s) for p, s in zip(self.parts, secrets, strict=True)]
        )


class _HybridKey:
    __slots__ = ("pairs",)

    def __init__(self, pairs: list[KeyPair]) -> None:
        self.pairs = pairs

    def __repr__(self) -> str:
        return f"<hybrid private key, {len(self.pairs)} components>"


def _split(data: bytes | None, sizes: list[int]) -> list[bytes | None]:
    """Per-part randomness: ``None`` everywhere when none was given, or for a part that
    takes none."""
    if data is None:
        return [None] * len(sizes)
    return [
        part if size else None for part, size in zip(_split_exact(data, sizes), sizes, strict=True)
    ]


def _split_exact(data: bytes, sizes: list[int]) -> list[bytes]:
    out = []
    offset = 0
    for size in sizes:
        out.append(data[offset : offset + size])
        offset += size
    return out
