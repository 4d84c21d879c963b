"""ML-DSA (FIPS 204) known-answer tests from the published ``cryptography-vectors`` files.

Each ``kat_MLDSA_<n>_det_pure.rsp`` record gives the key-generation seed ``xi``, the
expected public/secret keys, a message, a context string and the deterministic
signature (``sm`` = signature || message). OpenSSL (through ``cryptography``, which signs
hedged, i.e. randomised) must derive the same public key from ``xi`` and accept the
signature; dilithium-py must reproduce keys and the deterministic signature byte for byte.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

cryptography_vectors = pytest.importorskip(
    "cryptography_vectors", reason="cryptography-vectors is not installed (dev extra)"
)
dilithium = pytest.importorskip("dilithium_py.ml_dsa", reason="dilithium-py is not installed")

_PRIVATE: dict[int, Any] = {
    44: mldsa.MLDSA44PrivateKey,
    65: mldsa.MLDSA65PrivateKey,
    87: mldsa.MLDSA87PrivateKey,
}
_PURE = {44: dilithium.ML_DSA_44, 65: dilithium.ML_DSA_65, 87: dilithium.ML_DSA_87}
_PURE_RECORDS = 4  # pure-Python signing is slow; OpenSSL checks every record


@functools.cache
def records(level: int) -> tuple[dict[str, bytes], ...]:
    base = Path(cryptography_vectors.__file__).parent / "asymmetric" / "MLDSA"
    text = (base / f"kat_MLDSA_{level}_det_pure.rsp").read_text()
    out = []
    for block in text.split("count = ")[1:]:
        fields = dict(line.split(" = ", 1) for line in block.splitlines() if " = " in line)
        rec = {
            k: bytes.fromhex(v) for k, v in fields.items() if k not in ("count", "mlen", "smlen")
        }
        rec["sig"] = rec["sm"][: len(rec["sm"]) - int(fields["mlen"])]
        out.append(rec)
    assert len(out) == 100, f"expected 100 KAT records for ML-DSA-{level}, got {len(out)}"
    return tuple(out)


@pytest.mark.parametrize("level", [44, 65, 87])
def test_openssl_matches_kat(level: int) -> None:
    for rec in records(level):
        private = _PRIVATE[level].from_seed_bytes(rec["xi"])
        public = private.public_key()
        assert public.public_bytes_raw() == rec["pk"]
        public.verify(rec["sig"], rec["msg"], rec["ctx"] or None)
        bad = bytearray(rec["sig"])
        bad[0] ^= 1
        with pytest.raises(InvalidSignature):
            public.verify(bytes(bad), rec["msg"], rec["ctx"] or None)


@pytest.mark.parametrize("level", [44, 65, 87])
def test_dilithium_py_matches_kat(level: int) -> None:
    scheme = _PURE[level]
    for rec in records(level)[:_PURE_RECORDS]:
        pk, sk = scheme._keygen_internal(rec["xi"])
        assert pk == rec["pk"]
        assert sk == rec["sk"]
        assert scheme.sign(sk, rec["msg"], rec["ctx"], deterministic=True) == rec["sig"]
        assert scheme.verify(pk, rec["msg"], rec["sig"], rec["ctx"])
