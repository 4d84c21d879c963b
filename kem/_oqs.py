"""liboqs backend through liboqs-python -- used only when liboqs itself loads.

liboqs-python is a thin ctypes wrapper. When its ``oqs`` module is imported and
the liboqs shared library cannot be found, it tries to *download and build*
liboqs from the internet (which hangs or fails offline). So we look for the
shared library the same way it does -- ``$OQS_INSTALL_PATH`` (or ``~/_oqs``)
``/lib`` and ``/lib64``, then the system loader path -- and load it with ctypes
ourselves; ``oqs`` is imported only after that succeeded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

from kem._base import KEM, KeyPair
from kem._errors import BackendUnavailableError, InvalidKeyError, KEMError

__all__ = ["OQSKEM", "find_liboqs", "oqs_status"]


def _candidate_paths() -> list[Path]:
    base = Path(os.environ.get("OQS_INSTALL_PATH", Path.home() / "_oqs"))
    paths = [base / "lib" / "liboqs.so", base / "lib64" / "liboqs.so"]
    for name in ("oqs", "liboqs"):
        found = ctypes.util.find_library(name)
        if found:
            paths.insert(0, Path(found))
    return paths


def find_liboqs() -> Path | None:
    """Path of a liboqs shared library that loads, or ``None``. Never downloads anything."""
    for path in _candidate_paths():
        try:
            ctypes.CDLL(str(path))
        except OSError:
            continue
        return path
    return None


@functools.cache
def oqs_status() -> str | None:
    """``None`` when the liboqs backend works, else why not (a sentence to show users)."""
    if importlib.util.find_spec("oqs") is None:
        return "liboqs-python not installed; pip install 'hybridchan[oqs]'"
    if find_liboqs() is None:
        return (
            "liboqs shared library not found; install liboqs (built with "
            "-DBUILD_SHARED_LIBS=ON) or set OQS_INSTALL_PATH to its install prefix"
        )
    try:
        import oqs  # safe now: liboqs-python finds the same library and skips its installer
    except (ImportError, OSError, RuntimeError, SystemExit) as exc:
        return f"liboqs-python failed to load liboqs: {exc}"
    enabled = set(oqs.get_enabled_kem_mechanisms())
    if not enabled:
        return "liboqs loaded but offers no KEM mechanisms"
    return None


def oqs_mechanisms() -> list[str]:
    """Every KEM the loaded liboqs offers (empty when the backend is unavailable)."""
    if oqs_status() is not None:
        return []
    import oqs

    return list(oqs.get_enabled_kem_mechanisms())


class OQSKEM(KEM):
    """Any KEM offered by liboqs, under liboqs' mechanism name (which is also our name for
    ML-KEM-512/768/1024). Explicit randomness is not supported."""

    backend = "liboqs"
    supports_derandomized = False
    supports_seeded_keygen = False
    seed_size = 0
    randomness_size = 0

    def __init__(self, name: str) -> None:
        reason = oqs_status()
        if reason is not None:
            raise BackendUnavailableError(f"backend 'liboqs' unavailable: {reason}")
        import oqs

        self.name = name
        self._oqs: Any = oqs
        with oqs.KeyEncapsulation(self.name) as probe:
            details = probe.details
        self.public_key_size = int(details["length_public_key"])
        self.ciphertext_size = int(details["length_ciphertext"])
        self.shared_secret_size = int(details["length_shared_secret"])

    def _generate(self, seed: bytes | None) -> KeyPair:
        kem = self._oqs.KeyEncapsulation(self.name)
        public = bytes(kem.generate_keypair())
        return KeyPair(public=public, private=kem)

    def _encapsulate(self, public_key: bytes, randomness: bytes | None) -> tuple[bytes, bytes]:
        with self._oqs.KeyEncapsulation(self.name) as kem:
            try:
                ciphertext, secret = kem.encap_secret(public_key)
            except RuntimeError as exc:
                raise InvalidKeyError(f"{self.name} public key rejected by liboqs: {exc}") from None
        return bytes(ciphertext), bytes(secret)

    def _decapsulate(self, private_key: Any, ciphertext: bytes) -> bytes:
        self._check_private(private_key, self._oqs.KeyEncapsulation)
        try:
            return bytes(private_key.decap_secret(ciphertext))
        except RuntimeError as exc:
            raise KEMError(f"{self.name} decapsulation failed in liboqs: {exc}") from None
