"""ML-DSA interop: OpenSSL (via ``cryptography``) and dilithium-py verify each other.

Both sides derive the same key pair from one 32-byte seed (FIPS 204 ``xi``), then each
signs and the other verifies, with and without a context string; a wrong message or
context must be rejected by both.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

dilithium = pytest.importorskip("dilithium_py.ml_dsa", reason="dilithium-py is not installed")

CASES = [
    (mldsa.MLDSA44PrivateKey, dilithium.ML_DSA_44),
    (mldsa.MLDSA65PrivateKey, dilithium.ML_DSA_65),
    (mldsa.MLDSA87PrivateKey, dilithium.ML_DSA_87),
]
MESSAGE = b"hybridchan CertificateVerify interop"


@pytest.mark.parametrize(("openssl_cls", "pure"), CASES, ids=["44", "65", "87"])
@pytest.mark.parametrize("ctx", [b"", b"hybridchan"], ids=["no-ctx", "ctx"])
def test_openssl_signs_dilithium_verifies(openssl_cls, pure, ctx: bytes) -> None:
    seed = hashlib.sha256(b"interop-a" + ctx).digest()
    key = openssl_cls.from_seed_bytes(seed)
    pk, _ = pure._keygen_internal(seed)
    assert key.public_key().public_bytes_raw() == pk
    sig = key.sign(MESSAGE, ctx or None)
    assert pure.verify(pk, MESSAGE, sig, ctx)
    assert not pure.verify(pk, MESSAGE + b"!", sig, ctx)
    assert not pure.verify(pk, MESSAGE, sig, ctx + b"x")


@pytest.mark.parametrize(("openssl_cls", "pure"), CASES, ids=["44", "65", "87"])
@pytest.mark.parametrize("ctx", [b"", b"hybridchan"], ids=["no-ctx", "ctx"])
def test_dilithium_signs_openssl_verifies(openssl_cls, pure, ctx: bytes) -> None:
    seed = hashlib.sha256(b"interop-b" + ctx).digest()
    pk, sk = pure._keygen_internal(seed)
    public = openssl_cls.from_seed_bytes(seed).public_key()
    assert public.public_bytes_raw() == pk
    sig = pure.sign(sk, MESSAGE, ctx, deterministic=True)
    public.verify(sig, MESSAGE, ctx or None)
    with pytest.raises(InvalidSignature):
        public.verify(sig, MESSAGE + b"!", ctx or None)
    # the hedged (randomised) variant verifies too
    public.verify(pure.sign(sk, MESSAGE, ctx), MESSAGE, ctx or None)
